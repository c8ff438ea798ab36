"""What the command line prints: the heads table, the accuracy table, the method line."""

from __future__ import annotations

from typing import Any


def heads_table(iv: Any) -> str:
    """The IV's heads, ranked, with their AIE."""
    lines = ["rank  layer  head        AIE"]
    for i, ((l, h), a) in enumerate(zip(iv.heads, iv.head_aie), 1):
        lines.append(f"{i:>4}  {l:>5}  {h:>4}  {a:>9.5f}")
    return "\n".join(lines)


def where(injection: str | None, layer: int | None, k: int | None = None) -> str:
    """Where an IV is injected, in words."""
    if injection == "heads":
        return f"IV patched into its {k} heads" if k else "IV patched into its heads"
    return f"IV at layer {layer}"


def _ci_text(r: dict[str, Any], prefix: str) -> str:
    lo, hi = r.get(f"{prefix}_lo"), r.get(f"{prefix}_hi")
    return "-" if lo is None or hi is None else f"{lo:.2f}-{hi:.2f}"


def eval_table(ev: Any) -> str:
    """The six conditions: top-1 with its 95% interval, top-2, top-3, and top-1 on ICL-right queries."""
    lines = [f"{'condition':<16} {'top1':>6} {'95% CI':>9} {'top2':>6} {'top3':>6}   {'top1 on ICL-right':>17} "
             f"{'95% CI':>9}"]
    for c, r in ev.results.items():
        sub = r.get("top1_icl_correct")
        lines.append(f"{c:<16} {r['top1']:>6.3f} {_ci_text(r, 'top1'):>9} {r['top2']:>6.3f} {r['top3']:>6.3f}   "
                     f"{'-' if sub is None else format(sub, '.3f'):>17} {_ci_text(r, 'top1_icl_correct'):>9}")
    right = (f", {ev.n_icl_correct} of them answered right with clean shots: 'ICL-right'"
             if ev.n_icl_correct is not None else "")
    lines.append(f"({where(ev.info.get('injection'), ev.layer, ev.info.get('k'))}, scale {ev.info.get('scale', 1):g}; "
                 f"n={ev.n} test queries{right})")
    return "\n".join(lines)


def method_line(res: Any) -> str:
    """``method: fast``, or ``method: naive (fast unavailable: <reason>)`` after a fallback."""
    reason = res.effects.info.get("fast_unavailable")
    return f"method: {res.effects.method}" + (f" (fast unavailable: {reason})" if reason else "")


def seconds_line(res: Any) -> str:
    """The seconds of each stage; a resumed run says which stages it loaded."""
    line = "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items())
    return line + (f"   (resumed: {', '.join(res.resumed)})" if res.resumed else "")


def extract_summary(res: Any, out: Any, model: Any) -> dict[str, Any]:
    """The JSON summary ``ivkit extract --json`` prints."""
    iv = res.iv
    return {"out": str(out), "model": model.name, "task": iv.meta.get("task"), "layer": iv.layer, "scale": iv.scale,
            "injection": iv.injection, "k": iv.k, "ranking": iv.meta.get("ranking"),
            "selection": iv.meta.get("head_selection", {}).get("method", "top_k"),
            "heads": [[l, h, a] for (l, h), a in zip(iv.heads, iv.head_aie)], "filter": res.filter,
            "timings": {k: round(v, 2) for k, v in res.timings.items()}, "method": res.effects.method,
            "backend": model.backend.name, "fast_unavailable": res.effects.info.get("fast_unavailable"),
            "resumed": list(res.resumed)}
