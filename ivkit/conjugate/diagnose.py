"""The IV diagnosis of conjugate prompting: does a conjugated prompt put the tuned model's residual
stream back in line with the base model's instruction vector, and does injecting that vector win
back what conjugation wins back?

Concepts
--------
* **The IV** is the *base* model's vector for the in-context task (``repeat``, ``uppercase``),
  extracted with `ivkit.extract` from a task file of that task (`extract_task_iv`);
  its injection layer and scale were chosen on that task's validation split, before any probe
  prompt is seen.
* **Alignment** (`alignment`): per layer, the mean cosine between the last-token residual
  stream (the output of each block) and the IV, over the probe prompts of that task under one
  transform, from `ivkit.activations.residual_stream` (one forward pass per transform and model
  serves the raw and the centred alignment and the centre). The prompts are cut into
  ``chunks`` consecutive groups and each is measured on its own: the mean over prompts is the
  size-weighted mean of the chunk means (exactly what one call on all prompts returns), and the
  spread of the chunk means gives a t interval (``chunks - 1`` degrees of freedom).
* **Centred alignment**: the same, with each model's residual stream centred first: from every
  last-token state the model's mean state over all the diagnosis's prompts is subtracted (the
  mean of each transform's mean, `pooled_centre`). Residual streams share a large common
  direction, so raw cosines with any fixed vector can sit at one level for every prompt (gemma-3's
  do); centring removes that shared part, and what is left says which prompts move the state
  *towards the IV relative to the others*. The centre is per model, so centred values compare
  transforms within a model, not levels between the base and the tuned model.
* **Injection**: the plain probe prompts of the task, on the tuned model, with the IV added (its
  own layer and scale) at the last prompt token and every generated token
  (`ivkit.evaluation.generate_ids` with ``iv=``), and the same with a random direction of
  the IV's norm (the noise floor). Its recovery is measured like a transform's
  (`Recovery`).

If conjugation works by restoring task inference, a transform that recovers in-context behaviour
should also raise the tuned model's alignment, and the IV should recover a similar share.
`Diagnosis.verdict` says whether each holds, with the numbers.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..activations import residual_stream
from ..core.errors import InputError
from ..core.html import table
from ..core.io import atomic_write_json
from ..core.prompts import EncodedPrompts
from ..models.model import IVModel
from ..pipeline.extract import extract
from ..vectors import InstructionVector
from .plots import grouped_bars, layer_profiles
from .probe import Engine, ProbeItem, ProbeRun, render
from .results import ConjugateResult, Recovery, bootstrap_recovery, paired, wilson
from .runner import LazyModel, cached_run, run_key
from .transforms import Transform, identity

log = logging.getLogger(__name__)


def t_interval(values: Sequence[float], weights: Sequence[float] | None = None) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the (weighted) mean of ``values`` and its 95% t interval from their
    spread (``len(values) - 1`` degrees of freedom); NaN bounds with fewer than two values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    mean = float((v * w).sum() / w.sum())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def encoded(model: IVModel, items: Sequence[ProbeItem], transform: Transform) -> EncodedPrompts:
    """The items' prompts under ``transform``, tokenised (answers are not needed here)."""
    prompts = [render(it, transform).prompt for it in items]
    ids = [model.encode(p.text) for p in prompts]
    return EncodedPrompts(prompts, ids, [[] for _ in ids], torch.zeros(len(ids), dtype=torch.long))


def pooled_centre(model: IVModel, items: Sequence[ProbeItem], transforms: Sequence[Transform], *,
                  batch_size: int = 16, streams: Callable[[Transform], Tensor] | None = None
                  ) -> Float[Tensor, "layers d_model"]:
    """The model's mean last-token block output over the items' prompts under every transform:
    the mean of each transform's mean, ``(n_layers, d_model)`` (see the module docstring).
    ``streams(transform)`` may supply the stored `residual_stream` of each transform's prompts."""
    if not transforms or not items:
        raise InputError("pooled_centre needs at least one transform and one prompt")
    streams = streams or (lambda t: residual_stream(model, encoded(model, items, t), batch_size=batch_size))
    means = [streams(t).double().mean(0) for t in transforms]
    return torch.stack(means).mean(0).float()


