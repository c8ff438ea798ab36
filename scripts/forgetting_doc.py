"""Writes docs/forgetting.md from a ``scripts/forgetting_study.py`` run directory (``doc`` command).

Every figure in the document is computed here from the run's files: the pilot's validation scores,
the noise floors, the training task's accuracy per checkpoint, and ``track/`` (one record per
checkpoint and held-apart task). Nothing is typed in by hand except the reading, which is kept
between the markers when the document is regenerated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ivkit.core.machine import machine_info

MARKER = "<!-- The reading below is written by hand and kept when the script regenerates the doc. -->"
PLACEHOLDER = "## What the runs show\n\n(Not written yet: read the tables, then write it here.)"


def _records(out: Path) -> pd.DataFrame:
    rows = []
    for f in sorted((out / "track").glob("*/*.json")):
        if f.parent.name == "reference" or f.name == "settings.json":
            continue
        r = json.loads(f.read_text())
        if "task" not in r:
            continue
        label = r["checkpoint"]
        seed, arm, step = ("s-1", "base", 0) if label == "base" else label.split("-")
        row = {k: v for k, v in r.items() if not isinstance(v, (list, dict))}
        row.update(seed=int(seed.removeprefix("s")), arm=arm, step=int(step),
                   peak_alignment=max(r["alignment_zero_shot"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _train_task(out: Path) -> pd.DataFrame:
    rows = []
    for f in sorted(out.glob("seed*/*/train_task_test.json")):
        seed, arm = int(f.parent.parent.name.removeprefix("seed")), f.parent.name
        for label, r in json.loads(f.read_text()).items():
            step = 0 if label == "base" else int(label.split("-")[1])
            rows.append({"seed": seed, "arm": arm, "step": step, "top1": r["top1"], "lo": r["ci"][0],
                         "hi": r["ci"][1], "loose": r["loose"], "n": r["n"]})
    return pd.DataFrame(rows)


def _fmt(x, lo=None, hi=None) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.2f}" + (f" ({lo:.2f}-{hi:.2f})" if lo is not None and hi is not None else "")


def forgetting_table(df: pd.DataFrame, final: int) -> list[str]:
    """Per task and seed: base -> final checkpoint of each arm, 10-shot and zero-shot + base IV."""
    lines = ["| task | seed | metric | base | plain | guided |", "|---|---|---|---|---|---|"]
    base = df[df.arm == "base"].set_index("task")
    for task in sorted(df.task.unique()):
        b = base.loc[task]
        for seed in _seeds(df):
            for m, label in (("few_shot", "10-shot"), ("few_shot_loose", "10-shot, loose"),
                             ("zero_shot_iv", "zero-shot + base IV"), ("zero_shot_own_iv", "zero-shot + own IV")):
                cells = []
                for arm in ("plain", "guided"):
                    r = df[(df.task == task) & (df.seed == seed) & (df.arm == arm) & (df.step == final)]
                    r = r.iloc[0] if len(r) else None
                    cells.append("-" if r is None else _fmt(r[m], r.get(f"{m}_lo"), r.get(f"{m}_hi")))
                if cells == ["-", "-"]:
                    continue
                lines.append(f"| {task} | {seed} | {label} | {_fmt(b[m], b.get(f'{m}_lo'), b.get(f'{m}_hi'))} | "
                             f"{cells[0]} | {cells[1]} |")
    return lines


def _seeds(df: pd.DataFrame) -> list[int]:
    """The seeds with at least one tracked fine-tuned checkpoint."""
    return sorted(int(s) for s in df[df.arm != "base"].seed.unique())


def forgotten(df: pd.DataFrame, final: int, metric: str = "few_shot") -> pd.DataFrame:
    """Per (seed, arm, task): the drop of ``metric`` from the base to the final checkpoint, and
    whether it is at least 0.2 with the two 95% intervals apart."""
    base = df[df.arm == "base"].set_index("task")
    rows = []
    for _, r in df[(df.arm != "base") & (df.step == final)].iterrows():
        b = base.loc[r.task]
        drop = b[metric] - r[metric]
        apart = r[f"{metric}_hi"] < b[f"{metric}_lo"]
        rows.append({"seed": r.seed, "arm": r.arm, "task": r.task, "drop": drop, "forgotten": drop >= 0.2 and apart})
    return pd.DataFrame(rows)


def similarity_table(df: pd.DataFrame, floors: dict, final: int) -> list[str]:
    lines = ["| task | rebuilt from disjoint prompts (noise floor) | plain, final | guided, final | "
             "peak alignment base / plain / guided | alignment with the training task's IV base / plain / guided |",
             "|---|---|---|---|---|---|"]
    base = df[df.arm == "base"].set_index("task")
    fin = df[(df.arm != "base") & (df.step == final)]
    foreign = [c for c in df.columns if c.startswith("alignment_to/")]
    for task in sorted(df.task.unique()):
        cos = {a: fin[(fin.task == task) & (fin.arm == a)]["iv_cosine"] for a in ("plain", "guided")}
        al = {a: fin[(fin.task == task) & (fin.arm == a)]["peak_alignment"] for a in ("plain", "guided")}
        fo = {a: fin[(fin.task == task) & (fin.arm == a)][foreign[0]] for a in ("plain", "guided")} if foreign else {}
        mean = lambda s: f"{s.mean():.3f}" if len(s) else "-"  # noqa: E731
        lines.append(f"| {task} | {floors['rebuilt'][task]:.3f} | {mean(cos['plain'])} | {mean(cos['guided'])} | "
                     f"{base.loc[task]['peak_alignment']:.3f} / {mean(al['plain'])} / {mean(al['guided'])} | " +
                     (f"{base.loc[task][foreign[0]]:.3f} / {mean(fo['plain'])} / {mean(fo['guided'])} |" if foreign
                      else "- |"))
    return lines


def markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A frame as a markdown table (pandas' own needs tabulate, which ivkit does not install)."""
    f = frame.reset_index() if index else frame
    cells = [[("" if pd.isna(v) else str(v)) for v in row] for row in f.itertuples(index=False)]
    head = [str(c) for c in f.columns]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] +
                      ["| " + " | ".join(r) + " |" for r in cells])


