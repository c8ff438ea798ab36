"""Instruction-built IVs, and how they compare with demonstration-built ones.

`ivkit.extract` builds an IV from *demonstrations*: the mean head outputs of clean 10-shot
prompts, the heads ranked by patching them into prompts whose demonstrations' labels are
shuffled. ``extract(..., style="instruction")`` takes its clean prompts from the task's
instruction instead (zero-shot, ``"<instruction>\\n\\nQ: x\\nA:"``) but still ranks the heads on
shuffled *demonstrations*, prompts of another kind than the clean ones.

`instruction_iv` builds the IV from instructions end to end:

1. clean prompts: the instruction and a training query, kept when the model answers right (their
   head outputs averaged: the mean activations);
2. corrupted prompts that fit: the same queries under a *wrong* instruction (another task's:
   ``corrupt="wrong"``, `default_wrong_instruction` unless given) or with *no* instruction
   (``corrupt="empty"``: the plain zero-shot prompt);
3. each head's indirect effect: its mean patched into the corrupted prompts (`ivkit.indirect_effects`);
4. the top ``k`` heads' IV, its layer and scale chosen on zero-shot prompts of the validation
   split, as `ivkit.extract` does.

With ``out=DIR`` the result is saved there as an extraction (``iv.json``, ...) and a second call
with the same settings loads it instead of recomputing.

`compare_ivs` puts two IVs of one task side by side: the Jaccard overlap of their heads, the
cosine of their vectors, the agreement of their AIE rankings (when given) and each one's
zero-shot test accuracy at its own layer and scale.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..activations import mean_head_activations
from ..core.errors import InputError, TaskError
from ..core.options import Corruption, check_choice
from ..core.prompts import DEFAULT_TEMPLATE, PromptTemplate, encode_prompts, make_prompt, sample_prompts
from ..core.stats import jaccard, rank_agreement
from ..core.tasks import Task, load_task
from ..evaluation import LayerSweep, layer_sweep
from ..mediation import IndirectEffects, indirect_effects
from ..models.model import IVModel
from ..pipeline import Extraction, filter_prompts
from ..pipeline.store import digest
from ..vectors import InstructionVector
from .anatomy_common import VectorScores, choose_and_test, zero_shot_prompts

_WRONG = "Give the opposite of the word."
_WRONG_FOR_OPPOSITES = "Translate the word into French."


def default_wrong_instruction(task: Task) -> str:
    """The wrong instruction used unless one is given: the antonym task's ("Give the opposite of the
    word."), or for tasks about word meaning (antonym, synonym) the English-French one."""
    return _WRONG_FOR_OPPOSITES if task.name in ("antonym", "synonym") else _WRONG


def _split_kept(kept, need: int, mean_prompts: int, trials: int):
    if len(kept) >= need:
        return list(range(mean_prompts)), list(range(mean_prompts, need))
    return list(range(len(kept))), list(range(min(trials, len(kept))))  # too few: the trials reuse them


def _clean_prompts(model: IVModel, task: Task, *, need: int, seed: int, template: PromptTemplate,
                   filter_correct: bool, min_prompts: int, batch_size: int, progress: bool):
    split = task.split(seed)
    clean = sample_prompts(split.train, style="instruction", instruction=task.instruction, seed=seed,
                           template=template, stream=1)
    if not filter_correct:
        kept = encode_prompts(model, clean[:need])
        return kept, {"tried": 0, "correct": None, "accuracy": None, "skipped": True}, None
    kept, stats, heads = filter_prompts(model, clean, need, batch_size=batch_size, progress=progress,
                                        record_heads=True)
    if len(kept) < min_prompts:
        raise TaskError(
            f"{model.name} answers only {len(kept)} of {stats['tried']} instruction prompts of {task.name!r} right "
            f"(instruction {task.instruction!r}), fewer than min_prompts={min_prompts}: there is little instructed "
            f"behaviour to extract. Try another instruction, or filter_correct=False")
    return kept, stats, heads


