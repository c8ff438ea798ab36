"""The CLI contract: files written, JSON keys printed, and one-line errors with non-zero exits."""

import json
import os
import subprocess
import sys

import pytest

from ivkit.evaluation import CONDITIONS


def run(*args, env_extra=None, check=False):
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "ivkit", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tiny_llama_dir):
    from ivkit import load_task

    d = tmp_path_factory.mktemp("cli")
    task = d / "mini.json"
    task.write_text(json.dumps([{"input": e.input, "output": e.output} for e in load_task("antonym").examples[:80]]))
    out = d / "iv"
    proc = run("extract", tiny_llama_dir, task, "--out", out, "--shots", 3, "--mean-prompts", 5, "--trials", 2,
               "--top-k", 3, "--seed", 1, "--method", "naive", "--no-filter", "--json", check=True)
    return out, task, proc


def test_extract_writes_the_contract_files(extracted):
    out, _, proc = extracted
    summary = json.loads(proc.stdout)
    assert summary["layer"] is not None and len(summary["heads"]) == 3
    ie = json.loads((out / "indirect_effects.json").read_text())
    for key in ("n_layers", "n_heads", "aie", "method", "seconds"):
        assert key in ie
    assert len(ie["aie"]) == ie["n_layers"] == 3 and len(ie["aie"][0]) == ie["n_heads"] == 4
    assert ie["method"] == "naive"
    iv = json.loads((out / "iv.json").read_text())
    assert iv["layer"] == summary["layer"] and iv["layer_selection"]["split"] == "valid"
    assert set(iv["timings"]) >= {"load", "filter", "mean_activations", "indirect_effects", "layer_sweep"}
    assert (out / "iv.safetensors").stat().st_size > 0 and (out / "heads.html").stat().st_size > 1000


def test_evaluate_prints_one_json_object(extracted, tiny_llama_dir):
    out, task, _ = extracted
    proc = run("evaluate", tiny_llama_dir, task, "--iv", out, "--prompts", 6, "--shots", 3, "--json", check=True)
    res = json.loads(proc.stdout)
    for key in (*CONDITIONS, "layer", "n"):
        assert key in res
    assert res["layer"] == json.loads((out / "iv.json").read_text())["layer"]
    proc2 = run("evaluate", tiny_llama_dir, task, "--iv", out, "--prompts", 6, "--shots", 3, "--layer", 0, "--json",
                check=True)
    assert json.loads(proc2.stdout)["layer"] == 0


@pytest.mark.parametrize("args,needle", [
    (["extract", "{model}", "no-such-task", "--out", "{tmp}/x"], "no built-in task or file named 'no-such-task'"),
    (["extract", "{tmp}/missing.gguf", "antonym", "--out", "{tmp}/x"], "no such .gguf file"),
    (["extract", "{model}", "{task}", "--out", "{tmp}/x", "--shots", "3", "--mean-prompts", "4", "--trials", "2"],
     "answers none of the"),
    (["evaluate", "{model}", "antonym", "--iv", "{tmp}/nothing"], "iv.safetensors is missing"),
])
def test_errors_are_one_line_and_nonzero(args, needle, extracted, tiny_llama_dir, tmp_path):
    _, task, _ = extracted
    args = [a.format(model=tiny_llama_dir, task=task, tmp=tmp_path) for a in args]
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("ivkit: error")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_iv_from_another_model_is_refused_by_evaluate(extracted, tmp_path, tokenizer):
    from ..conftest import make_tiny

    other = tmp_path / "gemma"
    make_tiny("gemma3", len(tokenizer)).save_pretrained(other)
    tokenizer.save_pretrained(other)
    out, task, _ = extracted
    proc = run("evaluate", other, task, "--iv", out, "--prompts", 4)
    assert proc.returncode == 2 and "does not fit" in proc.stderr and "Traceback" not in proc.stderr


def test_tasks_lists_builtins():
    proc = run("tasks", check=True)
    assert "antonym" in proc.stdout and "Give the opposite of the word." in proc.stdout


