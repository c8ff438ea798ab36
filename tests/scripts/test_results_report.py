"""scripts/results_report.py end to end on a tiny model: it screens, extracts with the auto recipe,
evaluates, and writes a page from what it stored (a second call computes nothing)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "results_report.py"
SMALL = {"shots": 3, "mean_prompts": 5, "trials": 2, "sweep_prompts": 6, "filter_correct": False, "scales": [1.0]}


def _run(*args):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_report_on_a_tiny_model(tiny_llama_dir, task_file, tmp_path):
    out, doc = tmp_path / "report", tmp_path / "docs" / "results.md"
    common = ["--models", tiny_llama_dir, "--tasks", task_file, "--out", out, "--doc", doc]
    _run(*common, "--min-few-shot", 0, "--prompts", 8, "--screen-prompts", 6, "--options", json.dumps(SMALL))
    text = doc.read_text()
    model_dir = out / Path(str(tiny_llama_dir)).name
    screen = json.loads((model_dir / "screen.json").read_text())
    assert list(screen) == [str(task_file)] and screen[str(task_file)]["n"] == 6
    meta = json.loads((model_dir / "mini_antonym" / "iv.json").read_text())
    chosen = meta["recipe"]["chosen"]
    assert f"| mini_antonym | {chosen['selection']}, {chosen['ranking']}, {chosen['k']} |" in text
    assert "(ICL-right)" in text and "--recipe auto" in text and "torch" in text and "## In short" in text
    assert f"**{tiny_llama_dir}**: 1 tasks pass the screen" in text
    assert (doc.parent / "results" / f"{model_dir.name}_mini_antonym_heads.html").exists()
    # --doc-only rewrites the same page from the stored files
    doc.unlink()
    _run(*common, "--doc-only", "--min-few-shot", 0)
    assert doc.read_text() == text


def test_comparison_section_lists_the_tasks_both_models_ran(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for model, acc in (("a", 0.9), ("b", 0.5)):
        for task in ("t1", "t2") if model == "a" else ("t1",):
            d = tmp_path / model / task
            d.mkdir(parents=True)
            zs = {"top1": acc / 2, "top1_icl_correct": acc, "top1_icl_correct_lo": acc - 0.1,
                  "top1_icl_correct_hi": acc + 0.05}
            detail = {"zero_shot_iv": zs, "few_shot": {"top1": 0.9}}
            (d / "evaluation.json").write_text(json.dumps({"evaluation": {"detail": detail}}))
            (d / "iv.json").write_text(json.dumps({"injection": "heads", "recipe": {"chosen": {
                "selection": "greedy", "ranking": "both", "k": 4}}}))
    lines = mod.comparison_section(tmp_path, ["a", "b"])
    assert lines[0] == "## The same task on both models"
    rows = [line for line in lines if line.startswith("| t1")]
    assert "t2" not in "".join(lines)
    assert rows == ["| t1 | 0.90 (0.80-0.95) | 0.50 | greedy, both, k=4, heads | 0.50 (0.40-0.55) | 0.28 | greedy, both, "
                    "k=4, heads |"]
    assert mod.comparison_section(tmp_path, ["a"]) == []


def test_each_task_is_placed_against_the_bar_with_its_interval(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mdir = tmp_path / "m"
    cases = {"hit": (0.9, 0.95), "near": (0.76, 0.83), "miss": (0.6, 0.7)}
    screen = {t: {"few_shot_valid": 0.9, "n": 60} for t in [*cases, "later"]} | {"weak": {"few_shot_valid": 0.2}}
    mdir.mkdir()
    (mdir / "screen.json").write_text(json.dumps(screen))
    for t, (icl, hi) in cases.items():
        (mdir / t).mkdir()
        detail = {c: {"top1": 0.5} for c in mod.CONDITIONS}
        detail["zero_shot_iv"] |= {"top1_icl_correct": icl, "top1_icl_correct_lo": icl - 0.1, "top1_icl_correct_hi": hi}
        (mdir / t / "evaluation.json").write_text(json.dumps(
            {"evaluation": {"n": 100, "n_icl_correct": 90, "detail": detail}, "evaluate_seconds": 60.0}))
        (mdir / t / "iv.json").write_text(json.dumps({"injection": "heads", "scale": 3.0, "timings": {"filter": 60.0},
                                                      "layer_selection": {"scales": [1.0, 3.0] if t == "hit" else
                                                                          [1.0, 3.0, 4.0]},
                                                      "recipe": {"chosen": {"selection": "greedy", "ranking": "both",
                                                                            "k": 4}}}))
    text = "\n".join(mod.model_section("m", mdir, tmp_path / "figs", tmp_path, 0.5))
    assert "- Meets the function-vectors bar" in text and ": hit 0.90 (0.80-0.95)." in text
    assert "interval below 0.8: miss 0.60 (0.50-0.70)." in text
    assert "reaches 0.8 (not shown to fall short): near 0.76 (0.66-0.83)." in text
    assert "Not run yet (1 of 4; the same command resumes): later." in text and "| weak |" not in text
    assert "| hit | greedy, both, 4 | heads, scale 3 | - | - | - |" in text
    assert "summed over the 3 tasks run: 6 min" in text
    assert "- Chose the largest scale of the grid: hit; the validation optimum may lie beyond it" in text


def test_the_chosen_iv_is_set_against_the_reference_heads_on_validation(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cand = lambda sel, rank, k, v: {"selection": sel, "ranking": rank, "k": k, "valid_top1": v}  # noqa: E731
    mdir = tmp_path / "m"
    (mdir / "t1").mkdir(parents=True)
    (mdir / "screen.json").write_text(json.dumps({"t1": {"few_shot_valid": 0.9}}))
    detail = {c: {"top1": 0.5} for c in mod.CONDITIONS}
    detail["zero_shot_iv"]["top1_icl_correct"] = 0.85
    (mdir / "t1" / "evaluation.json").write_text(json.dumps({"evaluation": {"detail": detail}, "evaluate_seconds": 1}))
    meta = {"layer_selection": {"top1": 0.9}, "recipe": {"candidates": [
        cand("top_k", "shuffled", 5, 0.7), cand("top_k", "zero_shot", 10, 0.6), cand("top_k", "shuffled", 10, 0.55),
        cand("greedy", "both", 10, 0.9)]}}
    (mdir / "t1" / "iv.json").write_text(json.dumps(meta))
    assert mod.reference_valid_top1(meta) == 0.55
    assert mod.reference_valid_top1({"recipe": {"candidates": [cand("top_k", "shuffled", 5, 0.7)]}}) is None
    line = mod.summary_section(tmp_path, ["m"], 0.5)[-2]
    assert line.endswith("the chosen IV's validation top-1 is 0.35-0.35 above that of the reference heads (top 10 of "
                         "the shuffled ranking), a candidate the recipe also tried.")