def _corrupted(model: IVModel, queries, corrupt: str, wrong: str, template: PromptTemplate):
    style = "instruction" if corrupt == "wrong" else "zero_shot"
    return encode_prompts(model, [make_prompt(q, style=style, instruction=wrong, template=template) for q in queries])


def _settings(task: Task, corrupt: str, wrong: str | None, **rest: Any) -> dict[str, Any]:
    return {"task": task.name, "examples": digest([(e.input, e.output) for e in task.examples]),
            "instruction": task.instruction, "corrupt": corrupt, "wrong_instruction": wrong, **rest}


def _load_saved(out: Path | None, key: str) -> Extraction | None:
    if out is None or not (out / "iv.json").exists():
        return None
    iv = InstructionVector.load(out)
    if iv.meta.get("instruction_extraction", {}).get("key") != key:
        return None
    sweep = LayerSweep.from_dict(json.loads((out / "layer_sweep.json").read_text()))
    return Extraction(iv, IndirectEffects.load(out / "indirect_effects.json"), sweep,
                      dict(iv.meta.get("timings", {})), iv.meta.get("filter", {}), resumed=("all",))


def instruction_iv(model: IVModel, task: Task | str, *, instruction: str | None = None,
                   corrupt: Corruption = "wrong", wrong_instruction: str | None = None, k: int = 10,
                   mean_prompts: int = 100, trials: int = 25, seed: int = 0,
                   template: PromptTemplate = DEFAULT_TEMPLATE, filter_correct: bool = True, min_prompts: int = 5,
                   method: str | None = None, scales: Sequence[float] = (1.0, 2.0, 3.0, 4.0),
                   sweep_prompts: int = 100, batch_size: int = 16, out: str | Path | None = None,
                   progress: bool = False) -> Extraction:
    """An IV built from instruction prompts (see the module docstring); an
    `Extraction` whose IV's ``meta`` records the instruction, the
    corruption and the wrong instruction."""
    task = load_task(task, instruction=instruction)
    check_choice("corrupt", corrupt, Corruption)
    if not task.instruction or not task.instruction.strip():
        raise InputError(f"task {task.name!r} has no instruction: pass instruction='...'")
    wrong = (wrong_instruction or default_wrong_instruction(task)) if corrupt == "wrong" else None
    if wrong is not None and wrong.strip() == task.instruction.strip():
        raise InputError("the wrong instruction is the task's own instruction: give another wrong_instruction")
    settings = _settings(task, corrupt, wrong, k=k, mean_prompts=mean_prompts, trials=trials, seed=seed,
                         template=template.to_dict(), filter=filter_correct, method=method, scales=list(scales),
                         sweep_prompts=sweep_prompts, model=model.identity())
    key = digest(settings)
    out = Path(out) if out is not None else None
    saved = _load_saved(out, key)
    if saved is not None:
        return saved
    t0 = time.perf_counter()
    need = mean_prompts + trials
    kept, fstats, heads = _clean_prompts(model, task, need=need, seed=seed, template=template,
                                         filter_correct=filter_correct, min_prompts=min_prompts,
                                         batch_size=batch_size, progress=progress)
    mean_idx, trial_idx = _split_kept(kept, need, mean_prompts, trials)
    means = heads[mean_idx].mean(0) if heads is not None else \
        mean_head_activations(model, kept.subset(mean_idx), batch_size=batch_size, progress=progress)
    timings = {"filter+means": time.perf_counter() - t0}
    corrupted = _corrupted(model, [kept.prompts[i].query for i in trial_idx], corrupt, wrong or "", template)
    effects = indirect_effects(model, corrupted, means, method=method, metric="prob", progress=progress,
                               info={"model": model.name, "task": task.name, "seed": seed, "ranking": f"instruction_{corrupt}"})
    timings["indirect_effects"] = effects.seconds
    iv = InstructionVector.build(model, means, effects, k=k, task=task.name, task_source=task.source,
                                 template=template.to_dict(), style="instruction", instruction=task.instruction,
                                 corrupt=corrupt, wrong_instruction=wrong, seed=seed, mean_prompts=len(mean_idx),
                                 trials=len(trial_idx), filter=fstats,
                                 instruction_extraction={"key": key, "corrupt": corrupt})
    valid = zero_shot_prompts(model, task, "valid", n=sweep_prompts, seed=seed, template=template)
    sweep = layer_sweep(model, iv, valid, scales=scales, batch_size=batch_size * 2, progress=progress, split="valid")
    timings["layer_sweep"] = sweep.seconds
    iv = iv.replace(layer=sweep.best_layer, scale=sweep.best_scale, meta={"layer_selection": {
        "split": "valid", "n": sweep.n, "style": "zero_shot", "scales": list(sweep.scales), "top1": sweep.best_top1,
        "baseline_top1": sweep.baseline_top1}})
    res = Extraction.assemble(iv, effects, sweep, timings, filter=fstats)
    if out is not None:
        res.save(out)
    return res