def matched(df: pd.DataFrame, tt: pd.DataFrame, tol: float = 0.03) -> pd.DataFrame:
    """Pairs of a plain and a guided checkpoint of one seed whose training-task accuracies are within
    ``tol``, with each one's mean drop in 10-shot top-1 (and loose) over the held-apart tasks."""
    base = df[df.arm == "base"].set_index("task")
    rows = []
    for seed in sorted(s for s in tt.seed.unique()):
        acc = tt[(tt.seed == seed) & (tt.step > 0)].set_index(["arm", "step"])["top1"]
        for (arm_p, sp), ap in acc.items():
            if arm_p != "plain":
                continue
            for (arm_g, sg), ag in acc.items():
                if arm_g != "guided" or abs(ap - ag) > tol:
                    continue
                drop = {}
                for arm, step in (("plain", sp), ("guided", sg)):
                    r = df[(df.seed == seed) & (df.arm == arm) & (df.step == step)].set_index("task")
                    if r.empty:
                        break
                    drop[arm] = ((base["few_shot"] - r["few_shot"]).mean(),
                                 (base["few_shot_loose"] - r["few_shot_loose"]).mean())
                if len(drop) == 2:
                    rows.append({"seed": seed, "plain step": sp, "guided step": sg, "train task plain": ap,
                                 "train task guided": ag, "drop plain": drop["plain"][0], "drop guided": drop["guided"][0],
                                 "drop plain, loose": drop["plain"][1], "drop guided, loose": drop["guided"][1],
                                 "guided / plain": drop["guided"][0] / drop["plain"][0] if drop["plain"][0] > 0 else None})
    return pd.DataFrame(rows)


