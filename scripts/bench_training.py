#!/usr/bin/env python
"""IV-guided training against plain fine-tuning: seconds per step and peak memory, in one run.

    python scripts/bench_training.py smollm2-135m-instruct capitalize --steps 12 --repeats 2

Each arm runs in its own fresh process (so that its peak resident memory is its own), the arms
alternating (plain, guided, plain, guided, ...) so that both see the same machine. Both fine-tune
the same model on the same data with the same settings (full fine-tuning, batch 8); the guided arm
also builds its teacher cache before the first step (timed apart: it is paid once per run and
kept in the run directory). Seconds per step leave the first step out (warm-up). Prints one JSON
object: per arm the median seconds per step and the peak RSS, the guided/plain ratios, the teacher
cache's build seconds and size, and the model's size (the memory a live second model would add).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("TQDM_DISABLE", "1")
import ivkit
from transformers import TrainerCallback
model_name, task, iv_dir, out, steps, arm = sys.argv[1:7]
class Clock(TrainerCallback):
    def __init__(self): self.t = []
    def on_step_begin(self, *a, **k): self.t.append(time.perf_counter())
    def on_step_end(self, *a, **k): self.t[-1] = time.perf_counter() - self.t[-1]
m = ivkit.load_model(model_name)
clock = Clock()
t0 = time.perf_counter()
iv = ivkit.InstructionVector.load(iv_dir, m) if arm == "guided" else None
res = ivkit.finetune(m, task, out, steps=int(steps), save_every=10**6, batch_size=8, lr=1e-5, iv=iv,
                     callbacks=[clock], progress=False)
total = time.perf_counter() - t0
cache = os.path.join(out, "teacher_cache.safetensors")
print(json.dumps({"step_seconds": clock.t, "total_seconds": total,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "cache_mb": os.path.getsize(cache) / 2**20 if os.path.exists(cache) else 0.0,
                  "model_mb": sum(p.numel() * p.element_size() for p in m.model.parameters()) / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("task")
    ap.add_argument("--iv", default=None, help="the task's IV directory (default: extracted into --work)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default="runs/bench_training")
    args = ap.parse_args()
    work = Path(args.work)
    iv_dir = Path(args.iv) if args.iv else work / "iv"
    if not (iv_dir / "iv.json").exists():
        subprocess.run([sys.executable, "-m", "ivkit", "extract", args.model, args.task, "--out", str(iv_dir), "-q",
                        "--json"], check=True, stdout=subprocess.DEVNULL)
    runs: dict[str, list[dict]] = {"plain": [], "guided": []}
    for _ in range(args.repeats):
        for arm in ("plain", "guided"):
            with tempfile.TemporaryDirectory(dir=work) as out:
                proc = subprocess.run([sys.executable, "-c", CHILD, args.model, args.task, str(iv_dir), out,
                                       str(args.steps), arm], check=True, capture_output=True, text=True,
                                      env={**os.environ, "HF_HUB_OFFLINE": "1"})
            runs[arm].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {"model": args.model, "task": args.task, "steps": args.steps, "repeats": args.repeats}
    for arm, rs in runs.items():
        per_step = [t for r in rs for t in r["step_seconds"][1:]]
        report[arm] = {"seconds_per_step": statistics.median(per_step), "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                       "total_seconds": statistics.median(r["total_seconds"] for r in rs)}
    g, p = report["guided"], report["plain"]
    report["step_time_ratio_guided_over_plain"] = g["seconds_per_step"] / p["seconds_per_step"]
    report["peak_rss_ratio_guided_over_plain"] = g["peak_rss_mb"] / p["peak_rss_mb"]
    report["teacher_cache_mb"] = runs["guided"][0]["cache_mb"]
    report["teacher_cache_build_seconds"] = g["total_seconds"] - p["total_seconds"] - \
        args.steps * (g["seconds_per_step"] - p["seconds_per_step"])
    report["model_mb"] = runs["plain"][0]["model_mb"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
