#!/usr/bin/env python
"""Forgetting, and IV-guided training against it, on SmolLM2-135M-Instruct.

    python scripts/forgetting_study.py pilot                      # choose the set-up (validation queries)
    python scripts/forgetting_study.py run --seeds 0,1,2          # both arms, every seed, tracked
    python scripts/forgetting_study.py doc                        # writes docs/forgetting.md

The model is fully fine-tuned on the training split of one task (``--train-task``, instruction
prompts), once plainly and once IV-guided (the training task's IV, extracted on the base model;
``ivkit.finetune(..., iv=...)``), with the same steps, data and seed; a checkpoint every
``--every`` steps. Every checkpoint of every arm and seed is tracked on held-apart tasks in one
``ivkit.track`` (the base model's IVs as references, resweep on, the training task's IV as the
foreign IV) and the training task's own accuracy (instruction prompts, its test split) is scored.
Noise floors: each base IV against itself rebuilt from disjoint prompts, and between tasks.

``pilot`` fine-tunes plainly at each ``--lrs`` and scores the held-apart tasks' *validation*
queries (10-shot, first-token and loose) at every checkpoint, so the set-up (learning rate and
steps) is chosen without the test split. Everything resumes from ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import ivkit  # noqa: E402
from ivkit.analysis.noise import iv_cosines, rebuild_cosine  # noqa: E402
from ivkit.core.io import atomic_write_json  # noqa: E402
from ivkit.core.prompts import encode_prompts, prompts_from_json, sample_prompts  # noqa: E402
from ivkit.core.stats import wilson_interval  # noqa: E402

HELD_APART = ["lowercase_first_letter", "capitalize_first_letter", "choose_first_of_3", "choose_last_of_3",
              "animal_v_object_3", "color_v_animal_3"]


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["pilot", "run", "doc"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--train-task", default="capitalize")
    ap.add_argument("--tasks", default=",".join(HELD_APART), help="held-apart tasks")
    ap.add_argument("--lrs", default="3e-5,1e-4", help="pilot: learning rates tried")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--every", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--prompts", type=int, default=100, help="test (pilot: validation) queries per accuracy")
    ap.add_argument("--out", default="runs/forgetting")
    ap.add_argument("--doc", default="docs/forgetting.md")
    return ap.parse_args()


def base_dir(model, out: Path) -> Path:
    """The base model saved once as a Hugging Face directory (a checkpoint series' first member)."""
    target = out / "base"
    if not target.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="base.", dir=out))
        model.model.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def train_split_file(task: str, out: Path, seed: int = 0) -> Path:
    """The training task's training split as a file: fine-tuning never sees its test queries."""
    path = out / "data" / f"{task}_train.json"
    if not path.exists():
        t = ivkit.load_task(task)
        atomic_write_json(path, [{"input": e.input, "output": e.output} for e in t.split(seed).train])
    return path


def base_ivs(model, tasks: list[str], out: Path) -> dict:
    """Each task's IV on the base model, ivkit's default recipe (resumes from its run directory)."""
    return {t: ivkit.extract(model, t, out=out / "ivs" / t, progress=False).iv for t in tasks}


def ft_accuracy(model, task: str, n: int, split: str = "test", seed: int = 0) -> dict:
    """The training task's accuracy in its training format (instruction prompts), on held-out queries."""
    t = ivkit.load_task(task)
    queries = getattr(t.split(seed), split)
    enc = encode_prompts(model, sample_prompts(queries, style="instruction", instruction=t.instruction, n=n,
                                               seed=seed, stream=41))
    s = ivkit.score_prompts(model, enc)
    right, loose = int((s.ranks == 0).sum()), int(s.loose_hits(model.tokenizer, enc).sum())
    return {"top1": right / len(enc), "ci": wilson_interval(right, len(enc)), "loose": loose / len(enc),
            "n": len(enc)}


def pilot(args, out: Path) -> None:
    model = ivkit.load_model(args.model)
    data = train_split_file(args.train_task, out)
    tasks = args.tasks.split(",")
    bdir = base_dir(model, out)
    for lr in [float(x) for x in args.lrs.split(",")]:
        run = out / "pilot" / f"lr{lr:g}"
        ivkit.finetune(ivkit.load_model(str(bdir)), str(data), run / "run", steps=args.steps,
                       save_every=args.every, batch_size=args.batch_size, lr=lr, seed=0, progress=False)
        result_path = run / "valid.json"
        results = json.loads(result_path.read_text()) if result_path.exists() else {}
        ckpts = sorted((run / "run").glob("checkpoint-*"), key=lambda p: -int(p.name.split("-")[1]))
        for label, path in [("base", bdir)] + [(p.name, p) for p in ckpts[::2] + ckpts[1::2]]:  # last first
            if label in results:
                continue
            m = ivkit.load_model(str(path))
            row = {"train_task_valid": ft_accuracy(m, args.train_task, args.prompts, "valid")}
            for t in tasks:
                row[t] = few_shot_valid(m, t, args.prompts)
            results[label] = row
            atomic_write_json(result_path, results)
            logging.info("pilot lr %g %s: %s", lr, label, json.dumps(row))
        print(f"lr {lr:g}:")
        for label, row in results.items():
            print(f"  {label:<14} train task {row['train_task_valid']['top1']:.2f}  " +
                  "  ".join(f"{t[:14]} {row[t]['top1']:.2f}/{row[t]['loose']:.2f}" for t in tasks))


