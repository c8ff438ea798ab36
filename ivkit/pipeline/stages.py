"""The named stages of an extraction, each one callable on its own and remembered in the run
directory (`ivkit.pipeline.store`).

* ``prompts``: does: split; clean prompts from training queries, filtered to the ones the model
  answers right (their head outputs recorded on the way); the corrupted trials; output:
  `ExtractionPrompts` and the mean head activations
* ``effects_*``: does: indirect effects of every head, per ranking (``shuffled``: the corrupted
  trials; ``zero_shot``: zero-shot training prompts); output: `IndirectEffects`
* ``heads``: does: the candidate head sets: the top k of each ranking, or the prefixes of the greedy
  path (saved after every head); output: `Candidate` list
* ``sweep``: does: each candidate's validation sweep over layer, scale and injection (saved after
  every candidate); output: `LayerSweep` per candidate

Building each candidate IV and choosing the best one are cheap and not stored. `ivkit.track`
reuses `prompts_stage` and `effects_stage` for its reference and per-checkpoint
measurements.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float
from torch import Tensor

from ..activations import mean_head_activations
from ..core.prompts import EncodedPrompts, encode_prompts, prompts_from_json, prompts_to_json, sample_prompts
from ..core.tasks import Task
from ..evaluation import LayerSweep, layer_sweep
from ..mediation import IndirectEffects, indirect_effects, resolve_method
from ..models.model import IVModel
from ..vectors import InstructionVector
from .config import ExtractConfig
from .greedy import GreedyPath, greedy_heads
from .prompts import ExtractionPrompts, prepare_prompts
from .store import StageStore, digest


@dataclass(frozen=True)
class RunContext:
    """What every stage reads: the model, the task, the settings, where outputs are remembered."""

    model: IVModel
    task: Task
    cfg: ExtractConfig
    store: StageStore
    progress: bool = True

    def key(self, stage: str, *upstream: str, **settings: Any) -> str:
        """The key of ``stage``'s output: the model, the task's examples, the stage's settings and
        the keys of the stages it reads."""
        examples = [(e.input, e.output) for e in self.task.examples]
        return digest(stage, self.model.identity(), self.task.name, digest(examples), self.task.instruction,
                      upstream, settings)


@dataclass(frozen=True)
class Candidate:
    """One candidate set of heads: from ``ranking``, the top ``k`` (``selection="top_k"``), or the
    first ``k`` of the greedy path (``selection="greedy"``, its pool from every ranking)."""

    ranking: str
    k: int
    heads: list[tuple[int, int]]
    selection: str = "top_k"


def prompts_stage(run: RunContext) -> tuple[ExtractionPrompts, Float[Tensor, "layers heads d_head"], dict, str]:
    """Stage ``prompts``: ``(prompts, mean activations, seconds by timing name, key)``."""
    cfg, model = run.cfg, run.model
    key = run.key("prompts", shots=cfg.shots, mean_prompts=cfg.mean_prompts, trials=cfg.trials, seed=cfg.seed,
                  style=cfg.style, template=cfg.template.to_dict(), filter=cfg.filter_correct,
                  batch_size=cfg.batch_size)
    stored = run.store.load("prompts", key)
    if stored is not None:
        data, tensors = stored
        prompts = ExtractionPrompts(encode_prompts(model, prompts_from_json(data["mean"])),
                                    encode_prompts(model, prompts_from_json(data["corrupted"])), data["filter"],
                                    run.task.split(cfg.seed))
        return prompts, tensors["means"], data["seconds"], key
    t0 = time.perf_counter()
    prompts = prepare_prompts(model, run.task, shots=cfg.shots, mean_prompts=cfg.mean_prompts, trials=cfg.trials,
                              seed=cfg.seed, style=cfg.style, template=cfg.template, filter_correct=cfg.filter_correct,
                              batch_size=cfg.batch_size, progress=run.progress)
    seconds = {"filter": time.perf_counter() - t0}
    t0 = time.perf_counter()
    if prompts.mean_heads is not None:  # recorded by the filter's own passes
        means = prompts.mean_heads.mean(0)
    else:
        means = mean_head_activations(model, prompts.mean, batch_size=cfg.batch_size, progress=run.progress)
    seconds["mean_activations"] = time.perf_counter() - t0
    run.store.save("prompts", key, {"mean": prompts_to_json(prompts.mean.prompts),
                                    "corrupted": prompts_to_json(prompts.corrupted.prompts),
                                    "filter": prompts.filter, "seconds": seconds}, {"means": means})
    return prompts, means, seconds, key


def trial_prompts(run: RunContext, prompts: ExtractionPrompts, ranking: str) -> EncodedPrompts:
    """The prompts a ranking patches heads on: the corrupted trials, or zero-shot training prompts."""
    if ranking == "shuffled":
        return prompts.corrupted
    return encode_prompts(run.model, sample_prompts(prompts.split.train, style="zero_shot", n=run.cfg.zero_shot_trials,
                                                    seed=run.cfg.seed, template=run.cfg.template, stream=11))


def effects_stage(run: RunContext, prompts: ExtractionPrompts, means: Tensor, ranking: str, upstream: str
                  ) -> tuple[IndirectEffects, str]:
    """Stage ``effects_<ranking>``: every head's indirect effect and the stage key."""
    cfg = run.cfg
    method = resolve_method(run.model, cfg.method)
    options = {"max_memory_mb": cfg.max_memory_mb, "prompts_per_pass": cfg.prompts_per_pass} if method == "fast" else {}
    key = run.key(f"effects_{ranking}", upstream, method=method, metric=cfg.metric, options=options,
                  zero_shot_trials=cfg.zero_shot_trials if ranking == "zero_shot" else None)
    stored = run.store.load(f"effects_{ranking}", key)
    if stored is not None:
        return IndirectEffects.from_dict(stored[0]), key
    info = {"model": run.model.name, "task": run.task.name, "seed": cfg.seed, "ranking": ranking}
    effects = indirect_effects(run.model, trial_prompts(run, prompts, ranking), means, method=method,
                               metric=cfg.metric, progress=run.progress, info=info, **options)
    run.store.save(f"effects_{ranking}", key, effects.to_dict())
    return effects, key


