#!/usr/bin/env python
"""The results report: one recipe, chosen on the validation split, over every built-in task each
embedded model can do.

    python scripts/results_report.py --out results/report --doc docs/results.md

For each model (``--models``, default both embedded ones):

1. **screen**: clean 10-shot first-token top-1 of every built-in task on ``--screen-prompts``
   validation queries; a task is reported if it reaches ``--min-few-shot`` (0.5). Validation
   queries only: the test split plays no part in what is reported.
2. **extract** with ``--recipe auto`` (ivkit chooses the ranking, the heads, k and the injection on
   the validation split and records its choice in ``iv.json``); resumable.
3. **evaluate** the six conditions on ``--prompts`` test queries (1000: the whole test split), with
   95% Wilson intervals, on all queries and on the queries clean 10-shot gets right.
4. **write** ``--doc``: per model the table, the chosen recipe and its seconds per stage, the head
   heat map of each task (``docs/results/``), and where the recipe falls short of the
   function-vectors bar (zero-shot + IV at 0.8 or more on the queries clean 10-shot gets right).

Everything is stored under ``--out`` as it is computed, so an interrupted run resumes; the page
is written from the stored files only (``--doc-only`` rewrites it without computing). The
repository keeps each finished task's small files in ``results/report`` (``iv.json``,
``iv.safetensors``, ``evaluation.json``, ``indirect_effects.json``, ``layer_sweep.json``; its
``.gitignore`` leaves out the stage caches), so the page can be rewritten, the IVs loaded
(``ivkit.InstructionVector.load("results/report/smollm2-135m-instruct/capitalize")``) and a run
resumed on another machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import ivkit  # noqa: E402
from ivkit.core.io import atomic_write_json  # noqa: E402
from ivkit.core.machine import machine_info  # noqa: E402
from ivkit.core.prompts import encode_prompts, sample_prompts  # noqa: E402

log = logging.getLogger("results_report")
MODELS = ["smollm2-135m-instruct", "gemma-3-270m"]
WEIGHTS = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct, its Q4_1 GGUF weights de-quantised to float32",
           "gemma-3-270m": "gemma-3-270m (a base model), its Q4_K_M GGUF weights de-quantised to float32"}
FV_BAR = 0.8
CONDITIONS = ["zero_shot", "zero_shot_iv", "shuffled", "shuffled_iv", "few_shot", "random_control"]


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tasks", default="all", help="comma-separated tasks (names or files), or all built-in ones")
    ap.add_argument("--out", type=Path, default=Path("results/report"))
    ap.add_argument("--doc", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--min-few-shot", type=float, default=0.5)
    ap.add_argument("--screen-prompts", type=int, default=60)
    ap.add_argument("--prompts", type=int, default=1000, help="test queries per condition (1000: the whole split)")
    ap.add_argument("--options", default="{}", help="extract options as JSON (the tests pass small ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--doc-only", action="store_true", help="write the page from what --out holds")
    return ap.parse_args()


def _slug(name: str) -> str:
    return Path(name).stem if name.endswith(".json") else Path(name).name


def screen(model, tasks: list[str], path: Path, n: int, seed: int, shots: int) -> dict:
    """Clean 10-shot top-1 per task on validation queries (stored, resumed)."""
    done = json.loads(path.read_text()) if path.exists() else {}
    for t in tasks:
        if t in done:
            continue
        task = ivkit.load_task(t)
        sp = task.split(seed)
        enc = encode_prompts(model, sample_prompts(sp.valid, style="few_shot", demo_pool=sp.train, shots=shots, n=n,
                                                   seed=seed, stream=3))
        s = ivkit.score_prompts(model, enc)
        done[t] = {"few_shot_valid": s.accuracy(1), "n": len(enc)}
        atomic_write_json(path, done)
        log.info("screen %s: %.2f", t, done[t]["few_shot_valid"])
    return done


def task_run(model, task: str, d: Path, args, options: dict) -> dict:
    """Extract (auto recipe) and evaluate one task; the evaluation is stored in ``d/evaluation.json``."""
    path = d / "evaluation.json"
    if path.exists():
        return json.loads(path.read_text())
    res = ivkit.extract(model, task, out=d, recipe="auto", seed=args.seed, progress=False, **options)
    t0 = time.perf_counter()
    ev = ivkit.evaluate_iv(model, task, res.iv, n_prompts=args.prompts, progress=False)
    record = {"evaluation": ev.to_dict(), "evaluate_seconds": round(time.perf_counter() - t0, 1),
              "date": datetime.date.today().isoformat()}
    atomic_write_json(path, record)
    return record


def compute(args) -> None:
    options = json.loads(args.options)
    tasks = ivkit.list_tasks() if args.tasks == "all" else args.tasks.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "machine.json", {**machine_info(), "options": options, "seed": args.seed,
                                                  "prompts": args.prompts, "min_few_shot": args.min_few_shot,
                                                  "screen_prompts": args.screen_prompts})
    for name in args.models.split(","):
        mdir = args.out / _slug(name)
        model = ivkit.load_model(name)
        scr = screen(model, tasks, mdir / "screen.json", args.screen_prompts, args.seed, options.get("shots", 10))
        for t in [t for t in tasks if scr[t]["few_shot_valid"] >= args.min_few_shot]:
            t0 = time.perf_counter()
            task_run(model, t, mdir / _slug(t), args, options)
            log.info("%s %s: %.0f s", name, t, time.perf_counter() - t0)


def _tasks(mdir: Path, min_fs: float) -> tuple[list[str], list[str]]:
    """The tasks that pass the screen, and those of them with a stored evaluation."""
    scr = json.loads((mdir / "screen.json").read_text())
    kept = [t for t, r in scr.items() if r["few_shot_valid"] >= min_fs]
    return kept, [t for t in kept if (mdir / _slug(t) / "evaluation.json").exists()]


def _ci(r: dict, key: str) -> str:
    v, lo, hi = r.get(key), r.get(f"{key}_lo"), r.get(f"{key}_hi")
    if v is None:
        return "-"
    return f"{v:.2f}" + (f" ({lo:.2f}-{hi:.2f})" if lo is not None and hi is not None else "")


def model_section(name: str, mdir: Path, figures: Path, doc_dir: Path, min_fs: float) -> list[str]:
    scr = json.loads((mdir / "screen.json").read_text())
    kept, run = _tasks(mdir, min_fs)
    lines = [f"## {name}", "", f"Weights: {WEIGHTS.get(name, name)}.", "",
             f"Screened ({len(kept)} of {len(scr)} built-in tasks reach {min_fs:g} with clean 10-shot prompts on "
             f"validation queries): " + ", ".join(f"{t} {r['few_shot_valid']:.2f}" for t, r in sorted(scr.items())) + ".",
             "", "| task | n (ICL-right) | zero-shot | **zero-shot + IV** | shuffled | shuffled + IV | clean 10-shot | "
             "random | **zero-shot + IV, ICL-right** | shuffled + IV, ICL-right | FV bar |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    recipes = ["", "*reference heads*: the top 10 of the shuffled ranking (the function-vectors recipe's heads), with "
               "the injection the same sweep finds best for them; both validation columns are on the same queries.", "",
               "| task | chosen on validation: selection, ranking, k | injection | valid queries | valid top-1, chosen | "
               "valid top-1, reference heads | seconds: filter+means / AIE / selection+sweep / evaluate | heads |",
               "|---|---|---|---|---|---|---|---|"]
    short, reach, met, unknown, edge = [], [], [], [], []
    for t in kept:
        d = mdir / _slug(t)
        if not (d / "evaluation.json").exists():
            lines.append(f"| {_slug(t)} | not run yet |" + " |" * 9)
            continue
        ev = json.loads((d / "evaluation.json").read_text())
        e, meta = ev["evaluation"], json.loads((d / "iv.json").read_text())
        r = e["detail"]
        icl = r["zero_shot_iv"].get("top1_icl_correct")
        hi = r["zero_shot_iv"].get("top1_icl_correct_hi")
        bar = "-" if icl is None else "meets" if icl >= FV_BAR else "short" if hi is None or hi < FV_BAR else \
            "short (interval reaches it)"
        (unknown if icl is None else met if bar == "meets" else short if bar == "short" else reach).append(
            _slug(t) if icl is None else f"{_slug(t)} {_ci(r['zero_shot_iv'], 'top1_icl_correct')}")
        lines.append(f"| {_slug(t)} | {e['n']} ({e.get('n_icl_correct')}) | " + " | ".join(
            _ci(r[c], "top1") if c != "zero_shot_iv" else f"**{_ci(r[c], 'top1')}**" for c in CONDITIONS)
            + f" | **{_ci(r['zero_shot_iv'], 'top1_icl_correct')}** | {_ci(r['shuffled_iv'], 'top1_icl_correct')} | "
            f"{bar} |")
        if _at_top_scale(meta):
            edge.append(_slug(t))
        chosen = (meta.get("recipe") or {}).get("chosen", {})
        tm = meta.get("timings", {})
        sel = (meta.get("layer_selection") or {})
        fig = figures / f"{_slug(name)}_{_slug(t)}_heads.html"
        heads = f"[heat map]({os.path.relpath(fig, doc_dir)})" if fig.exists() else "-"
        recipes.append(
            f"| {_slug(t)} | {chosen.get('selection')}, {chosen.get('ranking')}, {chosen.get('k')} | "
            f"{_injection(meta)} | {sel.get('n', '-')} | {_fmt(sel.get('top1'))} | {_fmt(reference_valid_top1(meta))} | "
            f"{tm.get('filter', 0) + tm.get('mean_activations', 0):.0f} / {tm.get('indirect_effects', 0):.0f} / "
            f"{tm.get('greedy', 0) + tm.get('build', 0) + tm.get('layer_sweep', 0):.0f} / {ev['evaluate_seconds']:.0f} | "
            f"{heads} |")
    total = sum(_task_seconds(mdir / _slug(t)) for t in run)
    recipes.append("")
    recipes.append(f"Stage seconds summed over the {len(run)} tasks run: {total / 60:.0f} min (extraction and "
                   "evaluation, not screening).")
    bar = f"the function-vectors bar (zero-shot + IV at {FV_BAR} or more on the queries clean 10-shot gets right)"
    verdict = [f"Meets {bar}: {', '.join(met) or 'none'}.",
               f"Short of it, with the 95% interval below {FV_BAR}: {', '.join(short) or 'none'}.",
               f"Short of it, but the 95% interval reaches {FV_BAR} (not shown to fall short): "
               f"{', '.join(reach) or 'none'}."]
    if edge:
        verdict.append(f"Chose the largest scale of the grid: {', '.join(edge)}; the validation optimum may lie beyond "
                       "it (a wider grid was not tried here; `ivkit extract --scales` sets it).")
    if unknown:
        verdict.append(f"Not measurable (clean 10-shot gets no test query right): {', '.join(unknown)}.")
    if len(run) < len(kept):
        verdict.append(f"Not run yet ({len(kept) - len(run)} of {len(kept)}; the same command resumes): "
                       f"{', '.join(_slug(t) for t in kept if t not in run)}.")
    return lines + recipes + ["", *(f"- {v}" for v in verdict), ""]


def reference_valid_top1(meta: dict) -> float | None:
    """The validation top-1 the auto recipe recorded for the reference heads (top 10 of the
    shuffled ranking, best injection), or None when that candidate was not among its candidates."""
    for c in (meta.get("recipe") or {}).get("candidates", []):
        if (c.get("selection"), c.get("ranking"), c.get("k")) == ("top_k", "shuffled", 10):
            return c.get("valid_top1")
    return None


def _at_top_scale(meta: dict) -> bool:
    """Whether the chosen scale is the largest the validation sweep tried (the optimum may lie beyond)."""
    scales = (meta.get("layer_selection") or {}).get("scales")
    return bool(scales) and meta.get("scale") is not None and float(meta["scale"]) >= max(scales)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _injection(meta: dict) -> str:
    """``residual, layer L, scale S`` or ``heads, scale S`` (each head at its own layer)."""
    scale = f"{float(meta.get('scale')):g}" if meta.get("scale") is not None else "-"
    if meta.get("injection") == "heads":
        return f"heads, scale {scale}"
    return f"{meta.get('injection')}, layer {meta.get('layer')}, scale {scale}"


def _task_seconds(d: Path) -> float:
    """A task's stage seconds (extraction stages and evaluation), 0 when it has not run."""
    if not (d / "evaluation.json").exists():
        return 0.0
    tm = json.loads((d / "iv.json").read_text()).get("timings", {})
    return sum(float(v) for v in tm.values()) + json.loads((d / "evaluation.json").read_text())["evaluate_seconds"]


