"""The ``conjugate`` command: the in-context-versus-instruction probe on a base model and its tuned
version under several prompt transforms, and optionally the IV diagnosis.

    ivkit conjugate gemma-3-270m runs/tuned/checkpoint-60 --probe repeat,uppercase,lowercase \\
        --transforms none,leet,piglatin,fr --out runs/conj

writes ``DIR/rates.csv`` (one row per model, transform and task: every outcome's rate with its
Wilson interval), ``DIR/recovery.csv`` (each transform's recovery with its bootstrap interval),
``DIR/result.json`` (everything, per-prompt outputs included), ``DIR/in_context.html`` (the
figure), and with ``--iv DIR`` or ``--iv-task TASK`` the diagnosis (``diagnosis.csv``,
``diagnosis.json``, ``diagnosis.html``, ``alignment.html``). Every option is checked before a
model loads. Runs are stored under ``DIR/runs/`` as they finish; a rerun resumes.

Run it as ``ivkit conjugate ...`` (the main command mounts this app).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..core.errors import InputError
from ..core.io import atomic_write_json, atomic_write_text
from ..core.options import check_at_least, check_choice
from ..core.plots import to_html
from ..vectors import InstructionVector
from .lexicon import Lexicon
from .probe import DEFAULT_TASKS, IN_CONTEXT_TASKS, Engine, ProbeItem, build_probe, load_probe_file
from .transforms import get_transform, parse_transforms

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Conjugate prompting: the in-context-versus-instruction probe under prompt transforms.")
log = logging.getLogger("ivkit.conjugate.cli")


def _lexicons(specs: list[str]) -> dict[str, Lexicon]:
    out: dict[str, Lexicon] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip() or "," in name:
            raise InputError(f"--lexicon takes NAME=FILE (e.g. fr=extra.jsonl), got {spec!r}")
        if name.strip() in ("none", "leet", "piglatin"):
            raise InputError(f"--lexicon {name.strip()!r}: that name is a built-in transform; choose another")
        out[name.strip()] = Lexicon.from_file(path.strip())
    return out


def _items(probe: str, n: int, seed: int) -> list[ProbeItem]:
    """Built-in task names (comma-separated) or a probe file."""
    looks_like_file = probe.endswith((".json", ".jsonl")) or os.sep in probe or Path(probe).exists()
    if looks_like_file:
        return load_probe_file(probe)
    return build_probe(tuple(t.strip() for t in probe.split(",") if t.strip()), n=n, seed=seed)


def _iv_and_task(iv_dir: Optional[Path], iv_task: Optional[str], tuned: Optional[str], items: list[ProbeItem]
                 ) -> tuple[Optional[InstructionVector], Optional[str]]:
    if iv_dir is None and iv_task is None:
        return None, None
    if iv_dir is not None and iv_task is not None:
        raise InputError("give --iv (an IV directory) or --iv-task (extract one), not both")
    if tuned is None:
        raise InputError("the IV diagnosis compares a base and a tuned model: give TUNED too")
    iv = InstructionVector.load(iv_dir) if iv_dir is not None else None
    task = iv_task if iv is None else str(iv.meta.get("task"))
    if iv_task is not None and iv_task not in IN_CONTEXT_TASKS:
        raise InputError(f"--iv-task must be a built-in in-context task ({', '.join(IN_CONTEXT_TASKS)}), "
                         f"got {iv_task!r}")
    if not any(it.task == task for it in items):
        raise InputError(f"the IV is for task {task!r} but the probe has no item of that task "
                         f"(it has {sorted({it.task for it in items})})")
    if iv is not None and (iv.injection != "residual" or iv.layer is None):
        raise InputError(f"{iv_dir}: the diagnosis needs an IV injected at a chosen residual layer")
    return iv, task


def check_options(tuned: Optional[str], probe: str, transforms: str, lexicon: list[str], n: int, seed: int,
                  iv_dir: Optional[Path], iv_task: Optional[str], out: Path, max_new_tokens: int,
                  batch_size: int, engine: str = "generate_ids") -> dict[str, Any]:
    """Every option, checked and resolved without loading a model."""
    check_choice("engine", engine, Engine)
    check_at_least("n", n, 1)
    check_at_least("seed", seed, 0)
    check_at_least("max_new_tokens", max_new_tokens, 1)
    check_at_least("batch_size", batch_size, 1)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a directory")
    lexicons = _lexicons(lexicon)
    names = parse_transforms(transforms, lexicons)
    ts = [get_transform(name, lexicons) for name in names]
    items = _items(probe, n, seed)
    iv, task = _iv_and_task(iv_dir, iv_task, tuned, items)
    return {"transforms": ts, "items": items, "iv": iv, "iv_task": task, "engine": engine}


@app.command("conjugate")
def conjugate_cmd(
    model: str = typer.Argument(..., help="the base model: alias (gemma-3-270m, smollm2-135m-instruct), directory or "
                                          "hub id"),
    tuned: Optional[str] = typer.Argument(None, help="its tuned version (a directory such as OUT/checkpoint-60)"),
    probe: str = typer.Option(",".join(DEFAULT_TASKS), "--probe", help="built-in in-context tasks (repeat, uppercase, "
                              "lowercase; comma-separated) or a .json/.jsonl probe file"),
    transforms: str = typer.Option("none,leet,piglatin,fr", "--transforms",
                                   help="comma-separated: none, leet, piglatin, fr, de, or a --lexicon name"),
    out: Path = typer.Option(..., "--out", help="directory for the tables, figures and stored runs (a rerun resumes)"),
    lexicon: list[str] = typer.Option([], "--lexicon", help="NAME=FILE: a translation transform through a JSON/JSONL "
                                      "lexicon of {input, output} pairs (fr/de: added to the built-in one)"),
    n: int = typer.Option(100, "--n", help="prompts per built-in task"),
    seed: int = typer.Option(0, "--seed", help="seeds the prompts and the bootstrap"),
    iv_dir: Optional[Path] = typer.Option(None, "--iv", help="an IV directory of the base model (ivkit extract) for "
                                          "the diagnosis"),
    iv_task: Optional[str] = typer.Option(None, "--iv-task", help="extract the base model's IV for this in-context "
                                          "task (into OUT/iv-TASK) and run the diagnosis"),
    max_new_tokens: int = typer.Option(10, "--max-new-tokens", help="greedy tokens per prompt"),
    batch_size: int = typer.Option(16, "--batch-size"),
    engine: str = typer.Option("generate_ids", "--engine", help="generate_ids (ivkit's generation, the reference) or "
                               "cached (the model's KV-cached generate under the IV; same tokens up to rounding, "
                               "several times faster; torch backend)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or info logs"),
):
    """Run the in-context-versus-instruction probe under each transform; write tables and figures."""
    try:
        opts = check_options(tuned, probe, transforms, lexicon, n, seed, iv_dir, iv_task, out, max_new_tokens,
                             batch_size, engine)
    except InputError as e:
        raise typer.BadParameter(str(e)) from None
    _setup(quiet)
    res = _run(model, tuned, opts, out, seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size,
               progress=not quiet)
    typer.echo(repr(res))
    typer.echo(f"wrote {out}/")


def _run(model: str, tuned: Optional[str], opts: dict[str, Any], out: Path, *, seed: int, max_new_tokens: int,
         batch_size: int, progress: bool) -> Any:
    from .diagnose import diagnose, extract_task_iv
    from .runner import conjugate

    res = conjugate(model, tuned, opts["items"], opts["transforms"], out=out, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, engine=opts["engine"], seed=seed, progress=progress)
    write_result(res, out)
    if opts["iv_task"] is None:
        return res
    iv = opts["iv"]
    if iv is None:
        from ..models.loading import load_model
        from .data import task_examples, write_json

        task_file = write_json(out / f"{opts['iv_task']}.json", task_examples(opts["iv_task"], seed=seed))
        iv = extract_task_iv(load_model(model), task_file, out=out / f"iv-{opts['iv_task']}", seed=seed,
                             progress=progress)
    items = [it for it in opts["items"] if it.task == opts["iv_task"]]
    diag = diagnose(model, tuned, items, opts["transforms"], iv, probe=res, out=out, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, engine=opts["engine"], seed=seed, progress=progress)
    write_diagnosis(diag, out)
    return diag


def write_result(res: Any, out: Path) -> None:
    """The probe's tables, JSON and figure (see the module docstring)."""
    atomic_write_text(out / "rates.csv", res.to_pandas().to_csv(index=False))
    if res.tuned is not None:
        atomic_write_text(out / "recovery.csv", res.recoveries().to_csv(index=False))
    atomic_write_json(out / "result.json", res.to_dict())
    to_html(res.plot(), out / "in_context.html", self_contained=False)


def write_diagnosis(diag: Any, out: Path) -> None:
    """The diagnosis's table, JSON and figures."""
    atomic_write_text(out / "diagnosis.csv", diag.to_pandas().to_csv(index=False))
    atomic_write_json(out / "diagnosis.json", {**diag.to_dict(), "verdict": diag.verdict(),
                                               "recoveries": [r.to_dict() for r in diag.recoveries()]})
    to_html(diag.plot(), out / "diagnosis.html", self_contained=False)
    to_html(diag.plot_profiles(), out / "alignment.html", self_contained=False)
    if diag.centred:
        to_html(diag.plot_profiles(centred=True), out / "alignment_centred.html", self_contained=False)


def _setup(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"


__all__ = ["app", "check_options", "conjugate_cmd", "write_diagnosis", "write_result"]
