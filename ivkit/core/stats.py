"""Statistics on results: intervals for accuracies, agreement between rankings.

* `wilson_interval`: the 95% interval of an accuracy (every top-1 figure ivkit reports
  carries one);
* `rank_agreement`: Spearman correlation and top-k overlap of two head rankings;
* `jaccard`: overlap of two head sets.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable

import numpy as np
import torch

from .errors import InputError


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion ``successes / n`` at ``confidence``
    (two-sided), or None when ``n`` is 0. Unlike the normal approximation it stays inside [0, 1]
    and is not empty at 0 or ``n`` successes."""
    if n < 0 or not 0 <= successes <= n:
        raise InputError(f"wilson_interval: need 0 <= successes <= n, got {successes} of {n}")
    if not 0 < confidence < 1:
        raise InputError(f"wilson_interval: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def rank_agreement(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Spearman rank correlation and top-``k`` overlap between two AIE matrices of one shape."""
    fa, fb = a.flatten().double().numpy(), b.flatten().double().numpy()
    ra, rb = np.argsort(np.argsort(-fa, kind="stable"), kind="stable"), np.argsort(np.argsort(-fb, kind="stable"), kind="stable")
    rho = float(np.corrcoef(ra, rb)[0, 1]) if len(fa) > 1 else 1.0
    top_a, top_b = set(np.argsort(-fa, kind="stable")[:k]), set(np.argsort(-fb, kind="stable")[:k])
    return {"spearman": rho, f"top{k}_overlap": len(top_a & top_b) / k}


def jaccard(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> float:
    """``|a & b| / |a | b|`` of two sets of ``(layer, head)`` (1 when both are empty)."""
    sa, sb = set(map(tuple, a)), set(map(tuple, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0