@dataclass(frozen=True)
class IVComparison:
    """Two IVs of one task side by side (`compare_ivs`).

    Attributes:
        names: the two IVs' names.
        jaccard: ``|A & B| / |A | B|`` of their head sets (the top ``k`` of each).
        shared: the heads in both.
        cosine: of their vectors.
        agreement: Spearman correlation and top-k overlap of their AIE rankings, when given.
        scores: each one's zero-shot test top-1 at its own layer and scale, beside no vector.
    """

    task: str
    names: tuple[str, str]
    k: int
    jaccard: float
    shared: list[tuple[int, int]]
    cosine: float
    scores: VectorScores
    agreement: dict[str, float] = field(default_factory=dict)

    def to_pandas(self):
        return self.scores.to_pandas()

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "a": self.names[0], "b": self.names[1], "k": self.k, "jaccard": self.jaccard,
                "shared": [f"{l}.{h}" for l, h in self.shared], "cosine": self.cosine, **self.agreement}

    def plot(self, title: str | None = None):
        return self.scores.plot(title or f"{self.task}: {self.names[0]} vs {self.names[1]} (top-{self.k} Jaccard "
                                         f"{self.jaccard:.2f}, cosine {self.cosine:.2f})")

    def __repr__(self) -> str:
        cells = "; ".join(f"{r['name']} {r['top1']:.2f}" for r in self.scores.rows)
        return (f"IVComparison({self.task!r}: {self.names[0]} vs {self.names[1]}, top-{self.k} Jaccard "
                f"{self.jaccard:.2f} ({len(self.shared)} shared), cosine {self.cosine:.3f}; {cells})")


def compare_ivs(model: IVModel, task: Task | str, a: InstructionVector, b: InstructionVector, *,
                names: tuple[str, str] = ("instruction-built", "demonstration-built"), k: int | None = None,
                effects: tuple[IndirectEffects, IndirectEffects] | None = None, seed: int = 0,
                n_valid: int | None = 100, n_test: int | None = None, template: PromptTemplate = DEFAULT_TEMPLATE,
                batch_size: int = 16) -> IVComparison:
    """See the module docstring. ``k`` (default: the smaller IV's) takes each IV's first ``k`` heads
    (they are ordered by AIE). An IV without a layer (heads injection) gets one chosen on the
    validation split for this comparison."""
    a.check_compatible(model)
    b.check_compatible(model)
    if names[0] == names[1]:
        raise InputError("give the two IVs different names")
    k = min(a.k, b.k) if k is None else int(k)
    if not 1 <= k <= min(a.k, b.k):
        raise InputError(f"k must be in 1..{min(a.k, b.k)} (the smaller IV's heads), got {k}")
    ha, hb = a.heads[:k], b.heads[:k]
    fixed = {n: (iv.layer, iv.scale) for n, iv in zip(names, (a, b)) if iv.layer is not None}
    scores = choose_and_test(model, task, dict(zip(names, (a, b))), fixed=fixed, seed=seed, n_valid=n_valid,
                             n_test=n_test, template=template, batch_size=batch_size)
    agreement = rank_agreement(effects[0].aie, effects[1].aie, k=k) if effects is not None else {}
    return IVComparison(scores.task, tuple(names), k, jaccard(ha, hb), sorted(set(ha) & set(hb)), a.cosine(b),
                        scores, agreement)