def _dates(out: Path, models: list[str]) -> str:
    days = sorted({json.loads(p.read_text()).get("date", "") for n in models
                   for p in (out / _slug(n)).glob("*/evaluation.json")} - {""})
    return "-" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def write_figures(mdir: Path, name: str, figures: Path) -> None:
    """Each task's AIE heat map, from its stored effects (plotly.js from the CDN)."""
    from ivkit.core.plots import to_html
    from ivkit.mediation import IndirectEffects

    figures.mkdir(parents=True, exist_ok=True)
    for d in sorted(p for p in mdir.iterdir() if (p / "indirect_effects.json").exists()):
        fig = IndirectEffects.load(d / "indirect_effects.json").plot()
        to_html(fig, figures / f"{_slug(name)}_{d.name}_heads.html", self_contained=False)


def summary_section(out: Path, models: list[str], min_fs: float) -> list[str]:
    """One line per model: the tasks run, the range of zero-shot + IV on ICL-right queries, and
    how many meet the function-vectors bar."""
    lines = ["## In short", "", f"The screen: clean 10-shot top-1 of {min_fs:g} or more on validation queries.", ""]
    for n in models:
        mdir = out / _slug(n)
        kept, run = _tasks(mdir, min_fs)
        vals = [json.loads((mdir / _slug(t) / "evaluation.json").read_text())["evaluation"]["detail"]["zero_shot_iv"]
                .get("top1_icl_correct") for t in run]
        vals = [v for v in vals if v is not None]
        so_far = "" if len(run) == len(kept) else f" ({len(run)} run so far)"
        head = f"- **{n}**: {len(kept)} tasks pass the screen{so_far}"
        if not vals:
            lines.append(head + ("." if not run else "; on none does clean 10-shot get a test query right, so none is "
                                 "measured against the bar."))
            continue
        gains = []
        for t in run:
            meta = json.loads((mdir / _slug(t) / "iv.json").read_text())
            ref, got = reference_valid_top1(meta), (meta.get("layer_selection") or {}).get("top1")
            if ref is not None and got is not None:
                gains.append(got - ref)
        gain = "" if not gains else (
            f"; the chosen IV's validation top-1 is {min(gains):.2f}-{max(gains):.2f} above that of the reference "
            f"heads (top 10 of the shuffled ranking), a candidate the recipe also tried")
        lines.append(f"{head}; zero-shot + IV on ICL-right queries {min(vals):.2f}-{max(vals):.2f}; "
                     f"{sum(v >= FV_BAR for v in vals)} of {len(vals)} reach the function-vectors bar ({FV_BAR})"
                     f"{gain}.")
    return lines + [""]


