"""The instruction vector (IV): build, save, load, apply.

Concepts
--------
An IV is one ``(d_model,)`` vector: the sum, over the top-``k`` heads by AIE, of each head's mean
output pushed through that head's slice of ``W_O`` (the attention output projection, bias
excluded). Added to the residual stream after decoder block ``L`` at the last token, it should make
a zero-shot prompt behave like a few-shot one.

Two ways to inject it
---------------------
* ``injection="residual"`` (the function-vectors recipe, the default): ``scale * vector`` is added
  to the output of block ``layer`` at the last token.
* ``injection="heads"``: each of the top-``k`` heads' outputs at the last token is *replaced* by
  ``scale *`` its mean (``head_means``), at its own layer, before ``W_O``. The same heads and the
  same means, so the same vector, but each term enters the residual stream where it was produced
  and the heads' own zero-shot outputs are removed. It has no layer. On SmolLM2 it is what makes
  ``choose_first_of_3`` work (see ``docs/results.md``). ``ivkit.extract(..., injection="auto")``
  lets the validation split choose between the two.

Gemma 2/3
---------
Two quirks are handled explicitly:

* **Heads wider than the residual stream.** gemma-3-270m has 4 heads x 256 = 1024 features going
  into ``o_proj`` and ``d_model = 640``. Nothing assumes ``n_heads * d_head == d_model``: a head's
  mean ``(d_head,)`` is placed in a zero ``(n_heads * d_head,)`` input and projected to
  ``(d_model,)``.
* **A norm between ``o_proj`` and the residual stream** (``post_attention_layernorm``). A single
  head's share of a normalised sum is not defined by the norm alone, so ivkit *linearises* the
  norm around the layer's full mean attention output ``o = W_O mean[l]``: head ``h`` contributes
  ``g * (W_O z_h) / rms(o)``, with ``g`` the norm's gain. The contributions of all heads of a layer
  then add up exactly to ``norm(o)``, which is what that layer writes to the residual stream on
  average. ``post_norm="ignore"`` skips this and uses the raw ``W_O z_h`` (the convention of the
  function-vectors code, which has no such norm).

Files
-----
``save(dir)`` writes ``iv.safetensors`` (``vector``, ``head_means``, ``head_contributions``,
``mean_activations``) and ``iv.json`` (model id and config hash, geometry, heads with AIE, layer,
task, template, seed, ivkit version). ``load(dir)`` reads them without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .._version import __version__
from ..core.errors import ArtifactError, BackendError, IncompatibleVectorError, InputError
from ..core.io import atomic_save_safetensors, atomic_write_text, file_sha256, json_safe
from ..core.options import Injection, PostNorm, check_choice, choices
from ..mediation import IndirectEffects, check_mean_activations
from ..models.hooks import Positions, add_to_residual, patch_heads
from ..models.model import IVModel

log = logging.getLogger(__name__)

FORMAT = "ivkit.iv/1"
POST_NORM_MODES = choices(PostNorm)
INJECTIONS = choices(Injection)


@torch.no_grad()
def head_contributions(model: IVModel, mean_acts: Float[Tensor, "layers heads d_head"],
                       heads: Sequence[tuple[int, int]], *, post_norm: PostNorm = "linearized"
                       ) -> Float[Tensor, "k d_model"]:
    """Each head's mean output mapped into the residual stream.

    Args:
        mean_acts: ``(n_layers, n_heads, d_head)``.
        heads: ``[(layer, head), ...]``.
        post_norm: ``"linearized"`` or ``"ignore"`` (see the module docstring); matters only for
            architectures with a norm after the attention projection.

    Returns:
        ``(len(heads), d_model)``.
    """
    check_choice("post_norm", post_norm, PostNorm)
    check_mean_activations(model, mean_acts)
    g = model.geometry
    dev, dt = model.device, model.dtype
    width = g.n_heads * g.d_head
    out = torch.zeros(len(heads), g.d_model)
    check_weights_local(model)
    for i, (layer, head) in enumerate(heads):
        proj = model.attn_out_proj(layer)
        zero = proj(torch.zeros(1, width, device=dev, dtype=dt))
        z = torch.zeros(1, width, device=dev, dtype=dt)
        z[0, head * g.d_head:(head + 1) * g.d_head] = mean_acts[layer, head].to(dev, dt)
        contrib = proj(z) - zero
        norm = model.post_attn_norm(layer)
        if norm is not None and post_norm == "linearized":
            full = proj(mean_acts[layer].reshape(1, width).to(dev, dt)) - zero
            contrib = _linearized_norm(norm, contrib, full)
        out[i] = contrib[0].float().cpu()
    return out


def check_weights_local(model: IVModel) -> None:
    """Raise `BackendError` if ``W_O`` is not on this machine (a remote model)."""
    if any(p.device.type == "meta" for p in model.attn_out_proj(0).parameters()):
        raise BackendError(
            f"the weights of {model.name} are not on this machine (remote model), and building an IV "
            f"projects head means through W_O. Rank heads remotely with ivkit.mean_head_activations and "
            f"ivkit.indirect_effects (and save the effects), or load the model locally to build the IV"
        )


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)


def _linearized_norm(norm: torch.nn.Module, y: torch.Tensor, around: torch.Tensor) -> torch.Tensor:
    """``g * y / rms(around)`` for an RMSNorm ``norm(x) = g * x / rms(x)``, computed through the
    module itself: ``norm(y) * rms(y) / rms(around)``."""
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    return (norm(y).float() * _rms(y, eps) / _rms(around, eps)).to(y.dtype)


@dataclass(frozen=True, eq=False)
class InstructionVector:
    """An instruction vector and where it came from.

    Attributes:
        vector: ``(d_model,)``.
        heads: ``[(layer, head), ...]``, largest AIE first.
        head_aie: AIE of each head, same order.
        head_means: ``(k, d_head)`` each head's mean output.
        head_contributions: ``(k, d_model)`` each head's term of ``vector``.
        mean_activations: ``(n_layers, n_heads, d_head)`` all heads' means, or None.
        layer: the injection layer (block index) of ``injection="residual"``; None until chosen,
            and always None for ``"heads"``.
        scale: the multiplier applied when injecting (chosen with the layer; 1 by default).
        injection: ``"residual"`` (add ``scale * vector`` after block ``layer``) or ``"heads"``
            (set each top head's output to ``scale *`` its mean); see the module docstring.
        meta: provenance: model id, config hash, geometry, task, template, seed, version, ...
    """

    vector: Float[Tensor, " d_model"]
    heads: list[tuple[int, int]]
    head_aie: list[float]
    head_means: Float[Tensor, "k d_head"]
    head_contributions: Float[Tensor, "k d_model"]
    mean_activations: Float[Tensor, "layers heads d_head"] | None = None
    layer: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    scale: float = 1.0
    injection: Injection = "residual"

    def __post_init__(self) -> None:
        check_choice("injection", self.injection, Injection)

    def replace(self, **changes: Any) -> "InstructionVector":
        """A copy with some fields changed (``iv.replace(layer=12, scale=2.0)``); ``meta`` entries
        given as ``meta={...}`` are merged into the existing ones."""
        if "meta" in changes:
            changes["meta"] = {**self.meta, **changes["meta"]}
        return dataclasses.replace(self, **changes)

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: IVModel,
        mean_acts: Float[Tensor, "layers heads d_head"],
        effects: IndirectEffects | Float[Tensor, "layers heads"] | None = None,
        *,
        k: int = 10,
        heads: Sequence[tuple[int, int]] | None = None,
        post_norm: PostNorm = "linearized",
        layer: int | None = None,
        injection: Injection = "residual",
        scale: float = 1.0,
        **meta: Any,
    ) -> "InstructionVector":
        """Build the IV from mean activations and head rankings.

        Args:
            mean_acts: ``(n_layers, n_heads, d_head)``.
            effects: `IndirectEffects` or an AIE tensor ``(n_layers, n_heads)``; the top
                ``k`` heads are used. Not needed when ``heads`` is given.
            heads: explicit ``[(layer, head), ...]`` instead of the top ``k``.
            post_norm: see the module docstring.
            layer: injection layer to record, if already known.
            meta: extra provenance (``task``, ``template``, ``seed``, ...) stored in ``iv.json``.
        """
        g = model.geometry
        if heads is None:
            if effects is None:
                raise InputError("pass effects (to take the top-k heads) or heads")
            ie = effects if isinstance(effects, IndirectEffects) else IndirectEffects.given(effects)
            if tuple(ie.aie.shape) != (g.n_layers, g.n_heads):
                raise IncompatibleVectorError(
                    f"AIE has shape {tuple(ie.aie.shape)} but {model.name} has ({g.n_layers}, {g.n_heads}) heads")
            if not 1 <= k <= g.n_total_heads:
                raise InputError(f"k must be in 1..{g.n_total_heads}, got {k}")
            top = ie.top_heads(k)
            heads = [(l, h) for l, h, _ in top]
            aie = [a for _, _, a in top]
            meta.setdefault("method", ie.method)
            meta.setdefault("metric", ie.metric)
            if ie.info.get("fast_unavailable"):
                meta.setdefault("fast_unavailable", ie.info["fast_unavailable"])
        else:
            heads = [(int(l), int(h)) for l, h in heads]
            for l, h in heads:
                if not (0 <= l < g.n_layers and 0 <= h < g.n_heads):
                    raise InputError(f"head ({l}, {h}) is outside the model's {g.n_layers} x {g.n_heads} heads")
            aie_src = effects.aie if isinstance(effects, IndirectEffects) else effects
            aie = [float(aie_src[l, h]) if aie_src is not None else float("nan") for l, h in heads]
        contrib = head_contributions(model, mean_acts, heads, post_norm=post_norm)
        means = torch.stack([mean_acts[l, h].float().cpu() for l, h in heads])
        full_meta = {
            "model": {"id": model.name, "model_type": model.model_type, "config_hash": model.config_hash(),
                      **model.geometry.to_dict()},
            "post_norm": post_norm if model.spec.post_attn_norm else None,
            "backend": model.backend.describe(),
            "ivkit_version": __version__,
            **meta,
        }
        return cls(contrib.sum(0), heads, aie, means, contrib, mean_acts.float().cpu().clone(), layer, full_meta,
                   float(scale), injection)

    # ---- properties ----------------------------------------------------------------------

    @property
    def k(self) -> int:
        return len(self.heads)

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def cosine(self, other: "InstructionVector | torch.Tensor") -> float:
        """Cosine similarity with another IV (or a ``(d_model,)`` tensor)."""
        v = other.vector if isinstance(other, InstructionVector) else other
        return float(torch.nn.functional.cosine_similarity(self.vector.double(), v.double().flatten(), dim=0))

    def to_pandas(self):
        """One row per head: ``layer, head, aie, contribution_norm``."""
        import pandas as pd

        return pd.DataFrame({
            "layer": [l for l, _ in self.heads],
            "head": [h for _, h in self.heads],
            "aie": self.head_aie,
            "contribution_norm": self.head_contributions.norm(dim=-1).tolist(),
        })

    def __repr__(self) -> str:
        m = self.meta.get("model", {})
        where = f"layer={self.layer}" if self.injection == "residual" else "injection='heads'"
        return (f"InstructionVector(model={m.get('id')!r}, task={self.meta.get('task')!r}, k={self.k}, "
                f"{where}, scale={self.scale:g}, norm={self.norm:.3f})")

    # ---- compatibility and application ---------------------------------------------------

    def check_compatible(self, model: IVModel) -> None:
        """Raise `IncompatibleVectorError` if the IV was built on a model of another
        architecture or geometry. A different checkpoint of the same architecture is fine."""
        m = self.meta.get("model", {})
        g = model.geometry.to_dict()
        problems = []
        if m.get("model_type") and m["model_type"] != model.model_type:
            problems.append(f"architecture {m['model_type']} vs {model.model_type}")
        for key in ("d_model", "n_layers", "n_heads", "d_head"):
            if key in m and m[key] != g[key]:
                problems.append(f"{key} {m[key]} vs {g[key]}")
        if self.vector.shape[-1] != g["d_model"] and not any("d_model" in p for p in problems):
            problems.append(f"d_model {self.vector.shape[-1]} vs {g['d_model']}")
        if problems:
            raise IncompatibleVectorError(
                f"this IV was built on {m.get('id', 'another model')!r} and does not fit {model.name!r}: "
                f"{'; '.join(problems)}. Extract an IV on this model with ivkit extract"
            )
        if m.get("config_hash") and m["config_hash"] != model.config_hash():
            log.warning("the IV's model config hash %s differs from %s's %s (same geometry; continuing)",
                        m["config_hash"], model.name, model.config_hash())

    def resolve_injection(self, layer: int | None = None, injection: Injection | None = None
                          ) -> tuple[Injection, int | None]:
        """The ``(injection, layer)`` that `apply` would use for these arguments (the IV's own
        by default; a given ``layer`` means residual injection there), or a clear error."""
        injection = check_choice("injection", injection or ("residual" if layer is not None else self.injection),
                                 Injection)
        if injection == "heads":
            if layer is not None:
                raise InputError("injection='heads' patches each head at its own layer: leave layer out")
            return injection, None
        layer = self.layer if layer is None else layer
        if layer is None:
            raise InputError("this IV has no injection layer yet: pass layer=..., choose one with "
                             "ivkit.layer_sweep, or use injection='heads'")
        return injection, layer

    @contextmanager
    def apply(self, model: IVModel, layer: int | None = None, *, scale: float | None = None,
              positions: Positions | slice = -1, injection: Injection | None = None) -> Iterator[None]:
        """Inside the ``with`` block, every forward pass injects the IV at ``positions`` (the last
        token; during generation, each new token).

        ``injection="residual"`` adds ``scale * vector`` to the output of block ``layer``;
        ``injection="heads"`` replaces each top head's output ``(d_head,)`` with ``scale *`` its
        mean before that layer's ``W_O``. ``layer``, ``scale`` and ``injection`` default to the
        IV's own; giving a ``layer`` to an IV whose injection is ``"heads"`` means residual
        injection at that layer.
        """
        self.check_compatible(model)
        with self._injected(model, *self.resolve_injection(layer, injection), scale, positions):
            yield

    @contextmanager
    def _injected(self, model: IVModel, injection: Injection, layer: int | None, scale: float | None,
                  positions: Positions | slice = -1) -> Iterator[None]:
        """`apply` without the compatibility check, for callers that checked once and
        inject many times (per batch, per generated token); ``injection`` and ``layer`` as
        returned by `resolve_injection`."""
        scale = self.scale if scale is None else scale
        if injection == "heads":
            with patch_heads(model, {hd: scale * m for hd, m in zip(self.heads, self.head_means)},
                             positions=positions):
                yield
        else:
            with add_to_residual(model, layer, self.vector, scale=scale, positions=positions):
                yield

    def with_random_directions(self, seed: int = 0) -> "InstructionVector":
        """The control: a copy whose ``vector`` is a random direction of the IV's norm and whose
        ``head_means`` are random directions of each head mean's norm (same heads, layer, scale and
        injection), from a generator seeded with ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))
        vector = _random_directions(self.vector, gen)  # the first draw: random_like(self, seed)
        head_means = _random_directions(self.head_means, gen)
        return dataclasses.replace(
            self, vector=vector, head_means=head_means,
            head_contributions=torch.full_like(self.head_contributions, float("nan")), mean_activations=None,
            meta={**self.meta, "control": f"random directions, seed {int(seed)}"})

    # ---- files ---------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``iv.safetensors`` and ``iv.json`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        tensors = {"vector": self.vector, "head_means": self.head_means,
                   "head_contributions": self.head_contributions}
        if self.mean_activations is not None:
            tensors["mean_activations"] = self.mean_activations
        atomic_save_safetensors(directory / "iv.safetensors", tensors, metadata={"format": FORMAT})
        sidecar = {
            "format": FORMAT,
            # ties the sidecar to this tensor file: a pair from two different saves is refused on load
            "tensors_sha256": file_sha256(directory / "iv.safetensors"),
            "layer": self.layer,
            "scale": self.scale,
            "injection": self.injection,
            "k": self.k,
            "heads": [{"layer": l, "head": h, "aie": json_safe(float(a))} for (l, h), a in zip(self.heads, self.head_aie)],
            "norm": self.norm,
            **self.meta,
        }
        atomic_write_text(directory / "iv.json", json.dumps(sidecar, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path, model: IVModel | None = None) -> "InstructionVector":
        """Read an IV saved by `save`. With ``model``, also check it fits that model."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        st, js = directory / "iv.safetensors", directory / "iv.json"
        for p in (st, js):
            if not p.exists():
                raise ArtifactError(f"{p} is missing: {directory} is not an IV directory (make one with ivkit extract)")
        try:
            sidecar = json.loads(js.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{js} is not valid JSON ({e})") from None
        if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
            got = sidecar.get("format") if isinstance(sidecar, dict) else type(sidecar).__name__
            raise ArtifactError(f"{js} has format {got!r}, expected {FORMAT!r}")
        try:
            tensors = load_file(str(st))
        except (SafetensorError, OSError, ValueError) as e:
            raise ArtifactError(f"{st} is not a readable safetensors file ({e})") from None
        missing = {"vector", "head_means", "head_contributions"} - set(tensors)
        if missing:
            raise ArtifactError(f"{st} lacks the tensors {sorted(missing)}")
        digest = sidecar.get("tensors_sha256")
        if digest is not None and digest != file_sha256(st):
            raise ArtifactError(
                f"{st} is not the tensor file {js} was written with (an interrupted or concurrent save): "
                f"re-run ivkit extract into {directory}")
        try:
            heads = [(int(h["layer"]), int(h["head"])) for h in sidecar["heads"]]
            aies = [_nan(h.get("aie")) for h in sidecar["heads"]]
            layer = None if sidecar.get("layer") is None else int(sidecar["layer"])
            scale = float(sidecar.get("scale", 1.0))
            injection = str(sidecar.get("injection") or "residual")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"{js} is malformed ({type(e).__name__}: {e}): it needs a 'heads' list of "
                                f"{{layer, head, aie}}; re-run ivkit extract") from None
        if tensors["head_means"].shape[0] != len(heads):
            raise ArtifactError(f"{directory}: iv.json lists {len(heads)} heads but the tensors hold "
                                f"{tensors['head_means'].shape[0]}")
        if injection not in INJECTIONS:
            raise ArtifactError(f"{js} has injection {injection!r}; ivkit knows {', '.join(INJECTIONS)}")
        meta = {k: v for k, v in sidecar.items()
                if k not in {"format", "layer", "scale", "k", "heads", "norm", "tensors_sha256", "injection"}}
        iv = cls(tensors["vector"], heads, aies, tensors["head_means"], tensors["head_contributions"],
                 tensors.get("mean_activations"), layer, meta, scale, injection)
        if model is not None:
            iv.check_compatible(model)
        return iv


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def random_like(iv: InstructionVector, seed: int = 0) -> torch.Tensor:
    """A random ``(d_model,)`` direction with the IV's norm (the control condition)."""
    return _random_directions(iv.vector, torch.Generator().manual_seed(int(seed)))


def _random_directions(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random directions drawn from ``gen``, each row (last dim) with the norm of ``like``'s row."""
    v = torch.randn(like.shape, generator=gen, dtype=torch.float64)
    return (v / v.norm(dim=-1, keepdim=True) * like.double().norm(dim=-1, keepdim=True)).float()
