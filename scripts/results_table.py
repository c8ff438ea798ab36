#!/usr/bin/env python
"""Extract and evaluate an IV per task through the CLI, and write the results table.

The tables of docs/exploration.md (per-option recipe studies) were made with it; the results
report itself is ``scripts/results_report.py``.

    python scripts/results_table.py --model smollm2-135m-instruct --out runs/results \\
        --doc /tmp/table.md capitalize lowercase_first_letter ...

For each task it runs exactly the two commands it prints in the table:
``ivkit extract MODEL TASK --out OUT/TASK --json`` and
``ivkit evaluate MODEL TASK --iv OUT/TASK --json``, then writes a Markdown table of the six
accuracies, zero-shot + IV and shuffled + IV on the queries clean 10-shot gets right (the
function-vectors code's protocol), the chosen layer and scale, the top-10 heads and the seconds
of each stage.

``--prompts N`` passes ``--prompts N`` to ``ivkit evaluate`` (1000 takes the whole test split);
``--evaluate-only`` reuses the IVs already in ``OUT/TASK`` (their ``iv.json`` stands for the
extract summary) and runs only the evaluation. The table gives each zero-shot + IV figure with its
95% Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["_wall"] = time.perf_counter() - t0
    return out


def _where(ev: dict) -> str:
    """The injection column: "layer L" (residual) or "heads" (each top head patched)."""
    return "heads" if ev.get("injection") == "heads" else f"layer {ev['layer']}"


def _summary_from_iv(out: Path) -> dict:
    """What ``ivkit extract --json`` printed, rebuilt from the IV's own ``iv.json``."""
    meta = json.loads((out / "iv.json").read_text())
    return {"scale": meta["scale"], "injection": meta.get("injection", "residual"), "k": meta.get("k"),
            "heads": [[h["layer"], h["head"], h["aie"]] for h in meta["heads"]], "timings": meta.get("timings", {})}


def _with_ci(acc: float | None, ci: list[float] | None) -> str:
    """``0.69 (0.63-0.75)``: the accuracy and its 95% Wilson interval (``ivkit evaluate``'s ``ci95``)."""
    if acc is None:
        return "-"
    return f"{acc:.2f}" if ci is None else f"{acc:.2f} ({ci[0]:.2f}-{ci[1]:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default="runs/results")
    ap.add_argument("--doc", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--extra", default="", help="extra options for ivkit extract, e.g. '--scales 1'")
    ap.add_argument("--prompts", type=int, default=None, help="test queries for ivkit evaluate (its default: 100)")
    ap.add_argument("--evaluate-only", action="store_true", help="reuse the IVs in OUT/TASK; run only evaluate")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "ivkit"]
    rows = []
    for task in args.tasks:
        out = Path(args.out) / task
        extract_cmd = ["extract", args.model, task, "--out", str(out), "--json", "-q", *args.extra.split()]
        eval_cmd = ["evaluate", args.model, task, "--iv", str(out), "--json", "-q"]
        if args.prompts is not None:
            eval_cmd += ["--prompts", str(args.prompts)]
        ex = _summary_from_iv(out) if args.evaluate_only else run(exe + extract_cmd)
        ev = run(exe + eval_cmd)
        rows.append((task, ex, ev, "ivkit " + " ".join(extract_cmd), "ivkit " + " ".join(eval_cmd)))
        print(json.dumps({"task": task, **{k: ev[k] for k in ("zero_shot", "zero_shot_iv", "shuffled", "shuffled_iv",
                                                             "few_shot", "random_control", "layer", "icl_correct",
                                                             "n_icl_correct")},
                          "scale": ex["scale"], "injection": ex.get("injection", "residual"), "k": ex.get("k"),
                          "timings": ex["timings"]}), flush=True)

    lines = [
        "| task | zero-shot | zero-shot + IV (95% CI) | shuffled 10-shot | shuffled + IV | clean 10-shot | random control | "
        "IV / 10-shot | zero-shot + IV on ICL-right (95% CI) | shuffled + IV on ICL-right | injection | k | scale | "
        "n (ICL-right) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f2(x):
        return "-" if x is None else f"{x:.2f}"

    for task, ex, ev, _, _ in rows:
        ratio = ev["zero_shot_iv"] / ev["few_shot"] if ev["few_shot"] else None
        sub = ev.get("icl_correct", {})
        lines.append(f"| {task} | {ev['zero_shot']:.2f} | **{_with_ci(ev['zero_shot_iv'], ev['ci95']['zero_shot_iv'])}** | {ev['shuffled']:.2f} | "
                     f"{ev['shuffled_iv']:.2f} | {ev['few_shot']:.2f} | {ev['random_control']:.2f} | {f2(ratio)} | "
                     f"**{_with_ci(sub.get('zero_shot_iv'), ev['icl_correct_ci95']['zero_shot_iv'])}** | {f2(sub.get('shuffled_iv'))} | "
                     f"{_where(ev)} | {ex.get('k', len(ex['heads']))} | {ex['scale']:g} | "
                     f"{ev['n']} ({ev.get('n_icl_correct')}) |")
    lines += ["", "| task | top heads (layer.head, by AIE; the first 10) | seconds: load / filter+means / AIE / sweep / evaluate |",
              "|---|---|---|"]
    for task, ex, ev, _, _ in rows:
        heads = " ".join(f"{l}.{h}" for l, h, _ in ex["heads"][:10])
        t = ex["timings"]
        lines.append(f"| {task} | {heads} | {t.get('load', 0):.1f} / {t.get('filter', 0) + t.get('mean_activations', 0):.1f}"
                     f" / {t.get('indirect_effects', 0):.1f} / {t.get('layer_sweep', 0):.1f} / {ev.get('seconds', 0):.1f} |")
    lines += ["", "Commands (each row's figures come from exactly these):", ""]
    for task, _, _, c1, c2 in rows:
        lines += [f"- {task}: `{c2}` (IV from `{c1}`)" if args.evaluate_only else f"- {task}: `{c1}` then `{c2}`"]
    table = "\n".join(lines)
    if args.doc:
        Path(args.doc).write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
