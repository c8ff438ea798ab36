"""Command line: ``ivkit extract``, ``evaluate``, ``demo``, ``tasks``, ``finetune``, ``compare``, ``info``.

Progress bars and logs go to stderr, results to stdout. Bad input exits with status 2 and one
line naming the problem (usage errors before any model is loaded); an interrupted command exits
with status 130 and one line saying so (``ivkit extract`` resumes from its ``--out`` directory
when run again); set ``IVKIT_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..analysis import track
from ..analysis.anatomy_cli import app as anatomy_app
from ..conjugate.cli import conjugate_cmd
from ..core.errors import InputError, IVKitError
from ..core.io import atomic_write_json
from ..core.options import InjectionChoice, TrackMode, check_choice, option_names
from ..core.prompts import encode_prompts, sample_prompts
from ..core.tasks import list_tasks, load_task
from ..evaluation import evaluate_iv, iv_protocol, layer_sweep, score_prompts
from ..models.checkpoints import CheckpointSeries
from ..models.loading import load_model
from ..pipeline import ExtractConfig, extract
from ..synthetic.cli import app as synthetic_app
from ..training import FinetuneConfig, GuidanceConfig, finetune
from ..vectors import InstructionVector
from .options import build_config, parse_list, with_config_options
from .output import eval_table, extract_summary, heads_table, method_line, seconds_line, where

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


def _usage(check: Callable[..., Any], *args: Any) -> Any:
    """Run an option check; its error is a usage error (exit 2 with the usage line)."""
    try:
        return check(*args)
    except InputError as e:
        raise typer.BadParameter(str(e)) from None


BACKEND_HELP = "torch (HF hooks; default), transformer-lens (TransformerBridge hook points) or nnsight (traces)"
REMOTE_HELP = "nnsight only: run every trace on NDIF (needs NDIF_API_KEY)"
DRY_RUN_HELP = "nnsight only: serialize every trace as for NDIF, then run it here (nnsight's dry run)"


def _remote(remote: bool, dry_run: bool) -> bool | str:
    """``--remote`` (NDIF) and ``--remote-dry-run`` (nnsight's local serialization check) -> the
    ``remote=`` argument of `ivkit.load_model`."""
    if remote and dry_run:
        raise typer.BadParameter("give --remote or --remote-dry-run, not both")
    return True if remote else ("local" if dry_run else False)


def _load(model: str, backend: Optional[str] = None, remote: bool | str = False):
    t0 = time.perf_counter()
    ivm = load_model(model, backend=backend, remote=remote)
    secs = time.perf_counter() - t0
    log.info("loaded %r in %.1f s", ivm, secs)
    return ivm, secs


@app.command("extract")
@with_config_options(ExtractConfig)
def extract_cmd(
    model: str = typer.Argument(..., help="alias (smollm2-135m-instruct, gemma-3-270m), hub id, directory or .gguf"),
    task: str = typer.Argument(..., help="built-in task name or a .json/.jsonl file of {input, output} pairs"),
    out: Path = typer.Option(..., "--out", help="run directory: iv.safetensors, iv.json, indirect_effects.json, "
                                                "heads.html, and each stage's output (a rerun resumes)"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    remote: bool = typer.Option(False, "--remote", help=REMOTE_HELP),
    remote_dry_run: bool = typer.Option(False, "--remote-dry-run", help=DRY_RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary instead of tables"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or info logs"),
    *,
    config_values: dict[str, Any],
):
    """Extract an instruction vector: filter prompts, mean activations, AIE, heads, layer sweep."""
    cfg = build_config(ExtractConfig, config_values)  # every option checked before the (slow) load
    remote_mode = _remote(remote, remote_dry_run)
    _setup(quiet)
    ivm, load_s = _load(model, backend, remote_mode)
    res = extract(ivm, task, cfg, out=out, progress=not quiet).with_timings(load=load_s)
    res.save(out)
    if as_json:
        typer.echo(json.dumps(extract_summary(res, out, ivm)))
        return
    typer.echo(heads_table(res.iv))
    typer.echo(f"injection: {_where(res)}, scale {res.iv.scale:g}, heads ranked on "
               f"{res.iv.meta.get('ranking', 'shuffled')} prompts   wrote {out}/")
    typer.echo(method_line(res))
    typer.echo(seconds_line(res))


def _where(res: Any) -> str:
    return where(res.iv.injection, res.iv.layer, res.iv.k)


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
                                                       "means residual); with --sweep, auto sweeps both "
                                                       "(one of: residual, heads, auto)"),
    batch_size: int = typer.Option(16, "--batch-size"),
    backend: str = typer.Option("torch", help=BACKEND_HELP),
    remote: bool = typer.Option(False, "--remote", help=REMOTE_HELP),
    remote_dry_run: bool = typer.Option(False, "--remote-dry-run", help=DRY_RUN_HELP),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Evaluate an IV: zero-shot, +IV, shuffled, shuffled+IV, few-shot, random control (top-1/2/3)."""
    if layer is not None and sweep:
        raise typer.BadParameter("give --layer or --sweep, not both")
    if injection is not None:
        with option_names({"injection": "--injection"}):
            _usage(check_choice, "injection", injection, InjectionChoice)
    scale_list = parse_list(scales, float, "--scales") if sweep and scale is None else None
    if injection == "auto" and not sweep:
        raise typer.BadParameter("--injection auto needs --sweep to choose")
    if injection == "heads" and layer is not None:
        raise typer.BadParameter("--injection heads patches each head at its own layer: drop --layer")
    _setup(quiet)
    vec = InstructionVector.load(iv)
    ivm, _ = _load(model, backend, _remote(remote, remote_dry_run))
    vec.check_compatible(ivm)
    t = load_task(task)
    seed, shots, template = iv_protocol(vec, t, seed=seed, shots=shots)
    if sweep:
        split = t.split(seed)
        val = encode_prompts(ivm, sample_prompts(split.valid, style="zero_shot", n=prompts, seed=seed, stream=3,
                                                 template=template))
        tried = ["residual", "heads"] if injection == "auto" else [injection or vec.injection]
        sw = layer_sweep(ivm, vec, val, scales=[scale] if scale is not None else scale_list, progress=not quiet,
                         injections=tried)
        layer, scale, injection = sw.best_layer, sw.best_scale, sw.best_injection
    ev = evaluate_iv(ivm, t, vec, layer=layer, n_prompts=prompts, shots=shots, seed=seed, scale=scale,
                     template=template, batch_size=batch_size, progress=not quiet, injection=injection)
    if as_json:
        typer.echo(json.dumps(ev.to_dict()))
    else:
        typer.echo(eval_table(ev))


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
    cfg = build_config(ExtractConfig, {"mean_prompts": mean_prompts, "trials": trials, "seed": seed, "method": method})
    _setup(quiet)
    ivm, load_s = _load(model, backend)
    res = extract(ivm, task, cfg, out=out, progress=not quiet).with_timings(load=load_s)
    res.save(out)
    ev = evaluate_iv(ivm, task, res.iv, n_prompts=prompts, seed=seed, progress=not quiet)
    atomic_write_json(out / "evaluation.json", ev.to_dict())
    typer.echo(f"model {ivm.name}, task {task}: top heads by average indirect effect")
    typer.echo(heads_table(res.iv))
    typer.echo("")
    typer.echo(eval_table(ev))
    typer.echo("")
    typer.echo(method_line(res))
    typer.echo(seconds_line(res))
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
@with_config_options(GuidanceConfig, into="guidance_values")
@with_config_options(FinetuneConfig)
def finetune_cmd(
    model: str = typer.Argument(..., help="alias, hub id, directory or .gguf to start from"),
    data: str = typer.Argument(..., help="task name or .json/.jsonl file of {input, output} pairs"),
    out: Path = typer.Option(..., "--out", help="run directory for checkpoint-<step>/ folders (a rerun resumes)"),
    iv_guided: Optional[Path] = typer.Option(None, "--iv-guided", help="IV-guided training with this IV of the "
                                             "training task (a directory written by ivkit extract on this model)"),
    track: list[str] = typer.Option([], "--track", help="TASK=IVDIR: log this held-apart task's IV similarity and "
                                                        "residual alignment while training (repeat for several)"),
    track_every: int = typer.Option(10, "--track-every", help="--track: measure every this many steps"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    *,
    config_values: dict[str, Any],
    guidance_values: dict[str, Any],
):
    """Fine-tune on instruction-formatted pairs (transformers' Trainer), plain or IV-guided; seeded,
    resumable, a checkpoint every --save-every steps."""
    cfg = build_config(FinetuneConfig, config_values)
    guide = build_config(GuidanceConfig, guidance_values) if iv_guided is not None else None
    pairs = [t.partition("=") for t in track]
    if any(not sep or not name or not path for name, sep, path in pairs):
        raise typer.BadParameter(f"--track takes TASK=IVDIR, got {track}")
    _setup(quiet)
    ivm, _ = _load(model)
    refs = {name: InstructionVector.load(path, ivm) for name, _, path in pairs}
    res = finetune(ivm, data, out, cfg, iv=iv_guided, guidance=guide, track=refs or None, track_every=track_every,
                   progress=not quiet)
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
    mode: str = typer.Option("fixed", help="fixed (reference heads) or rerank (AIE per checkpoint) (one of: fixed, rerank)"),
    prompts: int = typer.Option(100, help="test queries per accuracy"),
    mean_prompts: int = typer.Option(100, "--mean-prompts"),
    trials: int = typer.Option(25),
    seed: int = typer.Option(0),
    filter_correct: bool = typer.Option(True, "--filter/--no-filter",
                                        help="reference extraction keeps only prompts the first checkpoint gets right"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Track accuracy, IV similarity and residual/IV alignment across checkpoints."""
    with option_names({"mode": "--mode"}):
        _usage(check_choice, "mode", mode, TrackMode)
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


# The analyses and studies above the core pipeline: conjugate prompting (one command), the synthetic set-up and
# an IV's anatomy (groups).
app.command("conjugate", help=conjugate_cmd.__doc__)(conjugate_cmd)
app.add_typer(synthetic_app, name="synthetic")
app.add_typer(anatomy_app, name="anatomy")


def main() -> None:
    """Entry point: run the app; every command that does not finish exits non-zero with one line."""
    debug = bool(os.environ.get("IVKIT_DEBUG"))
    try:
        code = app(standalone_mode=False)
    except IVKitError as e:
        if debug:
            raise
        typer.echo(f"ivkit: error: {e}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
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
    # Without standalone mode click returns (not raises) the exit code of an abort (130, Ctrl-C)
    # or of typer.Exit(code): pass it on, or `ivkit extract ... && ivkit evaluate ...` carries on.
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def _interrupted() -> None:
    resume = " (run it again to resume from its --out directory)" if "extract" in sys.argv[1:2] else ""
    typer.echo(f"ivkit: interrupted before the command finished{resume}", err=True)
    sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
