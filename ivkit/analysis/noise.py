"""Noise floors for IV similarity: how much a cosine moves with no training at all.

* `rebuild_cosine`: the cosine between an IV and the same heads' IV rebuilt from *other*
  clean prompts (training queries the IV's own means did not use), on the same model. A fine-tuned
  checkpoint's IV cosine above this floor says nothing changed beyond prompt sampling.
* `iv_cosines`: every pair of task IVs' cosine: how far apart IVs of different tasks are, the
  other end of the scale.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from ..activations import mean_head_activations
from ..core.errors import InputError
from ..core.prompts import encode_prompts, sample_prompts
from ..core.tasks import Task, load_task
from ..models.model import IVModel
from ..vectors import InstructionVector


def rebuild_cosine(model: IVModel, task: Task | str, iv: InstructionVector, *, exclude: Iterable[str] = (),
                   n: int = 100, shots: int = 10, seed: int = 0, stream: int = 31) -> float:
    """The cosine between ``iv`` and the IV of the same heads rebuilt on ``model`` from ``n`` clean
    ``shots``-shot prompts of training queries not in ``exclude`` (query inputs)."""
    task = load_task(task)
    skip = set(exclude)
    split = task.split(seed)
    queries = [e for e in split.train if e.input not in skip]
    if not queries:
        raise InputError(f"no training query of {task.name!r} is left outside the {len(skip)} excluded ones")
    prompts = encode_prompts(model, sample_prompts(queries, style="few_shot", demo_pool=split.train, shots=shots,
                                                   n=n, seed=seed, stream=stream))
    means = mean_head_activations(model, prompts, progress=False)
    again = InstructionVector.build(model, means, heads=iv.heads, post_norm=iv.meta.get("post_norm") or "linearized")
    return again.cosine(iv)


def iv_cosines(ivs: Mapping[str, InstructionVector]):
    """The cosine of every pair of IVs, as a task x task data frame (1 on the diagonal)."""
    import pandas as pd

    names = list(ivs)
    m = np.array([[ivs[a].cosine(ivs[b]) for b in names] for a in names])
    return pd.DataFrame(m, index=names, columns=names)
