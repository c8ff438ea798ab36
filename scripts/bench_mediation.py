#!/usr/bin/env python
"""Benchmark the indirect-effect methods against the naive per-head loop, in one process.

    python scripts/bench_mediation.py smollm2-135m-instruct antonym --trials 3

Runs every method on the same corrupted prompts and mean activations (prepared exactly as
``ivkit extract`` does) and prints one JSON object: seconds per trial per method, speed-ups
against naive, max |ΔAIE| of fast vs naive, top-10 overlap and Spearman rank correlation, and the
peak resident memory of the process while each method ran. ``--profile`` also prints where the
fast path spends its time (torch profiler, to stderr).

``--methods`` may also name ``reference``: the per-head loop written the way the function-vectors
code runs it (batch size 1, one plain ``model(input_ids)`` call per head, logits for *every*
position, the last one softmaxed), with its own ``torch`` pre-hook on the output projection. It is
the cost the issue's "36 s per trial" describes, and an independent check of ``naive``: its AIE
must match. ivkit's ``naive`` differs only in asking the model for the last position's logits
(``logits_to_keep=1``), which on a 262k vocabulary is most of the saving.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

import torch

from ivkit.core.stats import rank_agreement


class PeakRSS:
    """Samples this process's resident set size every few milliseconds while active."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.now()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.now())


@torch.inference_mode()
def reference_loop(model, corrupted, means) -> tuple[torch.Tensor, float]:
    """The function-vectors style loop; returns per-trial effects ``(n, n_layers, n_heads)`` and
    the seconds it took."""
    g = model.geometry
    hf = model.model
    effects = torch.zeros(len(corrupted), g.n_layers, g.n_heads)
    t0 = time.perf_counter()
    for i, (ids, first) in enumerate(zip(corrupted.input_ids, corrupted.first_token.tolist())):
        x = torch.tensor([list(ids)], device=model.device)
        base = torch.softmax(hf(input_ids=x).logits[0, -1].float(), -1)[first]
        for layer in range(g.n_layers):
            for head in range(g.n_heads):
                def hook(module, args, layer=layer, head=head):
                    z = args[0].clone()
                    z[0, -1, head * g.d_head:(head + 1) * g.d_head] = means[layer, head].to(z.dtype)
                    return (z,) + tuple(args[1:])
                handle = model.attn_out_proj(layer).register_forward_pre_hook(hook)
                try:
                    p = torch.softmax(hf(input_ids=x).logits[0, -1].float(), -1)[first]
                finally:
                    handle.remove()
                effects[i, layer, head] = p - base
    return effects, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("task")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--mean-prompts", type=int, default=20)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="naive,fast,attribution",
                    help="comma list of naive, fast, attribution and reference (see above)")
    ap.add_argument("--metric", default="prob")
    ap.add_argument("--max-memory-mb", type=float, default=1024.0, help="fast path working-memory cap")
    ap.add_argument("--profile", action="store_true", help="print a torch-profiler table of the fast path to stderr")
    args = ap.parse_args()
    if "reference" in args.methods.split(",") and args.metric != "prob":
        ap.error("the reference loop measures the first-token probability only: use --metric prob")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import ivkit
    from ivkit.pipeline import prepare_prompts

    t0 = time.perf_counter()
    model = ivkit.load_model(args.model)
    load_s = time.perf_counter() - t0
    prompts = prepare_prompts(model, args.task, shots=args.shots, mean_prompts=args.mean_prompts,
                              trials=args.trials, seed=args.seed, progress=False)
    means = ivkit.mean_head_activations(model, prompts.mean, progress=False)
    corrupted = prompts.corrupted
    n = len(corrupted)
    lengths = [len(x) for x in corrupted.input_ids]

    results, rss = {}, {}
    for method in args.methods.split(","):
        if method == "reference":
            if not model.backend.supports_fast:  # it hooks the HF modules directly
                raise SystemExit("the reference loop needs the torch backend")
            with PeakRSS() as peak:
                per_trial, secs = reference_loop(model, corrupted, means)
            results[method] = ivkit.IndirectEffects(per_trial.mean(0), per_trial, torch.zeros(n), "reference",
                                                    args.metric, secs)
            rss[method] = round(peak.peak / 2**20, 1)
            continue
        opts = {"max_memory_mb": args.max_memory_mb, "fallback": False} if method == "fast" else {}
        with PeakRSS() as peak:
            results[method] = ivkit.indirect_effects(model, corrupted, means, method=method, metric=args.metric,
                                                     progress=False, **opts)
        rss[method] = round(peak.peak / 2**20, 1)

    out = {
        "model": args.model, "task": args.task, "trials": n, "metric": args.metric,
        "prompt_tokens": {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / n},
        "n_heads_total": model.geometry.n_total_heads,
        "load_seconds": round(load_s, 2),
        "seconds_per_trial": {m: r.seconds / n for m, r in results.items()},
        "peak_rss_mb": rss,
        "torch_threads": torch.get_num_threads(),
    }
    if "naive" in results:
        base = results["naive"]
        out["speedup_vs_naive"] = {m: base.seconds / r.seconds for m, r in results.items() if m != "naive"}
        # The naive loop is n_heads + 1 forward passes per trial: the cost of one pass, measured.
        pass_s = base.seconds / n / (model.geometry.n_total_heads + 1)
        out["forward_equivalents_per_trial"] = {m: r.seconds / n / pass_s for m, r in results.items()}
        for m, r in results.items():
            if m == "naive":
                continue
            agree = rank_agreement(base.aie, r.aie, k=10)
            out[f"{m}_vs_naive"] = {"max_abs_diff_aie": float((r.aie - base.aie).abs().max()),
                                    "max_abs_diff_per_trial": float((r.per_trial - base.per_trial).abs().max()),
                                    "top10_identical": [h[:2] for h in r.top_heads(10)] == [h[:2] for h in base.top_heads(10)],
                                    **agree}
    if "reference" in results:
        ref = results["reference"]
        out["speedup_vs_reference"] = {m: ref.seconds / r.seconds for m, r in results.items() if m != "reference"}
    if "fast" in results and "attribution" in results:
        out["attribution_vs_fast"] = rank_agreement(results["fast"].aie, results["attribution"].aie, k=10)
    if "fast" in results:
        out["max_aie"] = float(results["fast"].aie.max())
        out["top10_fast"] = [[l, h, round(a, 5)] for l, h, a in results["fast"].top_heads(10)]
    print(json.dumps(out))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            ivkit.indirect_effects(model, corrupted, means, method="fast", metric=args.metric, progress=False,
                                   max_memory_mb=args.max_memory_mb, fallback=False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)


if __name__ == "__main__":
    main()