def reduction(df: pd.DataFrame, final: int, metric: str = "few_shot") -> dict:
    """How much of plain fine-tuning's forgetting the guided arm avoids, at the last checkpoint:
    ``1 - mean drop (guided) / mean drop (plain)`` over every (seed, held-apart task) pair, with a
    95% paired bootstrap interval over those pairs (scipy, 4000 resamples, percentile)."""
    from scipy import stats

    base = df[df.arm == "base"].set_index("task")[metric]
    fin = df[(df.arm != "base") & (df.step == final)].set_index(["seed", "task", "arm"])[metric].unstack("arm")
    fin = fin.dropna(subset=["plain", "guided"])
    if fin.empty:
        return {}
    tasks = fin.index.get_level_values("task")
    plain = (base.loc[tasks].to_numpy() - fin["plain"].to_numpy())
    guided = (base.loc[tasks].to_numpy() - fin["guided"].to_numpy())

    def cut(p, g, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):  # a resample whose plain drops sum to 0
            return 1 - g.mean(axis=axis) / p.mean(axis=axis)

    res = stats.bootstrap((plain, guided), cut, paired=True, vectorized=True, n_resamples=4000, method="percentile",
                          random_state=0) if len(plain) > 1 else None
    return {"pairs": len(plain), "seeds": sorted(int(s) for s in set(fin.index.get_level_values("seed"))),
            "drop_plain": float(plain.mean()), "drop_guided": float(guided.mean()), "cut": float(cut(plain, guided)),
            "ci": None if res is None else [float(res.confidence_interval.low), float(res.confidence_interval.high)]}


def reduction_lines(df: pd.DataFrame, final: int) -> list[str]:
    lines = ["| metric | (seed, task) pairs | mean drop, plain | mean drop, guided | forgetting cut by (95% CI) |",
             "|---|---|---|---|---|"]
    for m, label in (("few_shot", "10-shot top-1"), ("few_shot_loose", "10-shot, loose"),
                     ("zero_shot_iv", "zero-shot + base IV")):
        r = reduction(df, final, m)
        if not r:
            continue
        ci = f" ({r['ci'][0]:.2f} to {r['ci'][1]:.2f})" if r["ci"] else ""
        lines.append(f"| {label} | {r['pairs']} (seeds {', '.join(map(str, r['seeds']))}) | {r['drop_plain']:.3f} | "
                     f"{r['drop_guided']:.3f} | {r['cut']:.2f}{ci} |")
    return lines


def timing_lines(df: pd.DataFrame, timing: dict) -> list[str]:
    """Compute time per seed: the tracking seconds summed from the records (each measurement
    records its own), and what ``run`` recorded for seeds it ran start to finish in one call."""
    lines = ["| seed | tracking, summed over its records (s) | fine-tune plain / guided (s) | both arms fine-tuned and "
             "tracked in one call (s) |",
             "|---|---|---|---|"]
    for seed in _seeds(df):
        track = df[(df.seed == seed) & (df.arm != "base")]["seconds"].sum()
        ft = [timing.get(f"seed{seed}/{a}/finetune") for a in ("plain", "guided")]
        ft_s = " / ".join("-" if v is None or v < 30 else f"{v:.0f}" for v in ft)  # < 30 s: loaded, not trained
        parts = [*ft, timing.get(f"seed{seed}/track")]
        total = timing.get(f"seed{seed}/total") or (sum(parts) if all(p and p >= 30 for p in parts) else None)
        lines.append(f"| {seed} | {track:.0f} | {ft_s} | {'-' if not total or total < 300 else f'{total:.0f}'} |")
    return lines


