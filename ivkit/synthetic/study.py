"""The whole synthetic study in one call, resumable: pretrain, fine-tune, measure, look at heads.

`run_study` writes into ``out``:

* ``pretrain/checkpoint-*``: pretraining on the mixture (`ivkit.synthetic.train`)
* ``finetune/checkpoint-*``: fine-tuning on the discrete prior, from the last pretraining one
* ``measure/*.safetensors``: every squared error (`PromptLosses`)
* ``heads/*.json``: head rankings and the head-patching recovery
* ``*/key.json``: what each stage was computed from (settings, weight digests) and how long it took

Run it again and every stage whose key matches is loaded instead of computed; change a setting
and the stages that depend on it run again (training refuses a directory holding other settings:
use another ``out``).

Prompts: the conjugate's ``alpha`` and the heads are chosen on *validation* prompts, every
reported number comes from *test* prompts (separate seeds, never used in training).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import InputError
from ..core.io import atomic_write_json, file_sha256
from ..core.options import check_at_least, check_finite
from .bayes import BayesMixture
from .data import RegressionTask
from .heads import (
    HeadChange,
    HeadRanking,
    HeadRecovery,
    compare_rankings,
    patch_from_pretrained,
    rank_heads,
)
from .measure import (
    ConjugateSweep,
    DistanceProfile,
    ImpliedPrior,
    LossCurves,
    PromptLosses,
    condition_name,
    conjugate_sweep,
    eval_prompts,
    implied_prior,
    measure_losses,
)
from .model import ModelConfig
from .train import FINETUNE_DEFAULT, MODEL_FILE, TrainConfig, TrainRun, finetune, load_checkpoint, pretrain

log = logging.getLogger(__name__)


#: The study's data: 8 discrete vectors and label noise 0.25, chosen on validation prompts so that a
#: network pretrained within the CPU budget uses the discrete set (``docs/synthetic.md``, "How the
#: sizes were chosen"). `RegressionTask`'s own defaults are the paper's (64 vectors, noise 1).
STUDY_TASK = RegressionTask(noise=0.25, n_discrete=8)
#: The study's pretraining: 16000 steps of 32 prompts, no curriculum (about 12 minutes on one thread).
STUDY_PRETRAIN = TrainConfig(steps=16000, points_steps=0, dims_steps=0, save_every=4000)


@dataclass(frozen=True)
class StudyConfig:
    """Every setting of the study.

    Attributes:
        task, model: the data and the network (`RegressionTask`, `ModelConfig`); the task
            defaults to `STUDY_TASK`.
        pretrain, finetune: the two training phases (`TrainConfig`), by default `STUDY_PRETRAIN`
            and `FINETUNE_DEFAULT`.
        n_test, n_validation: prompts per prior for reporting and for choosing.
        alphas: the conjugate's label scales (1 is no conjugate and must be included).
        examples: the window of in-context example counts each prompt's loss is averaged over.
        bins: distance bins.
        head_examples: example counts at which heads are patched (at the query).
        head_prompts: prompts per prior for ranking heads, and for the recovery test.
        top_k: heads taken from the pretrained model in the recovery test.
        bayes_p_after: the discrete-prior weight of the Bayes mixture measured as the ideal
            "fine-tuned" model (the pretrained one is the mixture at ``task.p_discrete``): what the
            task-inference hypothesis predicts, measured exactly like the networks.
        seed: seeds evaluation prompts and bootstraps.
    """

    task: RegressionTask = STUDY_TASK
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: TrainConfig = STUDY_PRETRAIN
    finetune: TrainConfig = FINETUNE_DEFAULT
    n_test: int = 2000
    n_validation: int = 1000
    alphas: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)
    examples: tuple[int, int] = (1, 40)
    bins: int = 5
    head_examples: tuple[int, ...] = (2, 5, 10)
    head_prompts: int = 500
    top_k: int = 3
    bayes_p_after: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_test", "n_validation", "bins", "head_prompts", "top_k"):
            check_at_least(name, getattr(self, name), 1)
        check_at_least("seed", self.seed, 0)
        alphas = check_finite("alphas", self.alphas)
        if 1.0 not in alphas or any(a <= 0 for a in alphas):
            raise InputError(f"alphas must be positive and include 1 (no conjugate), got {list(alphas)}")
        lo, hi = self.examples
        if not 0 <= lo <= hi < self.task.n_points:
            raise InputError(f"examples={self.examples}: counts run from 0 to n_points - 1 = {self.task.n_points - 1}")
        if any(not 0 <= n < self.task.n_points for n in self.head_examples) or not self.head_examples:
            raise InputError(f"head_examples={self.head_examples}: each must be in 0..{self.task.n_points - 1}")
        if self.model.dim != self.task.dim or self.model.n_points < self.task.n_points:
            raise InputError(f"the model (dim {self.model.dim}, {self.model.n_points} points) does not fit the task "
                             f"(dim {self.task.dim}, {self.task.n_points} points)")
        (p,) = check_finite("bayes_p_after", (self.bayes_p_after,))
        if not 0.0 <= p <= 1.0:
            raise InputError(f"bayes_p_after is a probability: it must be in [0, 1], got {p}")
        if self.head_prompts > min(self.n_test, self.n_validation):
            raise InputError(f"head_prompts ({self.head_prompts}) must not exceed n_test and n_validation")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def bayes_names(self) -> tuple[str, str]:
        """The names of the ideal pretrained and fine-tuned models (Bayes mixtures)."""
        return f"Bayes, p={self.task.p_discrete:g}", f"Bayes, p={self.bayes_p_after:g}"


@dataclass(frozen=True)
class StudyResult:
    """Everything `run_study` measured (each part has ``to_pandas``, ``plot`` and a readable
    repr), and how long each stage took."""

    out: Path
    config: StudyConfig = field(repr=False)
    pretrain: TrainRun
    finetune: TrainRun
    continuous: PromptLosses = field(repr=False)
    discrete: PromptLosses = field(repr=False)
    curves: LossCurves
    distance: DistanceProfile
    conjugate: ConjugateSweep
    distance_bayes: DistanceProfile
    conjugate_bayes: ConjugateSweep
    implied: ImpliedPrior
    ranking_pretrained: HeadRanking
    ranking_finetuned: HeadRanking
    change: HeadChange
    recovery: HeadRecovery
    seconds: dict[str, float] = field(repr=False)


def _cached(folder: Path, key: dict[str, Any], compute: Callable[[], Any], save: Callable[[Any], None],
            load: Callable[[], Any], stage: str, seconds: dict[str, float]) -> Any:
    """Load a stage's result if its key matches, else compute and save it (key last)."""
    key_file = folder / "key.json"
    if key_file.is_file():
        stored = json.loads(key_file.read_text(encoding="utf-8"))
        if stored.get("key") == json.loads(json.dumps(key)):
            try:
                value = load()
                seconds[stage] = float(stored.get("seconds", 0.0))
                log.info("%s: loaded from %s", stage, folder)
                return value
            except Exception as e:  # noqa: BLE001 - a broken cache is recomputed, not fatal
                log.warning("%s: cached result unreadable (%s); computing again", stage, e)
        key_file.unlink()
    t0 = time.perf_counter()
    value = compute()
    save(value)
    seconds[stage] = time.perf_counter() - t0
    atomic_write_json(key_file, {"key": key, "seconds": seconds[stage]})
    return value