def alignment(model: IVModel, items: Sequence[ProbeItem], transform: Transform,
              vector: Float[Tensor, " d_model"], *, chunks: int = 10, batch_size: int = 16,
              center: Float[Tensor, "layers d_model"] | None = None,
              stream: Float[Tensor, "prompts layers d_model"] | None = None
              ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Per layer, the mean cosine between the last-token block output (minus ``center``, if
    given) and ``vector`` over the items' prompts under ``transform`` (see the module docstring).
    ``stream`` may supply those outputs (`residual_stream` of the same prompts), so one forward
    pass serves the raw and the centred alignment.

    Returns:
        ``means`` ``(n_layers,)``; ``chunk_means`` ``(n_chunks, n_layers)``, one row per group of
        consecutive prompts (``min(chunks, n)`` groups); and the groups' sizes.
    """
    n = len(items)
    if n == 0:
        raise InputError("alignment needs at least one prompt")
    if stream is None:
        stream = residual_stream(model, encoded(model, items, transform), batch_size=batch_size)
    if stream.shape[0] != n:
        raise InputError(f"stream holds {stream.shape[0]} prompts, the items {n}")
    if vector.shape != stream.shape[2:]:
        raise InputError(f"the vector has shape {tuple(vector.shape)}; the residual stream needs ({stream.shape[2]},)")
    if center is not None and center.shape != stream.shape[1:]:
        raise InputError(f"center has shape {tuple(center.shape)}; it must be (n_layers, d_model) = "
                         f"{tuple(stream.shape[1:])}")
    h = stream.double() - (0 if center is None else center.double()[None])
    cos = torch.nn.functional.cosine_similarity(h, vector.double()[None, None], dim=-1).numpy()  # (n, layers)
    bounds = np.linspace(0, n, min(chunks, n) + 1).round().astype(int)
    pairs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    chunk_means = np.array([cos[a:b].mean(0) for a, b in pairs])
    sizes = np.array([b - a for a, b in pairs], dtype=float)
    return (chunk_means * sizes[:, None]).sum(0) / n, chunk_means, tuple(int(x) for x in sizes)


@dataclass(frozen=True)
class Alignment:
    """One model's alignment with the IV on one task's prompts under one transform.

    Attributes:
        model, role, transform, task: what was measured.
        n: prompts.
        layers: the mean cosine per layer.
        chunk_means: ``(chunks, n_layers)`` per-chunk means (for the interval).
        chunk_sizes: prompts per chunk.
    """

    model: str
    role: str
    transform: str
    task: str
    n: int
    layers: tuple[float, ...]
    chunk_means: tuple[tuple[float, ...], ...]
    chunk_sizes: tuple[int, ...]

    def at(self, layer: int) -> tuple[float, float, float]:
        """``(mean, lo, hi)`` at ``layer``, with the chunk-means t interval."""
        return t_interval([c[layer] for c in self.chunk_means], self.chunk_sizes)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, a: dict[str, Any]) -> "Alignment":
        return cls(**{**a, "layers": tuple(a["layers"]), "chunk_means": tuple(map(tuple, a["chunk_means"])),
                      "chunk_sizes": tuple(a["chunk_sizes"])})


@dataclass(frozen=True)
class Diagnosis:
    """The IV diagnosis of one base / tuned pair on one in-context task.

    Attributes:
        task: the in-context task.
        iv_layer, iv_scale: where and how strongly the IV is injected (chosen on validation).
        iv_info: the IV's provenance (heads, validation top-1, task file).
        alignments: one `Alignment` per (model, transform).
        centred: the same, centred (`pooled_centre`); empty in diagnoses stored before it.
        injected: the tuned model's runs with the IV (``iv``) and with a random direction of its
            norm (``iv_random``) on the plain prompts.
        probe: the plain and conjugate runs of the pair (the comparison).
        seed: seeds the bootstrap.
    """

    task: str
    iv_layer: int
    iv_scale: float
    iv_info: dict[str, Any]
    alignments: tuple[Alignment, ...]
    injected: tuple[ProbeRun, ...]
    probe: ConjugateResult
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    centred: tuple[Alignment, ...] = ()

    def _centred(self, a: Alignment) -> Alignment | None:
        return next((c for c in self.centred if c.model == a.model and c.transform == a.transform), None)

    def _rate(self, run: ProbeRun) -> tuple[float, float, float, int, int]:
        k, n = run.rate("in_context", self.task)
        return (*wilson(k, n), k, n)

    def recoveries(self) -> list[Recovery]:
        """The recovery on this task of every transform and of the IV (and its random control)."""
        p = self.probe
        base, tuned = p.run(p.base, "none"), p.run(p.tuned, "none")
        out = [p.recovery(s, self.task) for s in p.transforms if s != "none"]
        for run in self.injected:
            b, t, c = paired([base, tuned, run], self.task)
            out.append(bootstrap_recovery(b, t, c, treatment=run.condition, task=self.task, n_boot=p.n_boot,
                                          seed=self.seed))
        return out

    def to_pandas(self):
        """One row per (model, transform or injection): alignment at the IV layer with its t
        interval (raw, and ``centred_alignment``), the peak alignment and its layer, and the
        in-context rate on the task with its Wilson interval."""
        import pandas as pd

        rows = []
        for a in self.alignments:
            mean, lo, hi = a.at(self.iv_layer)
            peak = int(np.argmax(a.layers))
            rate, rlo, rhi, k, n = self._rate(self.probe.run(a.model, a.transform))
            rows.append({"model": a.model, "role": a.role, "condition": a.transform, "alignment": mean,
                         "alignment_lo": lo, "alignment_hi": hi, "peak_alignment": a.layers[peak], "peak_layer": peak,
                         "in_context": rate, "in_context_lo": rlo, "in_context_hi": rhi, "count": k, "n": n})
            c = self._centred(a)
            if c is not None:
                cm, clo, chi = c.at(self.iv_layer)
                rows[-1].update(centred_alignment=cm, centred_alignment_lo=clo, centred_alignment_hi=chi)
        for run in self.injected:
            rate, rlo, rhi, k, n = self._rate(run)
            rows.append({"model": run.model, "role": "tuned", "condition": f"none + {run.condition}",
                         "in_context": rate, "in_context_lo": rlo, "in_context_hi": rhi, "count": k, "n": n})
        return pd.DataFrame(rows)

    def profiles(self, centred: bool = False):
        """The alignment per layer: one row per (model, transform, layer); ``centred`` for the
        centred alignment."""
        import pandas as pd

        src = self.centred if centred else self.alignments
        if centred and not src:
            raise InputError("this diagnosis has no centred alignment (it was stored before ivkit measured it)")
        return pd.DataFrame([{"model": a.model, "role": a.role, "transform": a.transform, "layer": l,
                              "alignment": v} for a in src for l, v in enumerate(a.layers)])

    def plot(self, title: str | None = None):
        """Two panels' worth of bars: the alignment at the IV layer per transform (base against
        tuned, t intervals), and the in-context rate on the task, the IV injections included."""
        df = self.to_pandas()
        col = "centred_alignment" if "centred_alignment" in df else "alignment"
        name = "centred alignment" if col == "centred_alignment" else "alignment"
        al = df[df[col].notna()].assign(metric=f"{name} with the base IV at layer {self.iv_layer}",
                                        value=lambda d: d[col], lo=lambda d: d[f"{col}_lo"], hi=lambda d: d[f"{col}_hi"])
        ic = df.assign(metric=f"in-context rate ({self.task})", value=df["in_context"], lo=df["in_context_lo"],
                       hi=df["in_context_hi"])
        both = __import__("pandas").concat([al, ic], ignore_index=True)
        both["label"] = [m if m == r else f"{m} ({r})" for m, r in zip(both["model"], both["role"])]
        return grouped_bars(both, x="condition", group="label", y="value", lo="lo", hi="hi", facet="metric",
                            title=title or f"IV diagnosis on {self.task}: {self.probe.base} vs {self.probe.tuned}")

    def plot_profiles(self, title: str | None = None, centred: bool = False):
        """The alignment profile over layers, one line per (transform, model); ``centred`` for
        the centred alignment."""
        what = "Centred alignment" if centred else "Alignment"
        return layer_profiles(self.profiles(centred), layer="layer", y="alignment", line="transform", dash="role",
                              marked_layer=self.iv_layer, y_title="cosine with the base IV",
                              title=title or f"{what} with the base model's {self.task} IV (solid: base, dotted: tuned)")

    def verdict(self) -> str:
        """Plain sentences: does conjugation raise the tuned model's alignment, and does the IV
        recover what conjugation recovers? With the numbers and intervals."""
        return _verdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "iv_layer": self.iv_layer, "iv_scale": self.iv_scale, "iv_info": self.iv_info,
                "alignments": [a.to_dict() for a in self.alignments], "injected": [r.to_dict() for r in self.injected],
                "probe": self.probe.to_dict(), "seed": self.seed, "extra": self.extra,
                "centred": [a.to_dict() for a in self.centred]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Diagnosis":
        al = tuple(Alignment.from_dict(a) for a in d["alignments"])
        return cls(d["task"], int(d["iv_layer"]), float(d["iv_scale"]), d["iv_info"], al,
                   tuple(ProbeRun.from_dict(r) for r in d["injected"]), ConjugateResult.from_dict(d["probe"]),
                   int(d["seed"]), d.get("extra", {}), tuple(Alignment.from_dict(a) for a in d.get("centred", [])))

    def _repr_html_(self) -> str:
        keep = ["model", "condition", "alignment", "centred_alignment", "in_context", "in_context_lo", "in_context_hi"]
        df = self.to_pandas()
        rows = df[[c for c in keep if c in df]].to_dict("records")
        verdict = "".join(f"<li>{html.escape(line)}</li>" for line in self.verdict().splitlines())
        return (f"<b>{html.escape(repr(self).splitlines()[0])}</b>" + table(rows, digits=3) + f"<ul>{verdict}</ul>")

    def __repr__(self) -> str:
        return (f"Diagnosis({self.task!r}: {self.probe.base} vs {self.probe.tuned}, IV layer {self.iv_layer}, "
                f"scale {self.iv_scale:g})\n" + self.verdict())


def _interval(x: tuple[float, float, float]) -> str:
    return f"{x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}]"


def _verdict(d: Diagnosis) -> str:
    p, lines = d.probe, []
    src, what = (d.centred, "Centred alignment") if d.centred else (d.alignments, "Alignment")
    tuned_plain = next(a for a in src if a.model == p.tuned and a.transform == "none").at(d.iv_layer)
    base_plain = next(a for a in src if a.model == p.base and a.transform == "none").at(d.iv_layer)
    lines.append(f"{what} at layer {d.iv_layer}, plain prompts: base {_interval(base_plain)}, tuned "
                 f"{_interval(tuned_plain)}.")
    recs = {r.treatment: r for r in d.recoveries()}
    for a in src:
        if a.model != p.tuned or a.transform == "none":
            continue
        al = a.at(d.iv_layer)
        moved = "raises" if al[1] > tuned_plain[2] else "lowers" if al[2] < tuned_plain[1] else "does not clearly change"
        lines.append(f"{a.transform} {moved} the tuned model's alignment ({_interval(al)}); {recs[a.transform]}.")
    for cond in ("iv", "iv_random"):
        if cond in recs:
            lines.append(f"Injecting {'the base IV' if cond == 'iv' else 'a random vector of its norm'}: {recs[cond]}.")
    iv = recs.get("iv")
    best = max((r for r in recs.values() if r.treatment not in ("iv", "iv_random")), key=lambda r: r.gain[0],
               default=None)
    if iv is not None and best is not None:
        same = iv.gain[1] <= best.gain[2] and best.gain[1] <= iv.gain[2]
        lines.append(f"The IV's gain {_interval(iv.gain)} against the best transform's ({best.treatment}) "
                     f"{_interval(best.gain)}: " + ("the intervals overlap (no measurable difference)." if same else
                                                    "the IV recovers more." if iv.gain[0] > best.gain[0] else
                                                    "the IV recovers less."))
    return "\n".join(lines)


def extract_task_iv(model: IVModel, task: str | Path, out: str | Path | None = None, **options: Any
                    ) -> InstructionVector:
    """The base model's IV for an in-context task, through `ivkit.extract` (layer and scale
    chosen on the task's validation split); ``out`` makes it resumable."""
    return extract(model, task, out=out, **options).iv