def claims(df: pd.DataFrame, floors: dict, final: int) -> list[str]:
    """Seed 002's two halves, per task and arm, as measured: is the IV still there (its cosine at
    least the noise floor), and is it still used (the zero-shot residual's alignment with it, and
    whether injecting it still works when the 10-shot accuracy has dropped)?"""
    base = df[df.arm == "base"].set_index("task")
    lines = ["| task | arm | IV cosine (floor) | peak alignment base -> final | 10-shot base -> final | "
             "zero-shot + base IV base -> final | zero-shot + own IV (re-swept) final |", "|---|---|---|---|---|---|---|"]
    fin = df[(df.arm != "base") & (df.step == final)]
    for task in sorted(df.task.unique()):
        b = base.loc[task]
        for arm in ("plain", "guided"):
            r = fin[(fin.task == task) & (fin.arm == arm)]
            if r.empty:
                continue
            m = r.mean(numeric_only=True)
            lines.append(f"| {task} | {arm} | {m.iv_cosine:.3f} ({floors['rebuilt'][task]:.3f}) | "
                         f"{b.peak_alignment:.3f} -> {m.peak_alignment:.3f} | {b.few_shot:.2f} -> {m.few_shot:.2f} | "
                         f"{b.zero_shot_iv:.2f} -> {m.zero_shot_iv:.2f} | {m.zero_shot_own_iv:.2f} |")
    return lines


def write_doc(args, out: Path, doc: Path) -> None:
    df, tt = _records(out), _train_task(out)
    mach = machine_info()
    floors = json.loads((out / "floors.json").read_text())
    final = int(df[df.arm != "base"].step.max())
    pilot = {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "pilot").glob("*/valid.json"))}
    timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {}
    plots = doc.with_suffix("")
    figures = write_figures(out, plots)
    drops = forgotten(df, final)
    summary = drops.groupby(["seed", "arm"]).agg(mean_drop=("drop", "mean"), forgotten=("forgotten", "sum"),
                                                 tasks=("task", "count")).round(3)
    reading = PLACEHOLDER
    if doc.exists() and MARKER in doc.read_text():
        reading = doc.read_text().split(MARKER, 1)[1].strip()
    text = "\n".join([
        "# Forgetting, and IV-guided training against it",
        "",
        f"Generated by `python scripts/forgetting_study.py doc` from the runs of `python scripts/forgetting_study.py "
        f"run --seeds {','.join(str(s) for s in _seeds(df))} --lr {args.lr:g} --steps "
        f"{args.steps} --every {args.every}` (after `pilot`). SmolLM2-135M-Instruct (its Q4_1 GGUF weights, "
        f"de-quantised to float32), {mach['cpu']} ({mach['cores']} cores, CPU only), Python {mach['python']}, torch "
        f"{mach['torch']}, transformers {mach['transformers']}, ivkit {mach['ivkit']}; seeds as listed, same seed, same "
        f"numbers.",
        "",
        _setup_text(args),
        "",
        "## Choosing the set-up (validation queries)",
        "",
        *_pilot_lines(pilot),
        "",
        "## The training task",
        "",
        *_train_lines(tt),
        "",
        "## Held-apart tasks: base model against the last checkpoint",
        "",
        *forgetting_table(df, final),
        "",
        "Forgotten (a drop of at least 0.2 in 10-shot top-1, the 95% intervals apart), per seed and arm, and the "
        "mean drop over the held-apart tasks:",
        "",
        markdown(summary),
        "",
        "## Plain against IV-guided, at equal training-task accuracy (within 0.03)",
        "",
        (markdown(matched(df, tt).round(3), index=False) if not matched(df, tt).empty else
         "(no pair of checkpoints within 0.03)"),
        "",
        "Over every seed and held-apart task, at the last checkpoint (the target was a cut of at least half):",
        "",
        *reduction_lines(df, final),
        "",
        "## Is the IV still there, and still used?",
        "",
        *similarity_table(df, floors, final),
        "",
        "Means over seeds, at the last checkpoint:",
        "",
        *claims(df, floors, final),
        "",
        "Cosines between the base model's IVs of different tasks (the other end of the scale):",
        "",
        markdown(pd.DataFrame(floors["between"]).round(3)),
        "",
        "Figures (plotly; every checkpoint of every seed and arm): " + ", ".join(
            f"[{name}]({plots.name}/{f})" for name, f in figures.items()) + ".",
        "",
        "## Compute time",
        "",
        f"{mach['cpu']}, {mach['cores']} cores. A whole seed (both arms fine-tuned, the "
        "training task scored, every checkpoint tracked) is timed only when `run` did all of it in one call; the "
        "tracking seconds are summed from the measurements' own records, so they hold for seeds run in pieces too "
        "(some of which ran beside other jobs, which slows them).",
        "",
        *timing_lines(df, timing),
        "",
        MARKER,
        "",
        reading,
    ])
    doc.write_text(text + "\n")