def test_usage_errors_exit_2_with_a_usage_message():
    proc = run("extract")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Usage:" in proc.stderr and "Missing argument" in proc.stderr
    proc = run("extract", "m", "t", "--out", "x", "--top-k", "abc")  # parsed before any model is loaded
    assert proc.returncode == 2 and "expected an integer" in proc.stderr and "could not load" not in proc.stderr
    proc = run("evaluate", "m", "t")  # --iv missing
    assert proc.returncode == 2 and "--iv" in proc.stderr


def test_finetune_then_compare(tmp_path, tiny_llama_dir, extracted):
    _, task, _ = extracted
    run_dir = tmp_path / "ft"
    proc = run("finetune", tiny_llama_dir, task, "--out", run_dir, "--steps", 4, "--save-every", 2, "-q", check=True)
    info = json.loads(proc.stdout)
    assert [p.split("/")[-1] for p in info["checkpoints"]] == ["checkpoint-2", "checkpoint-4"]
    assert info["steps_per_second"] > 0
    out = tmp_path / "cmp"
    proc = run("compare", run_dir, "--base", tiny_llama_dir, "--task", task, "--out", out, "--prompts", 6,
               "--mean-prompts", 5, "--trials", 2, "-q")
    # A random-init model answers nothing right: the reference extraction refuses, in one line.
    assert proc.returncode == 2 and "answers none of the" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("compare", run_dir / "checkpoint-2", run_dir / "checkpoint-4", "--task", task, "--out", out,
               "--prompts", 6, "--mean-prompts", 5, "--trials", 2, "--no-filter", "-q", check=True)
    assert "checkpoint-4" in proc.stdout
    for f in ("tracking.csv", "tracking.json", "tracking.html"):
        assert (out / f).exists()
    proc = run("compare", tmp_path / "missing", "--task", task, "--out", out)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.parametrize("backend, method, expected", [
    ("transformer-lens", None, "naive"),   # the default through a bridge
    ("nnsight", None, "fast"),             # the default on a local nnsight model
    ("nnsight", "naive", "naive"),         # every pass an nnsight trace
])
def test_extract_backend_gives_the_same_indirect_effects(backend, method, expected, extracted, tiny_llama_dir,
                                                         tmp_path):
    """``--backend X`` runs the whole extraction through X; the AIE matches the torch run."""
    torch_out, task, _ = extracted
    out = tmp_path / backend
    opts = ["--method", method] if method else []
    proc = run("extract", tiny_llama_dir, task, "--out", out, "--shots", 3, "--mean-prompts", 5, "--trials", 2,
               "--top-k", 3, "--seed", 1, "--no-filter", "--json", "--backend", backend, *opts, check=True)
    summary = json.loads(proc.stdout)
    assert summary["backend"] == backend and summary["method"] == expected
    ours = json.loads((out / "indirect_effects.json").read_text())
    ref = json.loads((torch_out / "indirect_effects.json").read_text())
    assert ours["info"]["backend"] == backend and ref["info"]["backend"] == "torch"
    diff = max(abs(a - b) for ra, rb in zip(ours["aie"], ref["aie"]) for a, b in zip(ra, rb))
    assert diff <= 1e-5
    assert json.loads((out / "iv.json").read_text())["backend"]["backend"] == backend


def test_fast_method_on_another_backend_is_a_clear_error(extracted, tiny_llama_dir, tmp_path):
    _, task, _ = extracted
    proc = run("extract", tiny_llama_dir, task, "--out", tmp_path / "x", "--shots", 3, "--mean-prompts", 5,
               "--trials", 2, "--no-filter", "--backend", "transformer-lens", "--method", "fast")
    assert proc.returncode == 2 and "method='fast'" in proc.stderr and "Traceback" not in proc.stderr


