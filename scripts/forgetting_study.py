#!/usr/bin/env python
"""Fine-tune SmolLM2-135M-Instruct on one narrow task and track held-apart tasks' IVs.

    python scripts/forgetting_study.py --out runs/forgetting --doc docs/forgetting.md

1. Fine-tunes the model on instruction-formatted English->French word translation
   (``ivkit finetune``), saving a checkpoint every ``--save-every`` steps.
2. Tracks held-apart tasks across the base model and every checkpoint (``ivkit.track`` in
   ``rerank`` mode): zero-shot, 10-shot and zero-shot + the base model's IV accuracy; the cosine
   to the base IV of each checkpoint's IV, built both from the base model's heads and from the
   checkpoint's own top-10; the top-10 Jaccard overlap and the AIE Spearman correlation with the
   base ranking; and the layer profile of the residual/IV alignment.
3. Writes the table and links to the plots into ``--doc``.

Everything is seeded; rerunning resumes finished steps from ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

TASKS = ["capitalize", "lowercase_first_letter", "capitalize_first_letter", "choose_last_of_3", "color_v_animal_3"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--train-task", default="english-french")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--prompts", type=int, default=60, help="test queries per accuracy")
    ap.add_argument("--mean-prompts", type=int, default=60)
    ap.add_argument("--alignment-prompts", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/forgetting")
    ap.add_argument("--doc", default=None)
    args = ap.parse_args()
    # The doc names every option this run changed, so that its command reproduces it.
    args.changed = {k: v for k, v in vars(args).items() if v != ap.get_default(k) or k in ("out", "doc")}

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import ivkit

    out = Path(args.out)
    t0 = time.perf_counter()
    base = ivkit.load_model(args.model)
    base_dir = out / "base"
    if not base_dir.exists():  # written whole, then renamed: an interrupted save leaves no half directory
        import shutil
        import tempfile

        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="base.", dir=out))
        base.model.save_pretrained(tmp)
        base.tokenizer.save_pretrained(tmp)
        os.replace(tmp, base_dir)
        shutil.rmtree(tmp, ignore_errors=True)
    ft = ivkit.finetune(base, args.train_task, out / "run", steps=args.steps, save_every=args.save_every,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False)
    del base
    # The speed recorded when the steps ran (a resumed rerun trains nothing).
    state = json.loads((ft.checkpoints[-1] / "trainer_state.json").read_text())
    sps = state["steps_per_second"]

    series = ivkit.CheckpointSeries.from_trainer_dir(out / "run", include_base=base_dir)
    tasks = args.tasks.split(",")
    tr = ivkit.track(series, tasks, mode="rerank", out=out / "track-rerank", n_prompts=args.prompts,
                     mean_prompts=args.mean_prompts, alignment_prompts=args.alignment_prompts, seed=args.seed,
                     progress=False)
    tr.save(out / "report")
    df = tr.to_pandas()
    summary = {"finetune_seconds": round(args.steps / sps, 1), "track_seconds": round(tr.seconds, 1),
               "steps_per_second": round(sps, 3), "final_loss": ft.losses[-1][1], "first_loss": ft.losses[0][1],
               "wall_seconds_this_run": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary))
    print(df.to_string(index=False))
    if args.doc:
        write_doc(Path(args.doc), args, df, tr, summary, out)


def write_doc(doc: Path, args, df, tr, summary, out: Path) -> None:
    """Write the generated part of ``doc`` (command, table, plots) and keep its hand-written reading."""
    cmd = "python scripts/forgetting_study.py " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                          for k, v in args.changed.items())
    lines = ["| checkpoint | task | zero-shot | 10-shot | zero-shot + base IV | IV cosine, base heads | "
             "IV cosine, own top-10 | top-10 Jaccard | AIE Spearman | peak alignment, zero-shot | "
             "peak alignment, 10-shot |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['checkpoint']} | {r['task']} | {r['zero_shot']:.2f} | {r['few_shot']:.2f} | "
                     f"{r['zero_shot_iv']:.2f} | {r['iv_cosine_fixed_heads']:.3f} | {r['iv_cosine']:.3f} | "
                     f"{r['head_jaccard']:.2f} | {r['aie_spearman']:.2f} | {r['peak_alignment_zero_shot']:.3f} | "
                     f"{r['peak_alignment_few_shot']:.3f} |")
    from ivkit.core.plots import to_html

    plots = doc.with_suffix("")  # docs/forgetting.md -> docs/forgetting/
    plots.mkdir(parents=True, exist_ok=True)
    to_html(tr.plot(), plots / "tracking.html", self_contained=False)
    for task in df["task"].unique():
        to_html(tr.plot_alignment(task), plots / f"alignment_{task}.html", self_contained=False)
        to_html(tr.plot_heads(task), plots / f"heads_{task}.html", self_contained=False)
    reading = PLACEHOLDER
    if doc.exists() and MARKER in doc.read_text():
        reading = doc.read_text().split(MARKER, 1)[1].strip()
    text = DOC.format(analysis=MARKER + "\n\n" + reading, cmd=cmd, table="\n".join(lines), train=args.train_task, steps=args.steps, lr=args.lr, batch=args.batch_size,
                      every=args.save_every, **summary, report=out / "report", plots=plots.name)
    doc.write_text(text + "\n")


#: Everything after this line of the doc is the human reading of the run; regenerating the doc
#: keeps it (revise it when the numbers change).
MARKER = "<!-- The reading below is written by hand and kept when the script regenerates the doc. -->"
PLACEHOLDER = "## What this run shows\n\n(Not written yet: read the table and the plots, then write it here.)"

DOC = """# Forgetting: does fine-tuning erase instruction vectors, or stop the model using them?

Generated by `{cmd}`.

SmolLM2-135M-Instruct was fully fine-tuned on instruction-formatted `{train}` pairs for {steps}
steps at learning rate {lr:g}, batch size {batch} (a checkpoint every {every}; loss {first_loss:.2f} -> {final_loss:.2f}; {steps_per_second} steps/s on
two CPU cores, {finetune_seconds} s), then each held-apart task was tracked across the base model and
every checkpoint ({track_seconds} s), re-ranking heads on each checkpoint.

Columns: accuracies are first-token top-1 on the test split; "zero-shot + base IV" injects the
base model's IV (its layer and scale). "IV cosine, base heads" compares the IV rebuilt on each
checkpoint from the base model's top-10 heads (means recomputed on the same prompts) with the base
IV; "IV cosine, own top-10" does the same with the checkpoint's own top-10 by AIE (on the same
corrupted prompts); "top-10 Jaccard" and "AIE Spearman" compare that ranking with the base
model's. "Peak alignment" is the largest, over layers, mean cosine between the last-token
residual stream and the base IV.

{table}

Plots: [IV similarity and accuracy per task]({plots}/tracking.html) and the layer profiles of the
alignment and the head-importance heatmaps with a slider over checkpoints, one file per task
(`{plots}/alignment_<task>.html`, `{plots}/heads_<task>.html`). These load plotly.js from its CDN;
the run also writes self-contained copies to `{report}/`.

{analysis}"""


if __name__ == "__main__":
    main()