def heads_stage(run: RunContext, prompts: ExtractionPrompts, means: Tensor, effects: dict[str, IndirectEffects],
                upstream: list[str]) -> tuple[list[Candidate], GreedyPath | None, str]:
    """Stage ``heads``: the candidate head sets (and the greedy path, with ``selection="greedy"`` or
    the auto recipe)."""
    cfg = run.cfg
    n = run.model.geometry.n_total_heads
    ks = [k for k in cfg.ks if k <= n] or [n]  # the auto recipe's 20 can exceed a small model's heads
    top = [Candidate(r, k, [(l, h) for l, h, _ in effects[r].top_heads(k)]) for r in cfg.rankings for k in ks]
    if "greedy" not in cfg.selections:
        return top, None, digest("heads", upstream, cfg.ks)
    key = run.key("heads", *upstream, pool=cfg.greedy_pool, max_heads=cfg.greedy_max_heads, scale=cfg.greedy_scale,
                  queries=cfg.greedy_queries, batch_size=cfg.batch_size)
    stored = run.store.load("heads", key)
    if stored is not None:
        path = GreedyPath.from_dict(stored[0])
    else:
        partial = run.store.load("heads.partial", key)
        pool = [(l, h) for r in cfg.rankings for l, h, _ in effects[r].top_heads(cfg.greedy_pool)]
        sel = encode_prompts(run.model, sample_prompts(prompts.split.train, style="zero_shot", n=cfg.greedy_queries,
                                                       seed=cfg.seed, template=cfg.template, stream=13))
        path = greedy_heads(run.model, means, sel, pool, scale=cfg.greedy_scale, max_heads=cfg.greedy_max_heads,
                            batch_size=cfg.batch_size * 2, progress=run.progress,
                            resume=GreedyPath.from_dict(partial[0]) if partial else None,
                            on_step=lambda p: run.store.save("heads.partial", key, p.state()))
        run.store.save("heads", key, path.state())
    greedy = [Candidate(cfg.ranking if cfg.recipe == "reference" else "both", n, path.heads[:n], "greedy")
              for n in range(1, len(path.heads) + 1)]
    return (top if "top_k" in cfg.selections else []) + greedy, path, key


def sweep_stage(run: RunContext, candidates: list[InstructionVector], prompts: ExtractionPrompts, upstream: str
                ) -> list[LayerSweep]:
    """Stage ``sweep``: each candidate's validation sweep (saved after every candidate)."""
    cfg, model = run.cfg, run.model
    key = run.key("sweep", upstream, post_norm=cfg.post_norm, n=cfg.sweep_prompts, scales=list(cfg.scales),
                  injections=list(cfg.injections), max_memory_mb=cfg.max_memory_mb, batch_size=cfg.batch_size)
    stored = run.store.load("sweep", key)
    if stored is not None:
        return [LayerSweep.from_dict(d) for d in stored[0]["sweeps"]]
    partial = run.store.load("sweep.partial", key)
    sweeps = [LayerSweep.from_dict(d) for d in partial[0]["sweeps"]] if partial else []
    val = encode_prompts(model, sample_prompts(prompts.split.valid, style="zero_shot", n=cfg.sweep_prompts,
                                               seed=cfg.seed, template=cfg.template, stream=3))
    for c in candidates[len(sweeps):]:
        sweeps.append(layer_sweep(model, c, val, scales=cfg.scales, batch_size=cfg.batch_size * 2,
                                  progress=run.progress, split="valid", injections=cfg.injections,
                                  max_memory_mb=cfg.max_memory_mb))
        run.store.save("sweep.partial", key, {"sweeps": [s.to_dict() for s in sweeps]})
    run.store.save("sweep", key, {"sweeps": [s.to_dict() for s in sweeps]})
    return sweeps