def test_remote_is_a_flag(tiny_llama_dir, tmp_path):
    """``--remote`` takes no value, so it does not swallow the next option."""
    proc = run("extract", tiny_llama_dir, "antonym", "--out", tmp_path / "x", "--remote", "--json")
    assert proc.returncode == 2 and "--backend nnsight" in proc.stderr
    proc = run("extract", tiny_llama_dir, "antonym", "--out", tmp_path / "x", "--remote", "--remote-dry-run")
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_heads_injection_through_the_cli(extracted, tiny_llama_dir, tmp_path):
    _, task, _ = extracted
    out = tmp_path / "heads"
    proc = run("extract", tiny_llama_dir, task, "--out", out, "--shots", 3, "--mean-prompts", 5, "--trials", 2,
               "--top-k", 3, "--seed", 1, "--no-filter", "--injection", "heads", "--scales", "1,3", "--json",
               check=True)
    summary = json.loads(proc.stdout)
    assert summary["injection"] == "heads" and summary["layer"] is None and summary["k"] == 3
    assert json.loads((out / "iv.json").read_text())["injection"] == "heads"
    res = json.loads(run("evaluate", tiny_llama_dir, task, "--iv", out, "--prompts", 6, "--shots", 3, "--json",
                         check=True).stdout)
    assert res["injection"] == "heads" and res["layer"] is None and res["scale"] == summary["scale"]
    res = json.loads(run("evaluate", tiny_llama_dir, task, "--iv", out, "--prompts", 6, "--shots", 3, "--sweep",
                         "--injection", "auto", "--json", check=True).stdout)
    assert res["injection"] in ("residual", "heads") and (res["layer"] is None) == (res["injection"] == "heads")
    table = run("evaluate", tiny_llama_dir, task, "--iv", out, "--prompts", 6, "--shots", 3, check=True).stdout
    assert "IV patched into its 3 heads" in table
    # The table's 95% interval for zero_shot_iv is the JSON's, to two decimals.
    lo, hi = res["ci95"]["zero_shot_iv"]
    row = next(line for line in table.splitlines() if line.startswith("zero_shot_iv "))
    assert row.split()[2] == f"{lo:.2f}-{hi:.2f}"