def diagnose(base: IVModel | str | Path, tuned: IVModel | str | Path, items: Sequence[ProbeItem],
             transforms: Sequence[Transform], iv: InstructionVector, *, probe: ConjugateResult | None = None,
             labels: tuple[str, str] = ("base", "tuned"), chunks: int = 10, control_seed: int = 0,
             out: str | Path | None = None, max_new_tokens: int = 10, batch_size: int = 16,
             engine: Engine = "generate_ids", seed: int = 0, progress: bool = True) -> Diagnosis:
    """The IV diagnosis on the items of one task (see the module docstring).

    Args:
        items: probe items, all of one task (the IV's).
        transforms: the transforms (``none`` is added if absent).
        iv: the base model's IV for that task, with its layer chosen.
        probe: the pair's `ConjugateResult` if already run (else the plain and conjugate
            runs are made here, stored under ``out``).
        chunks: groups of prompts for the alignment interval.
        control_seed: seeds the random-direction control.
        engine: how the injection runs decode (see `probe`).
    """
    from .runner import conjugate

    tasks = {it.task for it in items}
    if len(tasks) != 1:
        raise InputError(f"diagnose takes the items of one task (the IV's), got {sorted(tasks)}")
    if iv.injection != "residual" or iv.layer is None:
        raise InputError("diagnose needs an IV injected into the residual stream at a chosen layer "
                         "(extract it with the default injection='residual')")
    task = tasks.pop()
    if not any(t.name == "none" for t in transforms):
        transforms = [identity(), *transforms]
    if probe is None:
        probe = conjugate(base, tuned, items, transforms, out=out, labels=labels, max_new_tokens=max_new_tokens,
                          batch_size=batch_size, engine=engine, seed=seed, progress=progress)
    aligns, centred, injected = [], [], []
    for ref, label, role in ((base, labels[0], "base"), (tuned, labels[1], "tuned")):
        lm = LazyModel(ref, label)
        streams = Streams(lm, items, batch_size)
        aligns += [cached_alignment(Path(out) if out else None, lm, role, items, t, iv, chunks=chunks,
                                    batch_size=batch_size, streams=streams) for t in transforms]
        centred += cached_centred(Path(out) if out else None, lm, role, items, transforms, iv, chunks=chunks,
                                  batch_size=batch_size, streams=streams)
        streams.clear()  # before the generation passes
        if role == "tuned":
            for cond, vec in (("iv", iv), ("iv_random", iv.with_random_directions(control_seed))):
                injected.append(cached_run(Path(out) if out else None, lm, items, identity(), condition=cond, iv=vec,
                                           max_new_tokens=max_new_tokens, batch_size=batch_size, engine=engine,
                                           progress=progress))
        lm.release()
    info = {"heads": iv.heads, "task_source": iv.meta.get("task_source"), "layer_selection": iv.meta.get("layer_selection"),
            "norm": iv.norm, "control_seed": control_seed, "chunks": chunks}
    return Diagnosis(task, int(iv.layer), float(iv.scale), info, tuple(aligns), tuple(injected), probe, seed,
                     centred=tuple(centred))


