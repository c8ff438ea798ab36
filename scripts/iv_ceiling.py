#!/usr/bin/env python
"""How good can this task's IV get on this model? The vector, or the choice of layer and scale?

    python scripts/iv_ceiling.py smollm2-135m-instruct capitalize --top-k 3,5,10,20 --scales 1,2,3,4,6,8

Extracts the IV as ``ivkit extract`` does (k, layer and scale chosen on the validation split),
then sweeps every layer and scale (with ``--injection heads`` or ``auto``, the heads injection's
scales too) on the *test* split's zero-shot prompts. The best test cell is
an oracle, never a result: it bounds what any validation-chosen layer and scale could reach with
this vector. If the chosen cell is close to the oracle, the vector is the limit, not the choice.
Prints one JSON object: the chosen k, layer, scale and test top-1; the oracle's; and the first
failures (query, answer, the IV-steered prediction).

Diagnostic only: choosing anything on the test split would make the test numbers meaningless.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("task")
    ap.add_argument("--top-k", default="10", help="comma list of k candidates, chosen on validation")
    ap.add_argument("--scales", default="1,2,3,4", help="comma list of scales swept with every layer")
    ap.add_argument("--injection", default="residual", choices=["residual", "heads", "auto"],
                    help="as ivkit extract --injection; the oracle sweeps the same injections")
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--mean-prompts", type=int, default=100)
    ap.add_argument("--metric", default="prob")
    ap.add_argument("--prompts", type=int, default=100, help="test queries")
    ap.add_argument("--failures", type=int, default=15, help="failures to list")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("TQDM_DISABLE", "1")

    import torch

    import ivkit
    from ivkit.evaluation import evaluation_prompts

    ks = [int(k) for k in args.top_k.split(",")]
    scales = [float(x) for x in args.scales.split(",")]
    model = ivkit.load_model(args.model)
    res = ivkit.extract(model, args.task, top_k=ks if len(ks) > 1 else ks[0], scales=scales, trials=args.trials,
                        mean_prompts=args.mean_prompts, metric=args.metric, seed=args.seed, progress=False,
                        injection=args.injection)
    iv = res.iv
    zs = evaluation_prompts(model, args.task, n_prompts=args.prompts, seed=args.seed)["zero_shot"]
    chosen = ivkit.score_prompts(model, zs, vector=iv)
    injections = ["residual", "heads"] if args.injection == "auto" else [args.injection]
    oracle = ivkit.layer_sweep(model, iv, zs, scales=scales, progress=False, split="test", injections=injections)
    with torch.inference_mode(), iv.apply(model):
        pred = torch.cat([model.forward(model.make_batch(zs.input_ids[i:i + 32]))[:, -1].argmax(-1)
                          for i in range(0, len(zs), 32)])
    tok = model.tokenizer
    fails = [{"input": p.query.input, "answer": p.query.output, "answer_token": tok.decode([int(f)]),
              "predicted": tok.decode([int(t)])}
             for p, t, f, r in zip(zs.prompts, pred.tolist(), zs.first_token.tolist(), chosen.ranks.tolist()) if r > 0]
    print(json.dumps({
        "model": args.model, "task": args.task, "n": len(zs), "metric": args.metric, "trials": args.trials,
        "mean_prompts": args.mean_prompts, "scales": scales,
        "chosen_on_valid": {"k": iv.k, "injection": iv.injection, "layer": iv.layer, "scale": iv.scale,
                            "valid_top1": res.sweep.best_top1,
                            "test_top1": chosen.accuracy(1), "k_selection": iv.meta.get("k_selection")},
        "test_oracle": {"k": iv.k, "injection": oracle.best_injection, "layer": oracle.best_layer,
                        "scale": oracle.best_scale,
                        "test_top1": oracle.best_top1},
        "failures": fails[:args.failures], "n_failures": len(fails),
    }, indent=1))


if __name__ == "__main__":
    main()