@pytest.mark.parametrize("args,needle", [
    (["extract", "m", "t", "--out", "x", "--injection", "sideways"], "--injection must be one of residual, heads, auto"),
    (["extract", "m", "t", "--out", "x", "--injection", "heads", "--layer", "2"], "does not go with --injection"),
    (["evaluate", "m", "t", "--iv", "x", "--injection", "auto"], "--injection auto needs --sweep"),
    (["evaluate", "m", "t", "--iv", "x", "--injection", "heads", "--layer", "1"], "drop --layer"),
    (["extract", "m", "t", "--out", "x", "--ranking", "random"], "--ranking must be one of shuffled, zero_shot, both"),
    (["extract", "m", "t", "--out", "x", "--ranking", "both", "--no-sweep"], "--ranking both needs the validation"),
    (["extract", "m", "t", "--out", "x", "--select", "best"], "--select must be one of top_k, greedy"),
    (["extract", "m", "t", "--out", "x", "--select", "greedy", "--top-k", "5"], "--top-k does not go with --select greedy"),
    (["extract", "m", "t", "--out", "x", "--select", "greedy", "--layer", "2"], "--select greedy needs the validation sweep"),
    (["extract", "m", "t", "--out", "x", "--select", "greedy", "--greedy-pool", "0"], "--greedy-pool must be at least 1"),
])
def test_injection_usage_errors_come_before_any_load(args, needle):
    proc = run(*args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_zero_shot_ranking_through_the_cli(extracted, tiny_llama_dir, tmp_path):
    _, task, _ = extracted
    out = tmp_path / "both"
    proc = run("extract", tiny_llama_dir, task, "--out", out, "--shots", 3, "--mean-prompts", 5, "--trials", 2,
               "--top-k", 3, "--seed", 1, "--no-filter", "--ranking", "both", "--zero-shot-trials", 4,
               "--scales", "1,3", "--json", check=True)
    summary = json.loads(proc.stdout)
    meta = json.loads((out / "iv.json").read_text())
    other = {"shuffled": "zero_shot", "zero_shot": "shuffled"}[summary["ranking"]]
    assert meta["ranking"] == summary["ranking"] and meta["ranking_selection"]["candidates"] == ["shuffled", "zero_shot"]
    chosen = json.loads((out / "indirect_effects.json").read_text())
    rest = json.loads((out / f"indirect_effects_{other}.json").read_text())
    assert chosen["info"]["ranking"] == summary["ranking"] and rest["info"]["ranking"] == other
    assert len(rest["per_trial"] if other == "shuffled" else chosen["per_trial"]) == 2  # the shuffled trials
    assert len(chosen["per_trial"] if other == "shuffled" else rest["per_trial"]) == 4  # --zero-shot-trials


def test_greedy_selection_through_the_cli(extracted, tiny_llama_dir, tmp_path):
    _, task, _ = extracted
    out = tmp_path / "greedy"
    proc = run("extract", tiny_llama_dir, task, "--out", out, "--shots", 3, "--mean-prompts", 5, "--trials", 2,
               "--seed", 1, "--no-filter", "--select", "greedy", "--greedy-pool", 3, "--greedy-max-heads", 2,
               "--greedy-queries", 6, "--injection", "heads", "--scales", "2", "--greedy-scale", 2, "--json",
               check=True)
    summary = json.loads(proc.stdout)
    meta = json.loads((out / "iv.json").read_text())
    sel = meta["head_selection"]
    assert summary["selection"] == "greedy" and summary["injection"] == "heads" and summary["scale"] == 2
    assert len(sel["pool"]) == 3 and sel["scale"] == 2 and 1 <= len(sel["heads"]) <= 2
    assert [[l, h] for l, h, _ in summary["heads"]] == sel["heads"][:summary["k"]]
    assert meta["k_selection"]["candidates"] == list(range(1, len(sel["heads"]) + 1))


def test_ctrl_c_exits_130_with_one_line_and_the_run_resumes(extracted, tiny_llama_dir, tmp_path):
    """A real SIGINT while the indirect effects run (the naive loop over 300 trials): exit status
    130 and one line, not 0 and silence; the rerun loads the finished stage and completes."""
    import signal
    import time

    _, task, _ = extracted
    out = tmp_path / "run"
    args = [sys.executable, "-m", "ivkit", "extract", tiny_llama_dir, task, "--out", out, "--shots", 3,
            "--mean-prompts", 4, "--trials", 300, "--top-k", 3, "--seed", 1, "--method", "naive", "--no-filter",
            "--scales", "1", "--json", "-q"]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stage = out / ".stages" / "prompts.json"
    deadline = time.monotonic() + 120
    while not stage.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stage.exists() and proc.poll() is None, "the run should be inside its indirect effects by now"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [l for l in stderr.splitlines() if l.startswith("ivkit:")]
    assert lines == ["ivkit: interrupted before the command finished (run it again to resume from its --out "
                     "directory)"], stderr
    assert stdout == "" and "Traceback" not in stderr
    assert not (out / "iv.json").exists() and not (out / ".stages" / "effects_shuffled.json").exists()
    again = run(*args[3:], check=True)
    summary = json.loads(again.stdout)
    assert summary["resumed"] == ["prompts"] and (out / "iv.json").exists()


def test_a_failed_command_chain_stops(tiny_llama_dir, tmp_path):
    """`ivkit extract ... && ivkit evaluate ...`: a command that did not finish exits non-zero."""
    proc = subprocess.run(f"{sys.executable} -m ivkit extract {tiny_llama_dir} no-such-task --out {tmp_path}/x "
                          f"&& echo carried-on", shell=True, capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 2 and "carried-on" not in proc.stdout


def test_the_studies_are_ivkit_commands(tmp_path):
    """``ivkit conjugate`` and ``ivkit synthetic`` reach their commands, with the main command's one-line errors."""
    for sub in (["conjugate"], ["synthetic", "study"]):
        proc = run(*sub, "--help", check=True)
        assert "ivkit " + " ".join(sub) + " [OPTIONS]" in " ".join(proc.stdout.split())
    proc = run("conjugate", "no/such/model-dir", "--out", tmp_path / "o", "--transforms", "none,leetspeak")
    assert proc.returncode == 2 and "did you mean 'leet'" in proc.stderr + proc.stdout
    assert not (tmp_path / "o").exists()
    proc = run("synthetic", "pretrain", "--out", tmp_path / "p", "--steps", "0")
    assert proc.returncode == 2 and "steps" in proc.stderr + proc.stdout