class Streams:
    """Each transform's `residual_stream` on one model, computed once when first asked for and
    kept until `clear` (about ``prompts x layers x d_model`` floats per transform). Keyed by the
    transform object, not its name: two transforms may share a name."""

    def __init__(self, model: LazyModel, items: Sequence[ProbeItem], batch_size: int):
        self.model, self.items, self.batch_size = model, items, batch_size
        self._cache: dict[int, tuple[Transform, Tensor]] = {}

    def __call__(self, transform: Transform) -> Tensor:
        if id(transform) not in self._cache:  # the entry keeps the transform alive, so its id stays unique
            m = self.model.get()
            self._cache[id(transform)] = (transform, residual_stream(m, encoded(m, self.items, transform),
                                                                     batch_size=self.batch_size))
        return self._cache[id(transform)][1]

    def clear(self) -> None:
        self._cache.clear()


def cached_centred(out: Path | None, model: LazyModel, role: str, items: Sequence[ProbeItem],
                   transforms: Sequence[Transform], iv: InstructionVector, *, chunks: int, batch_size: int,
                   streams: Streams | None = None) -> list[Alignment]:
    """The centred `Alignment` of every transform (the centre pooled over all of them),
    stored under ``out/alignments/``; the centre is computed only when one is missing."""
    pooled = hashlib.sha256(json.dumps([run_key(model.key, items, t, condition="centre", iv=None, max_new_tokens=0,
                                                batch_size=batch_size) for t in transforms]).encode()).hexdigest()[:12]
    centre: list[Tensor] = []
    streams = streams or Streams(model, items, batch_size)

    def get_centre() -> Tensor:
        if not centre:
            centre.append(pooled_centre(model.get(), items, transforms, batch_size=batch_size, streams=streams))
        return centre[0]

    return [cached_alignment(out, model, role, items, t, iv, chunks=chunks, batch_size=batch_size,
                             centre=(pooled, get_centre), streams=streams) for t in transforms]


