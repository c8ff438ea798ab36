#!/usr/bin/env python
"""Choose the synthetic study's pretraining settings on validation prompts only.

    python scripts/synthetic_pilot.py --out runs/synthetic_pilot/noise0.25 --noise 0.25 --steps 4000

Pretrains one setting (resumable, `ivkit.synthetic.pretrain`) and, at every checkpoint,
measures on *validation* prompts of each prior (never the test prompts the study reports on):

* the network's mean squared error over 1-40 examples next to ridge and the discrete Bayes
  predictor, and the share of the discrete prior's advantage over ridge the network captures
  (``discrete_gain``: 0 = it behaves as ridge, 1 = as the discrete Bayes predictor);
* the implied discrete-prior weight (the Bayes mixture closest to the network's predictions on
  mixture prompts).

The study needs a pretrained network that infers which prior a prompt comes from. The criterion:
among settings whose pretraining fits 15 minutes, the largest ``discrete_gain``, with the paired
95% interval of its advantage over ridge on discrete-prior validation prompts (``over_ridge``)
above 0. The results of every setting are kept in ``--out``'s parent ``pilot.jsonl``
(one row per ``--out``; a rerun replaces its row), so the choice can be read back.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ivkit.core.io import atomic_write_text
from ivkit.core.machine import machine_info
from ivkit.synthetic import ModelConfig, RegressionTask, TrainConfig, pretrain
from ivkit.synthetic.measure import eval_prompts, implied_prior, mean_interval, measure_losses
from ivkit.synthetic.train import checkpoints, load_checkpoint

log = logging.getLogger("synthetic_pilot")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dim", type=int, default=4)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--p-discrete", type=float, default=0.5)
    ap.add_argument("--n-discrete", type=int, default=64)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--points-steps", type=int, default=3000)
    ap.add_argument("--dims-steps", type=int, default=1200)
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--n-validation", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    return ap.parse_args()


def evaluate(path: Path, task: RegressionTask, n: int) -> dict:
    """Validation metrics of one checkpoint."""
    net = load_checkpoint(path)
    out = {}
    for prior in ("discrete", "continuous"):
        pl = measure_losses({"net": net}, eval_prompts(task, n, prior, "validation"), task,
                            predictors=("ridge", "discrete"), prior=prior)
        m = {k: float(pl.window(k, (1, 40)).mean()) for k in pl.errors}
        out[prior] = {"net": m["net"], "ridge": m["ridge (continuous Bayes)"], "discrete": m["discrete Bayes"]}
        # the network's advantage over ridge, paired over prompts, with its 95% t interval
        out[prior]["over_ridge"] = list(mean_interval(pl.window("ridge (continuous Bayes)", (1, 40))
                                                      - pl.window("net", (1, 40))))
    d = out["discrete"]
    out["discrete_gain"] = (d["ridge"] - d["net"]) / (d["ridge"] - d["discrete"])
    imp = implied_prior({"net": net}, eval_prompts(task, n, "mixture", "validation"), task)
    out["implied_p"] = list(imp.best["net"])
    return out


def main() -> None:
    a = _args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    task = RegressionTask(dim=a.dim, noise=a.noise, p_discrete=a.p_discrete, n_discrete=a.n_discrete)
    model = ModelConfig(dim=a.dim, n_points=task.n_points, n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head)
    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, points_steps=a.points_steps,
                      dims_steps=a.dims_steps, save_every=a.save_every)
    t0 = time.perf_counter()
    run = pretrain(a.out, task, model, cfg, progress=False)
    rows = []
    for ck in checkpoints(a.out):
        step = int(ck.name.split("-")[-1])
        m = evaluate(ck, task, a.n_validation)
        rows.append({"step": step, **m})
        log.info("step %d: discrete prompts net %.3f ridge %.3f discrete Bayes %.3f (gain %.2f); continuous net %.3f "
                 "ridge %.3f; implied p %s", step, m["discrete"]["net"], m["discrete"]["ridge"], m["discrete"]["discrete"],
                 m["discrete_gain"], m["continuous"]["net"], m["continuous"]["ridge"], np.round(m["implied_p"], 3))
    record = {"out": str(a.out), "task": task.to_dict(), "model": model.to_dict() if hasattr(model, "to_dict") else vars(model),
              "train": cfg.to_dict(), "train_seconds": run.seconds, "wall_seconds": time.perf_counter() - t0,
              "checkpoints": rows, "n_validation": a.n_validation, "machine": machine_info(), "threads": a.threads}
    log_path = a.out.parent / "pilot.jsonl"  # one row per setting: a rerun replaces its row
    old = [line for line in (log_path.read_text().splitlines() if log_path.exists() else [])
           if line.strip() and json.loads(line)["out"] != str(a.out)]
    atomic_write_text(log_path, "".join(line + "\n" for line in [*old, json.dumps(record)]))
    log.info("pretraining %.0f s; row written to %s", run.seconds, a.out.parent / "pilot.jsonl")


if __name__ == "__main__":
    main()