def few_shot_valid(model, task: str, n: int, seed: int = 0) -> dict:
    """Clean 10-shot first-token (and loose) top-1 on the task's validation queries."""
    t = ivkit.load_task(task)
    sp = t.split(seed)
    enc = encode_prompts(model, sample_prompts(sp.valid, style="few_shot", demo_pool=sp.train, shots=10, n=n,
                                               seed=seed, stream=3))
    s = ivkit.score_prompts(model, enc)
    return {"top1": s.accuracy(1), "loose": float(s.loose_hits(model.tokenizer, enc).float().mean()), "n": len(enc)}


def run(args, out: Path) -> None:
    t0 = time.perf_counter()
    tasks = args.tasks.split(",")
    model = ivkit.load_model(args.model)
    bdir = base_dir(model, out)
    data = train_split_file(args.train_task, out)
    ivs = base_ivs(model, [args.train_task] + tasks, out)
    floors(model, ivs, out)
    labels, dirs, timing = ["base"], [bdir], {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        t_seed = time.perf_counter()
        for arm in ("plain", "guided"):
            run_dir = out / f"seed{seed}" / arm
            t1 = time.perf_counter()
            res = ivkit.finetune(ivkit.load_model(str(bdir)), str(data), run_dir, steps=args.steps,
                                 save_every=args.every, batch_size=args.batch_size, lr=args.lr, seed=seed,
                                 iv=ivs[args.train_task] if arm == "guided" else None, progress=False)
            timing[f"seed{seed}/{arm}/finetune"] = round(time.perf_counter() - t1, 1)
            for ck in res.checkpoints:
                labels.append(f"s{seed}-{arm}-{ck.name.split('-')[1]}")
                dirs.append(ck)
            score_train_task(args, run_dir, res.checkpoints, bdir)
        t1 = time.perf_counter()
        series = ivkit.CheckpointSeries.from_dirs(dirs, labels=labels)
        ivkit.track(series, tasks, references={t: ivs[t] for t in tasks}, out=out / "track", n_prompts=args.prompts,
                    resweep=True, foreign={args.train_task: ivs[args.train_task]}, progress=False)
        timing[f"seed{seed}/track"] = round(time.perf_counter() - t1, 1)
        timing[f"seed{seed}/total"] = round(time.perf_counter() - t_seed, 1)  # both arms: training, scoring, tracking
    timing["total_this_call"] = round(time.perf_counter() - t0, 1)
    old = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {}
    atomic_write_json(out / "timing.json", {**old, **{k: v for k, v in timing.items() if v > 5 or k not in old}})
    print(json.dumps(timing))


def score_train_task(args, run_dir: Path, checkpoints, bdir: Path) -> None:
    """The training task's test accuracy (instruction prompts) at the base and every checkpoint."""
    path = run_dir / "train_task_test.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for label, d in [("base", bdir)] + [(c.name, c) for c in checkpoints]:
        if label not in done:
            done[label] = ft_accuracy(ivkit.load_model(str(d)), args.train_task, 1000)
            atomic_write_json(path, done)


def floors(model, ivs: dict, out: Path) -> None:
    """Noise floors on the base model: each IV against itself rebuilt from disjoint prompts (its
    own means' queries excluded), and the cosines between tasks' IVs."""
    path = out / "floors.json"
    if path.exists():
        return
    rebuilt = {}
    for t, iv in ivs.items():
        used = json.loads((out / "ivs" / t / ".stages" / "prompts.json").read_text())["data"]["mean"]
        rebuilt[t] = rebuild_cosine(model, t, iv, exclude=[p.query.input for p in prompts_from_json(used)])
    atomic_write_json(path, {"rebuilt": rebuilt, "between": iv_cosines(ivs).to_dict()})


def main() -> None:
    args = _args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if args.command == "pilot":
        pilot(args, out)
    elif args.command == "run":
        run(args, out)
    else:
        from forgetting_doc import write_doc  # scripts/forgetting_doc.py: the tables and the reading

        write_doc(args, out, Path(args.doc))


if __name__ == "__main__":
    main()
