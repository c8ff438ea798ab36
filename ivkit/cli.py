"""Command line: ``ivkit extract``, ``ivkit evaluate``, ``ivkit demo``, ``ivkit tasks``, ``ivkit info``.

Progress bars and logs go to stderr, results to stdout. Bad input exits with status 2 and one
line naming the problem; set ``IVKIT_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Instruction vectors: find task-carrying heads, build the vector, inject it, measure it.")
log = logging.getLogger("ivkit.cli")


def _setup(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its weight-loading bars are noise next to ours
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"


BACKEND_HELP = "torch (HF hooks; default), transformer-lens (TransformerBridge hook points) or nnsight (traces)"
REMOTE_HELP = "nnsight only: run every trace on NDIF (needs NDIF_API_KEY)"
DRY_RUN_HELP = "nnsight only: serialize every trace as for NDIF, then run it here (nnsight's dry run)"


def _remote(remote: bool, dry_run: bool) -> bool | str:
    """``--remote`` (NDIF) and ``--remote-dry-run`` (nnsight's local serialization check) -> the
    ``remote=`` argument of :func:`ivkit.load_model`."""
    if remote and dry_run:
        raise typer.BadParameter("give --remote or --remote-dry-run, not both")
    return True if remote else ("local" if dry_run else False)


def _load(model: str, backend: Optional[str] = None, remote: bool | str = False):
    from . import load_model

    t0 = time.perf_counter()
    ivm = load_model(model, backend=backend, remote=remote)
    secs = time.perf_counter() - t0
    log.info("loaded %r in %.1f s", ivm, secs)
    return ivm, secs


def _floats(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise typer.BadParameter("give at least one scale")
    return vals


def _ints(text: str) -> int | list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected an integer or a comma-separated list, got {text!r}") from None
    if not vals:
        raise typer.BadParameter("give at least one value")
    return vals[0] if len(vals) == 1 else vals


def _heads_table(iv) -> str:
    lines = ["rank  layer  head        AIE"]
    for i, ((l, h), a) in enumerate(zip(iv.heads, iv.head_aie), 1):
        lines.append(f"{i:>4}  {l:>5}  {h:>4}  {a:>9.5f}")
    return "\n".join(lines)


def _where(injection: str | None, layer: int | None, k: int | None = None) -> str:
    if injection == "heads":
        return f"IV patched into its {k} heads" if k else "IV patched into its heads"
    return f"IV at layer {layer}"


def _ci_text(r: dict, prefix: str) -> str:
    from .evaluate import _ci

    ci = _ci(r, prefix)
    return "-" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"


def _eval_table(ev) -> str:
    lines = [f"{'condition':<16} {'top1':>6} {'95% CI':>9} {'top2':>6} {'top3':>6}   {'top1 on ICL-right':>17} "
             f"{'95% CI':>9}"]
    for c, r in ev.results.items():
        sub = r.get("top1_icl_correct")
        lines.append(f"{c:<16} {r['top1']:>6.3f} {_ci_text(r, 'top1'):>9} {r['top2']:>6.3f} {r['top3']:>6.3f}   "
                     f"{'-' if sub is None else format(sub, '.3f'):>17} {_ci_text(r, 'top1_icl_correct'):>9}")
    right = (f", {ev.n_icl_correct} of them answered right with clean shots: 'ICL-right'"
             if ev.n_icl_correct is not None else "")
    lines.append(f"({_where(ev.info.get('injection'), ev.layer, ev.info.get('k'))}, scale {ev.info.get('scale', 1):g}; "
                 f"n={ev.n} test queries{right})")
    return "\n".join(lines)


def _method_line(res) -> str:
    """``method: fast``, or ``method: naive (fast unavailable: <reason>)`` after a fallback."""
    reason = res.effects.info.get("fast_unavailable")
    return f"method: {res.effects.method}" + (f" (fast unavailable: {reason})" if reason else "")


def _extract(model_obj, task: str, out: Path, *, layer: Optional[int], quiet: bool, load_seconds: float,
             sweep: bool = True, scales: str = "1,2,3,4", max_memory_mb: float = 1024.0, **options: Any):
    """Run :func:`ivkit.extract` with the CLI's options, record the load time, save to ``out``."""
    from . import extract
    from .errors import InputError

    n_layers = model_obj.geometry.n_layers
    if layer is not None and not 0 <= layer < n_layers:
        raise InputError(f"--layer {layer} is out of range: {model_obj.name} has layers 0..{n_layers - 1}")
    if options.get("method") in (None, "fast") and model_obj.backend.supports_fast:
        options["max_memory_mb"] = max_memory_mb
    res = extract(model_obj, task, sweep=sweep and layer is None, scales=_floats(scales), progress=not quiet,
                  **options)
    if layer is not None:
        res.iv.layer, res.iv.injection = layer, "residual"
        res.iv.meta["layer_selection"] = {"given": layer}
    res.record_timing("load", load_seconds, first=True)
    res.save(out)
    return res


@app.command("extract")
def extract_cmd(
    model: str = typer.Argument(..., help="alias (smollm2-135m-instruct, gemma-3-270m), hub id, directory or .gguf"),
    task: str = typer.Argument(..., help="built-in task name or a .json/.jsonl file of {input, output} pairs"),
    out: Path = typer.Option(..., "--out", help="directory for iv.safetensors, iv.json, indirect_effects.json, heads.html"),
    shots: int = typer.Option(10, help="demonstrations per prompt"),
    mean_prompts: int = typer.Option(100, "--mean-prompts", help="clean prompts averaged for mean activations"),
    trials: int = typer.Option(25, help="corrupted prompts for the indirect effects"),
    top_k: Optional[str] = typer.Option(None, "--top-k", help="heads in the vector (default 10); a comma list (3,5,10,20) is "
                                                           "chosen on the validation split; not with --select greedy"),
    seed: int = typer.Option(0, help="seed for splits, prompts and shuffles"),
    method: Optional[str] = typer.Option(None, help="indirect effects: fast (exact; default on torch and local nnsight), "
                                                    "naive (per-head oracle; default on transformer-lens and "
                                                    "--remote), attribution (approx.)"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    remote: bool = typer.Option(False, "--remote", help=REMOTE_HELP),
    remote_dry_run: bool = typer.Option(False, "--remote-dry-run", help=DRY_RUN_HELP),
    max_memory_mb: float = typer.Option(1024.0, "--max-memory-mb", help="working-memory cap of the fast method"),
    metric: str = typer.Option("prob", help="prob (first answer token) or nll (whole answer, -ΔNLL)"),
    style: str = typer.Option("few_shot", help="clean prompt style: few_shot or instruction"),
    batch_size: int = typer.Option(16, "--batch-size", help="prompts per forward pass"),
    sweep: bool = typer.Option(True, "--sweep/--no-sweep", help="choose the injection layer on the validation split"),
    layer: Optional[int] = typer.Option(None, help="fix the injection layer instead of sweeping"),
    scales: str = typer.Option("1,2,3,4", help="comma-separated IV multipliers the sweep tries with each layer"),
    injection: str = typer.Option("residual", help="residual (add the vector after one layer, the reference recipe), "
                                                   "heads (set each top head to scale x its mean, at its own layer) "
                                                   "or auto (the validation sweep chooses)"),
    post_norm: str = typer.Option("linearized", "--post-norm", help="Gemma post-attention norm: linearized or ignore"),
    ranking: str = typer.Option("shuffled", help="what ranks the heads: shuffled (each head patched on the shuffled "
                                                 "10-shot trials, the reference recipe), zero_shot (patched on "
                                                 "zero-shot training prompts) or both (the validation sweep chooses)"),
    zero_shot_trials: int = typer.Option(100, "--zero-shot-trials", help="zero-shot prompts for --ranking zero_shot/both"),
    select: str = typer.Option("top_k", "--select", help="top_k (the top k heads of the ranking, the reference recipe) or "
                                                         "greedy (add heads one at a time from the ranking's top ones "
                                                         "for zero-shot accuracy on training queries; the validation "
                                                         "sweep chooses how many)"),
    greedy_pool: int = typer.Option(15, "--greedy-pool", help="--select greedy: the top heads of each ranking it chooses from"),
    greedy_max_heads: int = typer.Option(8, "--greedy-max-heads", help="--select greedy: at most this many heads"),
    greedy_scale: float = typer.Option(3.0, "--greedy-scale", help="--select greedy: heads-injection scale the path is chosen at"),
    greedy_queries: int = typer.Option(100, "--greedy-queries", help="--select greedy: zero-shot training queries it scores on"),
    filter_correct: bool = typer.Option(True, "--filter/--no-filter",
                                        help="keep only clean prompts the model answers right (off: for models that can't)"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary instead of tables"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or info logs"),
):
    """Extract an instruction vector: filter prompts, mean activations, AIE, top-k heads, layer sweep."""
    from .extract import RANKINGS, SELECTIONS

    ks, remote_mode = (None if top_k is None else _ints(top_k)), _remote(remote, remote_dry_run)  # parse the options before the (slow) load
    _floats(scales)
    if injection not in ("residual", "heads", "auto"):
        raise typer.BadParameter(f"--injection must be residual, heads or auto, got {injection!r}")
    if ranking not in RANKINGS:
        raise typer.BadParameter(f"--ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    if ranking == "both" and (not sweep or layer is not None):
        raise typer.BadParameter("--ranking both needs the validation sweep to choose: drop --no-sweep / --layer")
    if select not in SELECTIONS:
        raise typer.BadParameter(f"--select must be one of {', '.join(SELECTIONS)}, got {select!r}")
    if select == "greedy" and (not sweep or layer is not None):
        raise typer.BadParameter("--select greedy needs the validation sweep to choose how many heads: drop "
                                 "--no-sweep / --layer")
    for name, value in (("--greedy-pool", greedy_pool), ("--greedy-max-heads", greedy_max_heads),
                        ("--greedy-queries", greedy_queries)):
        if value < 1:
            raise typer.BadParameter(f"{name} must be at least 1, got {value}")
    if select == "greedy" and ks is not None:
        raise typer.BadParameter("--top-k does not go with --select greedy (its candidates are the greedy path's "
                                 "prefixes); use --greedy-max-heads")
    if layer is not None and injection != "residual":
        raise typer.BadParameter("--layer fixes a residual injection layer; it does not go with --injection "
                                 f"{injection}")
    _setup(quiet)
    ivm, load_s = _load(model, backend, remote_mode)
    res = _extract(ivm, task, out, layer=layer, quiet=quiet, load_seconds=load_s, sweep=sweep, scales=scales,
                   max_memory_mb=max_memory_mb, shots=shots, mean_prompts=mean_prompts, trials=trials,
                   top_k=ks, seed=seed, method=method, metric=metric, style=style, batch_size=batch_size,
                   post_norm=post_norm, filter_correct=filter_correct, injection=injection, ranking=ranking,
                   zero_shot_trials=zero_shot_trials, selection=select, greedy_pool=greedy_pool,
                   greedy_max_heads=greedy_max_heads, greedy_scale=greedy_scale, greedy_queries=greedy_queries)
    summary = {"out": str(out), "model": ivm.name, "task": res.iv.meta.get("task"), "layer": res.iv.layer,
               "scale": res.iv.scale, "injection": res.iv.injection, "k": res.iv.k,
               "ranking": res.iv.meta.get("ranking"),
               "selection": res.iv.meta.get("head_selection", {}).get("method", "top_k"),
               "heads": [[l, h, a] for (l, h), a in zip(res.iv.heads, res.iv.head_aie)],
               "filter": res.filter, "timings": {k: round(v, 2) for k, v in res.timings.items()},
               "method": res.effects.method, "backend": ivm.backend.name,
               "fast_unavailable": res.effects.info.get("fast_unavailable")}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(_heads_table(res.iv))
        typer.echo(f"injection: {_where(res.iv.injection, res.iv.layer, res.iv.k)}, scale {res.iv.scale:g}, "
                   f"heads ranked on {res.iv.meta.get('ranking', 'shuffled')} prompts   "
                   f"wrote {out}/")
        typer.echo(_method_line(res))
        typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()))


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Argument(..., help="alias, hub id, directory or .gguf"),
    task: str = typer.Argument(..., help="built-in task name or a .json/.jsonl file"),
    iv: Path = typer.Option(..., "--iv", help="directory written by ivkit extract"),
    layer: Optional[int] = typer.Option(None, help="injection layer (default: the one recorded in iv.json)"),
    sweep: bool = typer.Option(False, "--sweep", help="re-choose layer and scale by a sweep on the validation split"),
    scales: str = typer.Option("1,2,3,4", help="multipliers tried by --sweep"),
    prompts: int = typer.Option(100, help="at most this many test queries"),
    shots: Optional[int] = typer.Option(None, help="demonstrations in the few-shot conditions (default: the IV's)"),
    seed: Optional[int] = typer.Option(None, help="seed for the split, prompts, shuffles and the random control "
                                                  "(default: the IV's, so the test split is disjoint from its own)"),
    scale: Optional[float] = typer.Option(None, help="multiply the vector by this (default: the scale in iv.json)"),
    injection: Optional[str] = typer.Option(None, help="residual or heads (default: the one in iv.json; --layer "
                                                       "means residual); with --sweep, auto sweeps both"),
    batch_size: int = typer.Option(16, "--batch-size"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    remote: bool = typer.Option(False, "--remote", help=REMOTE_HELP),
    remote_dry_run: bool = typer.Option(False, "--remote-dry-run", help=DRY_RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Evaluate an IV: zero-shot, +IV, shuffled, shuffled+IV, few-shot, random control (top-1/2/3)."""
    from . import InstructionVector, encode_prompts, evaluate_iv, layer_sweep, load_task, sample_prompts

    if layer is not None and sweep:
        raise typer.BadParameter("give --layer or --sweep, not both")
    if injection not in (None, "residual", "heads", "auto"):
        raise typer.BadParameter(f"--injection must be residual, heads or auto, got {injection!r}")
    if injection == "auto" and not sweep:
        raise typer.BadParameter("--injection auto needs --sweep to choose")
    if injection == "heads" and layer is not None:
        raise typer.BadParameter("--injection heads patches each head at its own layer: drop --layer")
    _setup(quiet)
    vec = InstructionVector.load(iv)
    ivm, _ = _load(model, backend, _remote(remote, remote_dry_run))
    vec.check_compatible(ivm)
    t = load_task(task)
    from .evaluate import iv_protocol

    seed, shots, template = iv_protocol(vec, t, seed=seed, shots=shots)
    if sweep:
        split = t.split(seed)
        val = encode_prompts(ivm, sample_prompts(split.valid, style="zero_shot", n=prompts, seed=seed, stream=3,
                                                 template=template))
        tried = ["residual", "heads"] if injection == "auto" else [injection or vec.injection]
        sw = layer_sweep(ivm, vec, val, scales=[scale] if scale is not None else _floats(scales), progress=not quiet,
                         injections=tried)
        layer, scale, injection = sw.best_layer, sw.best_scale, sw.best_injection
    ev = evaluate_iv(ivm, t, vec, layer=layer, n_prompts=prompts, shots=shots, seed=seed, scale=scale,
                     template=template, batch_size=batch_size, progress=not quiet, injection=injection)
    if as_json:
        typer.echo(json.dumps(ev.to_dict()))
    else:
        typer.echo(_eval_table(ev))


@app.command("demo")
def demo_cmd(
    model: str = typer.Option("smollm2-135m-instruct", help="model alias, path or hub id"),
    task: str = typer.Option("capitalize", help="task"),
    out: Path = typer.Option(Path("runs/demo"), help="output directory"),
    trials: int = typer.Option(25),
    mean_prompts: int = typer.Option(100, "--mean-prompts"),
    method: Optional[str] = typer.Option(None, help="fast, naive or attribution (default: fast where the backend can run it)"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    prompts: int = typer.Option(100, help="test queries in the evaluation"),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Extract an IV on the embedded model, print the top heads and the accuracy table, write the heads plot."""
    from . import evaluate_iv
    from .io import atomic_write_text

    _setup(quiet)
    ivm, load_s = _load(model, backend)
    res = _extract(ivm, task, out, layer=None, quiet=quiet, load_seconds=load_s, mean_prompts=mean_prompts,
                   trials=trials, seed=seed, method=method)
    ev = evaluate_iv(ivm, task, res.iv, n_prompts=prompts, seed=seed, progress=not quiet)
    atomic_write_text(out / "evaluation.json", json.dumps(ev.to_dict(), indent=1))
    typer.echo(f"model {ivm.name}, task {task}: top heads by average indirect effect")
    typer.echo(_heads_table(res.iv))
    typer.echo("")
    typer.echo(_eval_table(ev))
    typer.echo("")
    typer.echo(_method_line(res))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()))
    typer.echo(f"head-importance plot: {out / 'heads.html'}")


@app.command("tasks")
def tasks_cmd(
    model: Optional[str] = typer.Option(None, help="also measure the model's clean few-shot accuracy on each task"),
    shots: int = typer.Option(10),
    n: int = typer.Option(50, help="validation queries per task when measuring"),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """List the built-in tasks; with --model, measure clean few-shot and zero-shot top-1 on each."""
    from . import encode_prompts, list_tasks, load_task, sample_prompts, score_prompts

    _setup(quiet)
    names = list_tasks()
    if model is None:
        for name in names:
            t = load_task(name)
            typer.echo(f"{name:<26} {len(t):>5}  {t.instruction or ''}")
        return
    ivm, _ = _load(model)
    rows = []
    for name in names:
        t = load_task(name)
        split = t.split(seed)
        row: dict[str, Any] = {"task": name, "n_examples": len(t)}
        for style in ("few_shot", "zero_shot"):
            enc = encode_prompts(ivm, sample_prompts(split.valid, style=style, demo_pool=split.train, shots=shots,
                                                     n=n, seed=seed, stream=3))
            row[style] = round(score_prompts(ivm, enc).accuracy(1), 3)
            row["n"] = len(enc)
        rows.append(row)
        typer.echo(json.dumps(row))


@app.command("finetune")
def finetune_cmd(
    model: str = typer.Argument(..., help="alias, hub id, directory or .gguf to start from"),
    data: str = typer.Argument(..., help="task name or .json/.jsonl file of {input, output} pairs"),
    out: Path = typer.Option(..., "--out", help="run directory for checkpoint-<step>/ folders"),
    steps: int = typer.Option(100),
    save_every: int = typer.Option(20, "--save-every"),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default 5e-5 full, 1e-4 LoRA)"),
    lora: bool = typer.Option(False, "--lora", help="train LoRA adapters (peft) instead of all weights"),
    chat: bool = typer.Option(False, "--chat", help="format examples with the model's chat template"),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Fine-tune on instruction-formatted pairs; seeded, resumable, a checkpoint every --save-every steps."""
    from .finetune import finetune

    _setup(quiet)
    ivm, _ = _load(model)
    res = finetune(ivm, data, out, steps=steps, save_every=save_every, batch_size=batch_size, lr=lr, lora=lora,
                   chat=chat, seed=seed, progress=not quiet)
    typer.echo(json.dumps({"out": str(res.out), "checkpoints": [str(p) for p in res.checkpoints],
                           "final_loss": res.losses[-1][1] if res.losses else None,
                           "steps_per_second": round(res.steps_per_second, 3)}))


@app.command("compare")
def compare_cmd(
    checkpoints: list[str] = typer.Argument(..., help="checkpoint directories in order, or one run directory "
                                                       "holding checkpoint-<step>/ folders"),
    task: list[str] = typer.Option(..., "--task", help="task to track (repeat for several)"),
    out: Path = typer.Option(..., "--out", help="directory for tracking.csv/json, the plots, and resume state"),
    base: Optional[str] = typer.Option(None, help="with a run directory: the model it started from, put first"),
    mode: str = typer.Option("fixed", help="fixed (reference heads) or rerank (AIE per checkpoint)"),
    prompts: int = typer.Option(100, help="test queries per accuracy"),
    mean_prompts: int = typer.Option(100, "--mean-prompts"),
    trials: int = typer.Option(25),
    seed: int = typer.Option(0),
    filter_correct: bool = typer.Option(True, "--filter/--no-filter",
                                        help="reference extraction keeps only prompts the first checkpoint gets right"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Track accuracy, IV similarity and residual/IV alignment across checkpoints."""
    from .analysis import track
    from .checkpoints import CheckpointSeries

    _setup(quiet)
    if len(checkpoints) == 1 and Path(checkpoints[0]).is_dir() and not (Path(checkpoints[0]) / "config.json").exists():
        series = CheckpointSeries.from_trainer_dir(checkpoints[0], include_base=base)
    else:
        series = CheckpointSeries.from_dirs(([base] if base else []) + list(checkpoints))
    tr = track(series, task, mode=mode, out=out, n_prompts=prompts, mean_prompts=mean_prompts, trials=trials,
               seed=seed, progress=not quiet, filter_correct=filter_correct)
    tr.save(out)
    typer.echo(tr.to_pandas().to_string(index=False))


@app.command("info")
def info_cmd(model: str = typer.Argument(...)):
    """Print a model's head geometry and module paths."""
    _setup(True)
    ivm, secs = _load(model)
    typer.echo(json.dumps({**ivm.describe(), "spec": ivm.spec.__dict__, "config_hash": ivm.config_hash(),
                           "load_seconds": round(secs, 2)}, indent=1))


def main() -> None:
    """Entry point: run the app, turning known errors into one readable line."""
    from .errors import IVKitError

    debug = bool(os.environ.get("IVKIT_DEBUG"))
    try:
        app(standalone_mode=False)
    except IVKitError as e:
        if debug:
            raise
        typer.echo(f"ivkit: error: {e}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("ivkit: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors and anything unexpected: one line, no traceback
        # Usage errors: typer ships its own copy of click, whose exceptions are not click's, so
        # recognise them by what they do (show() prints usage + message; exit_code is 2).
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        typer.echo(f"ivkit: error: {type(e).__name__}: {msg} (set IVKIT_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