def _measure_stage(cfg: StudyConfig, out: Path, pre, ft, key: dict[str, Any], seconds: dict[str, float]):
    t = cfg.task
    b_pre, b_ft = cfg.bayes_names
    models = {"pretrained": pre, "fine-tuned": ft, b_pre: BayesMixture(t), b_ft: BayesMixture(t, cfg.bayes_p_after)}
    names = ("continuous_test", "discrete_test", "continuous_validation")

    def compute():
        val = eval_prompts(t, cfg.n_validation, "continuous", "validation", seed=cfg.seed)
        return (measure_losses(models, eval_prompts(t, cfg.n_test, "continuous", "test", seed=cfg.seed), t, alphas=cfg.alphas),
                measure_losses({"pretrained": pre, "fine-tuned": ft}, eval_prompts(t, cfg.n_test, "discrete", "test",
                                                                                   seed=cfg.seed), t, prior="discrete"),
                measure_losses({"fine-tuned": ft, b_ft: models[b_ft]}, val, t, alphas=cfg.alphas, predictors=()))

    def save(values):
        for name, v in zip(names, values):
            v.save(out / f"{name}.safetensors")

    return _cached(out, key, compute, save, lambda: tuple(PromptLosses.load(out / f"{n}.safetensors") for n in names),
                   "measure", seconds)