def cached_alignment(out: Path | None, model: LazyModel, role: str, items: Sequence[ProbeItem], transform: Transform,
                     iv: InstructionVector, *, chunks: int, batch_size: int,
                     centre: tuple[str, Callable[[], Tensor]] | None = None, streams: Streams | None = None) -> Alignment:
    """`alignment` as an `Alignment`, stored under ``out/alignments/`` and loaded
    from there when its key (model, prompts, vector, chunks, batch size) matches."""
    condition = f"alignment/{chunks}" + (f"/centred/{centre[0]}" if centre else "")
    key = run_key(model.key, items, transform, condition=condition, iv=iv, max_new_tokens=0, batch_size=batch_size)
    kind = "centred__" if centre else ""
    path = None if out is None else out / "alignments" / f"{model.label}__{kind}{transform.name}__{key}.json"
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return Alignment.from_dict(stored["alignment"])
    streams = streams or Streams(model, items, batch_size)
    means, cm, sizes = alignment(model.get(), items, transform, iv.vector, chunks=chunks, batch_size=batch_size,
                                 center=centre[1]() if centre else None, stream=streams(transform))
    res = Alignment(model.label, role, transform.name, items[0].task, len(items), tuple(means.tolist()),
                    tuple(map(tuple, cm.tolist())), sizes)
    if path is not None:
        atomic_write_json(path, {"key": key, "alignment": res.to_dict()})
    return res
