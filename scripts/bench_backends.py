#!/usr/bin/env python
"""Overhead of each backend relative to ``torch``, on the same work, in one process.

    python scripts/bench_backends.py smollm2-135m-instruct antonym --trials 3 --mean-prompts 20

Prepares the prompts once (as ``ivkit extract`` does), then for each backend (``torch``,
``transformer-lens``, ``nnsight``), each on its own copy of the weights:

* ``load``: building the backend's model object from the cached weights;
* ``mean_activations``: head outputs at the last token over the clean prompts (batched);
* ``indirect_effects_naive``: the per-head oracle on the corrupted prompts (one pass per head,
  each through the backend: a hook call, a bridge forward, an nnsight trace);
* ``indirect_effects_fast``: the exact continuation engine, where the backend can run it (torch,
  and nnsight locally, on the modules it wraps);
* ``steered_forward``: zero-shot prompts with the IV added at one layer (batched).

It prints one JSON object: seconds per stage per backend, each stage's ratio to torch, and the max
|Δ| of every backend's means, AIE (naive, and fast where it ran) and steered logits against
torch's naive numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("task")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--mean-prompts", type=int, default=20)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--steer-prompts", type=int, default=64)
    ap.add_argument("--layer", type=int, default=None, help="injection layer (default: n_layers // 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default="torch,transformer-lens,nnsight")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    warnings.filterwarnings("ignore", category=FutureWarning)

    import ivkit
    from ivkit import load_task
    from ivkit.core.prompts import encode_prompts, sample_prompts
    from ivkit.pipeline import prepare_prompts

    ref = ivkit.load_model(args.model)
    task = load_task(args.task)
    prompts = prepare_prompts(ref, task, shots=args.shots, mean_prompts=args.mean_prompts, trials=args.trials,
                              seed=args.seed, progress=False)
    split = task.split(args.seed)
    zero = encode_prompts(ref, sample_prompts(split.test, style="zero_shot", n=args.steer_prompts, seed=args.seed))
    layer = args.layer if args.layer is not None else ref.geometry.n_layers // 2

    del ref

    results, outputs = {}, {}
    for name in args.backends.split(","):
        row = {}
        t0 = time.perf_counter()
        m = ivkit.load_model(args.model, backend=name)
        row["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        means = ivkit.mean_head_activations(m, prompts.mean, progress=False)
        row["mean_activations"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ie = ivkit.indirect_effects(m, prompts.corrupted, means, method="naive", progress=False)
        row["indirect_effects_naive"] = time.perf_counter() - t0
        fast = None
        if m.backend.supports_fast:
            t0 = time.perf_counter()
            fast = ivkit.indirect_effects(m, prompts.corrupted, means, method="fast", progress=False, fallback=False)
            row["indirect_effects_fast"] = time.perf_counter() - t0
        iv = ivkit.InstructionVector.build(m, means, ie, k=10, layer=layer)
        t0 = time.perf_counter()
        logits = []
        with torch.inference_mode(), iv.apply(m):
            for i in range(0, len(zero), 16):
                logits.append(m.forward(m.make_batch(zero.input_ids[i:i + 16]))[:, -1].float())
        row["steered_forward"] = time.perf_counter() - t0
        results[name] = row
        outputs[name] = (means, ie, torch.cat(logits), iv, fast)
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()), file=sys.stderr)
        del m

    base = outputs.get("torch")
    report = {
        "model": args.model, "task": args.task, "trials": len(prompts.corrupted), "mean_prompts": len(prompts.mean),
        "steer_prompts": len(zero), "layer": layer, "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": {k: {s: round(v, 3) for s, v in row.items()} for k, row in results.items()},
    }
    if base is not None:
        report["ratio_to_torch"] = {
            k: {s: round(v / results["torch"][s], 2) for s, v in row.items() if s in results["torch"]}
            for k, row in results.items() if k != "torch"}
        top = {h[:2] for h in base[1].top_heads(10)}
        report["max_abs_diff_vs_torch_naive"] = {}
        for k, o in outputs.items():
            d = {}
            if k != "torch":
                d = {"mean_activations": float((o[0] - base[0]).abs().max()),
                     "aie": float((o[1].aie - base[1].aie).abs().max()),
                     "steered_logits": float((o[2] - base[2]).abs().max()),
                     "iv": float((o[3].vector - base[3].vector).abs().max()),
                     "top10_equal": {h[:2] for h in o[1].top_heads(10)} == top}
            if o[4] is not None:
                d["aie_fast"] = float((o[4].aie - base[1].aie).abs().max())
                d["top10_equal_fast"] = {h[:2] for h in o[4].top_heads(10)} == top
            report["max_abs_diff_vs_torch_naive"][k] = d
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