def write_figures(out: Path, plots: Path) -> dict[str, str]:
    """The tracking figures from the stored records (``ivkit.Tracking``'s own plots); stale files go."""
    from ivkit.analysis.tracking import Tracking
    from ivkit.core.plots import to_html

    records = [json.loads(f.read_text()) for f in sorted((out / "track").glob("*/*.json"))
               if f.parent.name != "reference" and f.name != "settings.json"]
    order = {"base": (-1, "", 0)}
    key = lambda r: order.get(r["checkpoint"]) or (int(r["checkpoint"].split("-")[0][1:]), r["checkpoint"].split("-")[1],  # noqa: E731
                                                   int(r["checkpoint"].split("-")[2]))
    tr = Tracking(sorted([r for r in records if "task" in r], key=key), "fixed")
    plots.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.html"):
        old.unlink()
    figures = {"accuracy and IV cosine": "tracking.html"}
    to_html(tr.plot(), plots / "tracking.html", self_contained=False)
    for task in sorted({r["task"] for r in tr.records}):
        figures[f"alignment, {task}"] = f"alignment_{task}.html"
        to_html(tr.plot_alignment(task), plots / f"alignment_{task}.html", self_contained=False)
    return figures


def _setup_text(args) -> str:
    return (f"The model is fully fine-tuned on the training split of `{args.train_task}` (instruction prompts, "
            f"the loss on the answer), {args.steps} steps at learning rate {args.lr:g}, batch {args.batch_size}, "
            f"a checkpoint every {args.every}: once plainly and once IV-guided (the `{args.train_task}` IV of the "
            f"base model, ivkit's defaults: alpha 20 at the last prompt token, 0.1 over the answer, T=2, the "
            f"progressive schedule), with the same data order per seed. Held-apart tasks are measured on their "
            f"test splits (100 queries): clean 10-shot and zero-shot + the base model's IV (its layer and scale), "
            f"first-token top-1 and 'loose' (the answer's first token up to case: a changed format is not a lost "
            f"skill), each with its 95% Wilson interval; 'own IV' is the IV rebuilt on the checkpoint from the base "
            f"IV's heads with its layer and scale chosen on validation queries.")


def _pilot_lines(pilot: dict) -> list[str]:
    if not pilot:
        return ["(no pilot run)"]
    tasks = [k for k in next(iter(next(iter(pilot.values())).values())) if k != "train_task_valid"]
    lines = ["| learning rate | checkpoint | training task | " + " | ".join(tasks) + " |",
             "|---|---|---|" + "---|" * len(tasks)]
    for lr, rows in pilot.items():
        for label, row in rows.items():
            lines.append(f"| {lr.removeprefix('lr')} | {label} | {row['train_task_valid']['top1']:.2f} | " +
                         " | ".join(f"{row[t]['top1']:.2f} / {row[t]['loose']:.2f}" for t in tasks) + " |")
    return ["10-shot top-1 / loose top-1 on validation queries, plain fine-tuning, seed 0:", "", *lines]


def _train_lines(tt: pd.DataFrame) -> list[str]:
    if tt.empty:
        return ["(not measured)"]
    lines = ["| seed | arm | step | top-1 (95% CI) | loose |", "|---|---|---|---|---|"]
    for _, r in tt.sort_values(["seed", "arm", "step"]).iterrows():
        lines.append(f"| {r.seed} | {r.arm} | {r.step} | {_fmt(r.top1, r.lo, r.hi)} | {r.loose:.2f} |")
    return [f"Instruction prompts of its test split (n={int(tt.n.iloc[0])}):", "", *lines]