def comparison_section(out: Path, models: list[str]) -> list[str]:
    """The tasks every model was evaluated on, side by side: how much of clean 10-shot each
    model's IV recovers zero-shot (on the queries clean 10-shot gets right), and what the recipe
    chose for it."""
    if len(models) < 2:
        return []
    runs = {n: {d.name: d for d in (out / _slug(n)).iterdir() if (d / "evaluation.json").exists()} for n in models}
    shared = sorted(set.intersection(*(set(r) for r in runs.values())))
    if not shared:
        return []
    lines = ["## The same task on both models", "",
             "Zero-shot + IV on the queries clean 10-shot gets right (the share of in-context behaviour the IV "
             "recovers without demonstrations), zero-shot + IV over clean 10-shot on all queries, and the recipe "
             "chosen on validation for each model.", "",
             "| task | " + " | ".join(f"{n}: zero-shot + IV, ICL-right | {n}: IV / 10-shot | {n}: chosen recipe"
                                    for n in models) + " |",
             "|---|" + "---|---|---|" * len(models)]
    for t in shared:
        cells = []
        for n in models:
            detail = json.loads((runs[n][t] / "evaluation.json").read_text())["evaluation"]["detail"]
            ev, fs = detail["zero_shot_iv"], detail.get("few_shot", {}).get("top1")
            meta = json.loads((runs[n][t] / "iv.json").read_text())
            ch = (meta.get("recipe") or {}).get("chosen", {})
            ratio = f"{ev['top1'] / fs:.2f}" if fs and ev.get("top1") is not None else "-"
            cells += [_ci(ev, "top1_icl_correct"), ratio,
                      f"{ch.get('selection')}, {ch.get('ranking')}, k={ch.get('k')}, {meta.get('injection')}"]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines + [""]