def _heads_stage(cfg: StudyConfig, out: Path, pre, ft, test: PromptLosses, chosen: float, key: dict[str, Any],
                 seconds: dict[str, float]):
    t, k = cfg.task, cfg.head_prompts

    def compute():
        dis = eval_prompts(t, k, "discrete", "validation", seed=cfg.seed)
        con = eval_prompts(t, k, "continuous", "validation", seed=cfg.seed)
        r_pre = rank_heads(pre, dis, con, t, examples=cfg.head_examples, model="pretrained", seed=cfg.seed)
        r_ft = rank_heads(ft, dis, con, t, examples=cfg.head_examples, model="fine-tuned", seed=cfg.seed)
        idx = list(cfg.head_examples)
        extra = {} if chosen == 1.0 else {
            f"fine-tuned, conjugate x{chosen:g}": test.errors[condition_name("fine-tuned", chosen)][:k, idx].mean(1)}
        test_prompts = eval_prompts(t, cfg.n_test, "continuous", "test", seed=cfg.seed).first(k)
        rec = patch_from_pretrained(pre, ft, test_prompts, r_pre.top(cfg.top_k), examples=cfg.head_examples, extra=extra,
                                    seed=cfg.seed)
        return r_pre, r_ft, rec

    def save(values):
        for name, v in zip(("ranking_pretrained", "ranking_finetuned", "recovery"), values):
            atomic_write_json(out / f"{name}.json", v.to_dict())

    def load():
        return (HeadRanking.from_dict(json.loads((out / "ranking_pretrained.json").read_text())),
                HeadRanking.from_dict(json.loads((out / "ranking_finetuned.json").read_text())),
                HeadRecovery.from_dict(json.loads((out / "recovery.json").read_text())))

    return _cached(out, key, compute, save, load, "heads", seconds)


def run_study(out: str | Path, config: StudyConfig | None = None, *, progress: bool = True) -> StudyResult:
    """Run (or resume) the whole study into ``out``; see the module docstring."""
    cfg = config or StudyConfig()
    out = Path(out)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    pre_run = pretrain(out / "pretrain", cfg.task, cfg.model, cfg.pretrain, progress=progress)
    seconds["pretrain"] = pre_run.seconds
    ft_run = finetune(out / "finetune", pre_run.final, cfg.task, cfg.finetune, progress=progress)
    seconds["finetune"] = ft_run.seconds
    pre, ft = load_checkpoint(pre_run.final), load_checkpoint(ft_run.final)
    digests = {name: file_sha256(run.final / MODEL_FILE)[:16] for name, run in (("pretrained", pre_run), ("fine-tuned", ft_run))}
    key = {"config": cfg.to_dict(), "weights": digests}
    cont, disc, val = _measure_stage(cfg, out / "measure", pre, ft, key, seconds)
    sweep = conjugate_sweep(val, cont, cfg.alphas, examples=cfg.examples, seed=cfg.seed)
    b_pre, b_ft = cfg.bayes_names
    sweep_b = conjugate_sweep(val, cont, cfg.alphas, before=b_pre, after=b_ft, examples=cfg.examples, seed=cfg.seed)
    t1 = time.perf_counter()
    implied = implied_prior({"pretrained": pre, "fine-tuned": ft}, eval_prompts(cfg.task, cfg.head_prompts, "mixture", "test",
                                                                             seed=cfg.seed), cfg.task, examples=cfg.examples,
                            seed=cfg.seed)
    seconds["implied prior"] = time.perf_counter() - t1
    r_pre, r_ft, rec = _heads_stage(cfg, out / "heads", pre, ft, cont, sweep.chosen, {**key, "alpha": sweep.chosen}, seconds)
    conj_name = condition_name("fine-tuned", sweep.chosen)
    distance = cont.by_distance(conjugate=conj_name if sweep.chosen != 1.0 else None, examples=cfg.examples,
                                bins=cfg.bins, seed=cfg.seed)
    conj_b = condition_name(b_ft, sweep_b.chosen)
    distance_b = cont.by_distance(before=b_pre, after=b_ft, conjugate=conj_b if sweep_b.chosen != 1.0 else None,
                                  examples=cfg.examples, bins=cfg.bins, seed=cfg.seed)
    keep = ["pretrained", "fine-tuned"] + ([conj_name] if sweep.chosen != 1.0 else []) + [
        "zero predictor", "ridge (continuous Bayes)", "discrete Bayes", "mixture Bayes"]
    curves = LossCurves(cont.curves(keep).rows + disc.curves().rows, n_prompts=cfg.n_test)
    seconds["this session"] = time.perf_counter() - t0
    return StudyResult(out, cfg, pre_run, ft_run, cont, disc, curves, distance, sweep, distance_b, sweep_b, implied, r_pre,
                       r_ft, compare_rankings(r_pre, r_ft, k=cfg.top_k), rec, seconds)


def summary_numbers(result: StudyResult) -> dict[str, Any]:
    """The headline numbers, as plain floats (for a report or JSON)."""
    lo, hi = result.config.examples
    cont = result.continuous
    out: dict[str, Any] = {}
    for name in ("pretrained", "fine-tuned", "ridge (continuous Bayes)", "mixture Bayes", "discrete Bayes", "zero predictor"):
        v = cont.window(name, (lo, hi))
        out[f"continuous/{name}"] = float(np.mean(v))
    return out
