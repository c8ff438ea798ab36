#!/usr/bin/env python
"""Are two ``ivkit extract`` run directories the same numbers?

    python scripts/compare_runs.py runs/before/capitalize runs/after/capitalize [--ignore task_source]

Compares ``iv.json``, every ``indirect_effects*.json`` and ``layer_sweep.json`` key by key, and
the tensors of ``iv.safetensors`` bit for bit. What differs between any two runs of the same
settings is left out: wall times (``seconds``, ``timings``), the ivkit version, and the digest of
the tensor file (its tensors are compared instead). Prints one line per difference and exits 1 if
there is any, else one line saying how much was compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

IGNORED = {"seconds", "timings", "ivkit_version", "tensors_sha256"}


def diff(a: Any, b: Any, where: str = "", ignored: frozenset[str] = frozenset(IGNORED)) -> list[str]:
    """Every place where ``a`` and ``b`` differ (floats exactly), ignoring the ``ignored`` keys."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k in ignored:
                continue
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'the second' if k not in a else 'the first'}")
            else:
                out += diff(a[k], b[k], f"{where}.{k}", ignored)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{i}]", ignored)]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def compare(first: Path, second: Path, ignore: frozenset[str] = frozenset()) -> tuple[list[str], int]:
    """(differences, number of files compared); ``ignore``: more keys to leave out."""
    problems, n = [], 0
    names = sorted({p.name for d in (first, second) for p in d.glob("*.json")} - {"evaluation.json"})
    for name in names:
        pa, pb = first / name, second / name
        if not pa.exists() or not pb.exists():
            problems.append(f"{name}: only in {first if pa.exists() else second}")
            continue
        problems += [f"{name}{d}" for d in diff(json.loads(pa.read_text()), json.loads(pb.read_text()),
                                                ignored=frozenset(IGNORED) | ignore)]
        n += 1
    ta, tb = load_file(str(first / "iv.safetensors")), load_file(str(second / "iv.safetensors"))
    for key in sorted(set(ta) | set(tb)):
        if key not in ta or key not in tb or not torch.equal(ta[key], tb[key]):
            problems.append(f"iv.safetensors: tensor {key!r} differs")
    return problems, n + 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--ignore", action="append", default=[],
                    help="a key to leave out too (e.g. task_source, the task file's path, when the two runs "
                         "come from two checkouts)")
    args = ap.parse_args()
    problems, n = compare(args.first, args.second, frozenset(args.ignore))
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"identical: {n} files of {args.first} and {args.second} (wall times aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