def _exploration_link(doc: Path) -> str:
    if not (doc.parent / "exploration.md").exists():
        return ""
    return (" How these candidates were found, including recipes tried per task after seeing test numbers, is "
            "[the recipe exploration](exploration.md).")


def write_doc(args) -> None:
    if not (args.out / "machine.json").exists():
        raise SystemExit(f"{args.out} holds no machine.json: nothing was computed there; run without --doc-only first")
    m = json.loads((args.out / "machine.json").read_text())
    figures = args.doc.parent / args.doc.stem
    models = [n for n in args.models.split(",") if (args.out / _slug(n) / "screen.json").exists()]
    lines = ["# Results: one recipe, chosen on validation", "",
             f"Generated by `python scripts/results_report.py --out {args.out} --doc {args.doc}`: every built-in task "
             f"each embedded model does at {m['min_few_shot']:g} or better with clean 10-shot prompts (validation "
             f"queries), extracted with `--recipe auto` (the ranking, the heads, k and the injection chosen on the "
             f"validation split, nothing per task by hand) and evaluated on {m['prompts']} test queries at most "
             f"(the whole split when it is smaller). Seed {m['seed']}; computed {_dates(args.out, models)}.", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, CPU only; Python {m['python']}, torch "
             f"{m['torch']}, transformers {m['transformers']}, ivkit {m['ivkit']} (installed from the lock). Tasks ran in "
             f"processes of {m['threads']} torch thread{'s' if m['threads'] != 1 else ''}, at most two side by side; "
             f"seconds are wall time of the process that ran the task.", "",
             "The auto recipe's candidates: the top 3, 5, 10 and 20 heads of each ranking (AIE on shuffled 10-shot "
             "prompts, and on zero-shot prompts) and every prefix of the greedy path (at most 8 heads chosen together, "
             "from the top 15 of each ranking, for zero-shot top-1 on training queries); each injected as a residual "
             "vector (every layer x scale 1-4) or head by head (scale 1-4). The candidate with the best validation "
             "top-1 (then mean answer probability) is the IV." + _exploration_link(args.doc), "",
             "Columns: first-token top-1 with 95% Wilson intervals; *ICL-right* are the test queries clean 10-shot "
             "answers right (the function-vectors protocol); *random* adds a random vector of the IV's norm.", ""]
    lines += summary_section(args.out, models, m["min_few_shot"])
    for name in models:
        write_figures(args.out / _slug(name), name, figures)
        lines += model_section(name, args.out / _slug(name), figures, args.doc.parent, m["min_few_shot"])
    lines += comparison_section(args.out, models)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text("\n".join(lines) + "\n")


def main() -> None:
    args = _args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if not args.doc_only:
        compute(args)
    write_doc(args)


if __name__ == "__main__":
    main()
