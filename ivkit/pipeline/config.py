"""One typed configuration for an extraction, checked once, here.

`ExtractConfig` holds every setting of `ivkit.extract`. Constructing one checks every
field (a wrong value is an `InputError` naming the option, before any forward
pass); `ExtractConfig.check_model` adds the checks that need the model (``top_k`` against
its heads, the method against its backend). The command line builds ``ivkit extract``'s options
from these fields and their ``help`` metadata (`ivkit.cli.options`), so the API and the CLI
take the same options with the same checks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InputError
from ..core.options import (
    CleanStyle,
    InjectionChoice,
    Method,
    MetricName,
    PostNorm,
    RankingChoice,
    Recipe,
    Selection,
    check_at_least,
    check_choice,
    check_finite,
    shown,
    unknown_option,
)
from ..core.prompts import DEFAULT_TEMPLATE, PromptTemplate
from ..mediation import resolve_method
from ..models.model import IVModel
from ..vectors.iv import check_weights_local


def _opt(default: Any, help: str, cli: str | None = None, **extra: Any) -> Any:
    """A field with its command-line help (and flag name, when not ``--field-name``)."""
    return field(default=default, metadata={"help": help, **({"cli": cli} if cli is not None else {}), **extra})


@dataclass(frozen=True)
class ExtractConfig:
    """Every setting of an extraction (see `ivkit.extract` for what each stage does)."""

    recipe: Recipe = _opt("reference", "reference (the function-vectors recipe, or what the options below say) or "
                                       "auto (tries both rankings, the top 3/5/10/20 and the greedy heads, residual and "
                                       "heads injection, and picks on the validation split)")
    shots: int = _opt(10, "demonstrations per prompt")
    mean_prompts: int = _opt(100, "clean prompts averaged for the mean head activations")
    trials: int = _opt(25, "corrupted prompts for the indirect effects")
    top_k: tuple[int, ...] | None = _opt(None, "heads in the vector (default 10); several (3,5,10,20) are chosen "
                                               "among on the validation split; not with --select greedy")
    seed: int = _opt(0, "seeds every random choice: same seed, same numbers")
    method: Method | None = _opt(None, "indirect effects: fast (exact; default on torch and local nnsight), naive "
                                       "(the per-head oracle; default elsewhere) or attribution (approximate)")
    metric: MetricName = _opt("prob", "prob (first answer token), logit, or nll (whole answer, -ΔNLL)")
    style: CleanStyle = _opt("few_shot", "clean prompt style: few_shot (function vectors) or instruction "
                                         "(zero-shot with the task's instruction)")
    instruction: str | None = _opt(None, "the task's instruction for --style instruction (default: the built-in "
                                         "task's own)")
    template: PromptTemplate = _opt(DEFAULT_TEMPLATE, "the prompt template", cli="")
    post_norm: PostNorm = _opt("linearized", "Gemma's post-attention norm in a head's contribution")
    sweep: bool = _opt(True, "choose the injection layer and scale on the validation split")
    sweep_prompts: int = _opt(100, "validation queries in the sweep (at most)")
    scales: tuple[float, ...] = _opt((1.0, 2.0, 3.0, 4.0), "IV multipliers the sweep tries with every layer")
    layer: int | None = _opt(None, "fix the residual injection layer instead of sweeping")
    injection: InjectionChoice = _opt("residual", "residual (add the vector after one layer, the reference), heads "
                                                  "(set each head to scale x its mean at its own layer) or auto "
                                                  "(the validation sweep chooses)")
    ranking: RankingChoice = _opt("shuffled", "what ranks the heads: shuffled (each head patched on the shuffled "
                                              "10-shot trials, the reference), zero_shot (on zero-shot training "
                                              "prompts) or both (the validation sweep chooses)")
    zero_shot_trials: int = _opt(100, "zero-shot prompts for the zero_shot ranking")
    selection: Selection = _opt("top_k", "top_k (the top k heads of the ranking, the reference) or greedy (heads "
                                         "added one at a time for zero-shot accuracy on training queries; the "
                                         "validation sweep chooses how many)", cli="--select")
    greedy_pool: int = _opt(15, "greedy: the top heads of each ranking it chooses from")
    greedy_max_heads: int = _opt(8, "greedy: at most this many heads")
    greedy_scale: float = _opt(3.0, "greedy: the heads-injection scale the path is chosen at")
    greedy_queries: int = _opt(100, "greedy: zero-shot training queries it scores on")
    filter_correct: bool = _opt(True, "keep only clean prompts the model answers right (off: for models that "
                                      "cannot do the task at all, such as random-init tests)", cli="--filter")
    batch_size: int = _opt(16, "prompts per forward pass")
    max_memory_mb: float = _opt(1024.0, "working-memory cap of the fast method and the fast sweep")
    prompts_per_pass: int | None = _opt(None, "fast method: corrupted prompts per continuation (default: as many "
                                              "as fit in max_memory_mb)", cli="")

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (normalising, once)
        for name, kind in (("recipe", Recipe), ("method", Method), ("metric", MetricName), ("style", CleanStyle),
                           ("post_norm", PostNorm), ("injection", InjectionChoice), ("ranking", RankingChoice),
                           ("selection", Selection)):
            if not (name == "method" and self.method is None):
                check_choice(name, getattr(self, name), kind)
        if self.top_k is not None:
            ks = (self.top_k,) if isinstance(self.top_k, int) else tuple(self.top_k)
            if any(isinstance(k, bool) or not isinstance(k, int) for k in ks):
                raise InputError(f"{shown('top_k')} must be whole numbers, got {list(ks)}")
            fix("top_k", tuple(sorted(set(ks))))
            if not self.top_k:
                raise InputError(f"{shown('top_k')} needs at least one value")
        if not tuple(self.scales):
            raise InputError("the sweep needs at least one finite scale, got none")
        fix("scales", check_finite("scales", self.scales))
        for name, low in (("shots", 0 if self.style == "instruction" else 1), ("mean_prompts", 1), ("trials", 1),
                          ("zero_shot_trials", 1), ("sweep_prompts", 1), ("batch_size", 1), ("seed", 0),
                          ("greedy_pool", 1), ("greedy_max_heads", 1), ("greedy_queries", 1)):
            fix(name, check_at_least(name, getattr(self, name), low))
        if self.instruction is not None:
            if not isinstance(self.instruction, str) or not self.instruction.strip():
                raise InputError(f"{shown('instruction')} must be non-empty text, got {self.instruction!r}")
            if self.style != "instruction":
                raise InputError(f"{shown('instruction')} is used by {shown('style')} instruction only (the clean "
                                 f"prompts are {self.style}); add {shown('style')} instruction or leave it out")
        if not math.isfinite(float(self.greedy_scale)):
            raise InputError(f"{shown('greedy_scale')} must be finite, got {self.greedy_scale}")
        self._check_combinations()

    def _check_combinations(self) -> None:
        s, sweep = shown, "the validation sweep"
        if self.recipe == "auto":
            chosen = [n for n, d in (("ranking", "shuffled"), ("top_k", None), ("injection", "residual"),
                                     ("selection", "top_k")) if getattr(self, n) != d]
            if chosen or not self.sweep or self.layer is not None:
                raise InputError(f"{s('recipe')} auto chooses the ranking, the heads and the injection itself, on "
                                 f"{sweep}: leave out {', '.join(s(n) for n in chosen) or s('layer') + '/no sweep'}")
        if self.layer is not None and self.injection != "residual":
            raise InputError(f"{s('layer')} fixes a residual injection layer; it does not go with {s('injection')} "
                             f"{self.injection}")
        sweeping = self.sweep and self.layer is None
        if self.top_k is not None and len(self.top_k) > 1 and not sweeping:
            raise InputError(f"several {s('top_k')} candidates need {sweep} to choose among them")
        if self.injection == "auto" and not sweeping:
            raise InputError(f"{s('injection')} auto needs {sweep} to choose between residual and heads")
        if self.ranking == "both" and not sweeping:
            raise InputError(f"{s('ranking')} both needs {sweep} to choose between the rankings")
        if self.selection == "greedy":
            if self.top_k is not None:
                raise InputError(f"{s('top_k')} does not go with {s('selection')} greedy: its candidates are the "
                                 f"prefixes of the greedy path; cap them with {s('greedy_max_heads')}")
            if not sweeping:
                raise InputError(f"{s('selection')} greedy needs {sweep} to choose the path's length")

    # ---- derived ---------------------------------------------------------------------------

    @property
    def ks(self) -> tuple[int, ...]:
        """The top-k candidates (10 when none is given; 3, 5, 10 and 20 for the auto recipe)."""
        return (3, 5, 10, 20) if self.recipe == "auto" else (self.top_k or (10,))

    @property
    def rankings(self) -> tuple[str, ...]:
        return ("shuffled", "zero_shot") if self.ranking == "both" or self.recipe == "auto" else (self.ranking,)

    @property
    def injections(self) -> tuple[str, ...]:
        return ("residual", "heads") if self.injection == "auto" or self.recipe == "auto" else (self.injection,)

    @property
    def selections(self) -> tuple[str, ...]:
        return ("top_k", "greedy") if self.recipe == "auto" else (self.selection,)

    @property
    def sweeps(self) -> bool:
        """Whether the validation sweep chooses the layer and scale (not when ``layer`` is fixed)."""
        return self.sweep and self.layer is None

    def check_model(self, model: IVModel) -> None:
        """The checks that need the model: ``top_k`` and ``layer`` in range, the method runnable on
        its backend, ``W_O`` on this machine."""
        n = model.geometry.n_total_heads
        if self.top_k is not None and (self.top_k[0] < 1 or self.top_k[-1] > n):
            ks = list(self.top_k) if len(self.top_k) > 1 else self.top_k[0]
            raise InputError(f"{shown('top_k')} must be in 1..{n} (the model's heads), got {ks}")
        if self.layer is not None and not 0 <= self.layer < model.geometry.n_layers:
            raise InputError(f"{shown('layer')} {self.layer} is out of range: {model.name} has layers "
                             f"0..{model.geometry.n_layers - 1}")
        resolve_method(model, self.method)
        check_weights_local(model)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values (recorded with every stage's output)."""
        out = dataclasses.asdict(self)
        out["template"] = self.template.to_dict()
        out["top_k"] = list(self.top_k) if self.top_k is not None else None
        out["scales"] = list(self.scales)
        return out

    @classmethod
    def from_options(cls, **options: Any) -> "ExtractConfig":
        """A config from keyword options; an unknown one is an error naming the closest option."""
        known = [f.name for f in dataclasses.fields(cls)]
        for name in options:
            if name not in known:
                raise unknown_option(name, known, "extract")
        if isinstance(options.get("top_k"), int):
            options["top_k"] = (options["top_k"],)
        return cls(**options)
