"""``backend="nnsight"``: interventions inside an nnsight 0.8 trace, locally or on NDIF.

Envoys used (``l`` is the layer; paths are the model's `ArchSpec`, shown for
Llama):

* ``heads``: envoy: ``model.model.layers[l].self_attn.o_proj.input``; tensor: ``(B, T,
  n_heads*d_head)``
* ``block``: envoy: ``model.model.layers[l].output``; tensor: ``(B, T, d_model)`` (a tensor under
  transformers 5)
* logits: envoy: ``model.output.logits``; tensor: ``(B, logits_to_keep, vocab)``

How a forward pass runs
-----------------------
nnsight applies interventions inside a ``with model.trace(...)`` block, not through persistent
hooks. So ``attach`` only records the intervention, and `NNsightBackend.forward` opens one
trace with one batched ``invoke`` of the pre-padded batch (``input_ids``, ``attention_mask``,
``position_ids``: nothing is re-tokenised or re-padded), visits the sites in execution order
(layer by layer, heads before block output),
applies every editing intervention there, saves (``.save()``) what reading interventions need, and
hands the saved tensors to them after the trace. Only saved tensors come back from a remote run,
so reads are replayed locally on them; edits run where the model runs.

Remote execution (NDIF)
-----------------------
``load_model("meta-llama/Llama-3.1-8B", backend="nnsight", remote=True)`` builds the model
lazily (no weights are downloaded), and every trace is sent to NDIF with your API key
(``NDIF_API_KEY`` or ``nnsight.CONFIG.set_default_api_key``). Tokenising, prompt building,
ranking and plotting stay local; forward passes, patches and reads run remotely.
``remote="local"`` runs nnsight's serialization dry run on this machine: the trace is serialized
and deserialized as for NDIF, then executed locally. ivkit's tests use it to check that its traces
serialize.

Gotchas
-------
* nnsight requires sites to be visited in execution order; the backend does so.
* Wrapping a loaded model sets its tokenizer's ``padding_side`` to ``"left"`` (ivkit pads by
  itself, so this does not matter to ivkit).
* ``method="fast"`` (ivkit's exact continuation engine, also the default layer sweep) does not
  run through traces: on a *local* model it runs on the Hugging Face modules the nnsight model
  wraps, outside any trace, and gives the same numbers (tested against the traced naive loop).
  It is the default locally. Remotely the weights are not here, so the default is ``"naive"``,
  every pass a trace; pass ``method="naive"`` locally too to make every pass a trace.
  ``method="attribution"`` works locally (gradients flow through the real tensors), not remotely.
* Traces of one model must not run from two threads at once.
* While an ivkit intervention is attached, a direct call of the Hugging Face model (for example
  ``model.model.generate`` inside ``iv.apply``) raises `BackendError`:
  outside a trace it would silently ignore the intervention. Use `ivkit.generate`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from ...core.arch import get_module
from ...core.errors import BackendError, ModelLoadError
from .base import Backend, Batch, HookedModel, Intervention, register_backend

log = logging.getLogger(__name__)


def _import_nnsight():
    try:
        import nnsight
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BackendError(f"backend='nnsight' needs nnsight 0.8 ({e}): pip install 'nnsight>=0.8'") from None
    return nnsight


def is_nnsight_model(obj: Any) -> bool:
    """True for an nnsight ``TransformersModel`` / ``LanguageModel`` / ``NNsight`` wrapper."""
    return any(c.__module__.startswith("nnsight") and c.__name__ in {"TransformersModel", "LanguageModel", "NNsight"}
               for c in type(obj).__mro__)


def wrap(hf_model: Any, tokenizer: Any) -> Any:
    """An nnsight ``TransformersModel`` around a loaded Hugging Face model (no copy)."""
    nnsight = _import_nnsight()
    return nnsight.TransformersModel(hf_model, tokenizer=tokenizer)


@register_backend
class NNsightBackend(Backend):
    """Runs every forward pass as one nnsight trace (see the module docstring)."""

    name = "nnsight"
    requirement = "pip install 'nnsight>=0.8.1,<0.9'"
    supports_remote = True

    @classmethod
    def wraps(cls, obj: Any) -> bool:
        return is_nnsight_model(obj)

    @classmethod
    def unwrap(cls, obj: Any, tokenizer: Any, name: str | None) -> tuple[Any, Any, str]:
        hf_model = obj._module
        hf_model.eval()
        return (hf_model, tokenizer or obj.tokenizer,
                name or str(getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__))

    @classmethod
    def create(cls, hf_model: Any, tokenizer: Any, *, name: str, wrapper: Any = None,
               remote: bool | str = False) -> "NNsightBackend":
        return cls(wrapper if wrapper is not None else wrap(hf_model, tokenizer), remote=remote)

    @classmethod
    def create_remote(cls, ref: str, tokenizer: Any, *, name: str) -> tuple[Any, Any, "NNsightBackend"]:
        """A hub model for NDIF, built lazily by nnsight (config and tokenizer only, no weights)."""
        from transformers import AutoTokenizer

        nnsight = _import_nnsight()
        try:
            tok = tokenizer or AutoTokenizer.from_pretrained(ref)
            nn_model = nnsight.TransformersModel(ref, task="text-generation", tokenizer=tok)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"could not build {ref!r} for remote execution: {first}. remote=True needs a hub "
                                 f"id NDIF serves and the hub reachable for its config and tokenizer") from None
        return nn_model._module, tok, cls(nn_model, remote=True)

    @property
    def fast_blocker(self) -> str:  # type: ignore[override]
        return "the model runs remotely" if self.remote is not False else ""

    def __init__(self, nn_model: Any, *, remote: bool | str = False):
        self.nn_model = nn_model
        self.remote = remote
        self._active: list[Intervention] = []
        self._guard: Any = None      # the pre-hook that refuses direct calls while interventions are attached
        self._in_trace = False

    @property
    def supports_grad(self) -> bool:  # type: ignore[override]
        return self.remote is False

    @property
    def supports_fast(self) -> bool:  # type: ignore[override]
        """Locally, the continuation engine runs on the wrapped HF modules; remotely it cannot."""
        return self.remote is False

    def device(self, model: HookedModel) -> torch.device:
        dev = next(model.model.parameters()).device
        return torch.device("cpu") if dev.type == "meta" else dev

    def attach(self, model: HookedModel, intervention: Intervention) -> Callable[[], None]:
        if intervention.site not in ("heads", "block"):
            raise ValueError(f"unknown intervention site {intervention.site!r}")
        self._active.append(intervention)
        if self._guard is None and self.remote is False:
            self._guard = model.model.register_forward_pre_hook(self._refuse_direct_call)

        def detach() -> None:
            for i, iv in enumerate(self._active):
                if iv is intervention:
                    del self._active[i]
                    break
            if not self._active and self._guard is not None:
                self._guard.remove()
                self._guard = None
        return detach

    def _refuse_direct_call(self, module: Any, args: Any) -> None:
        """Interventions act only inside `forward`'s trace: a direct call of the Hugging Face
        model (``model.model.generate(...)`` under ``iv.apply``, say) would silently ignore them."""
        if not self._in_trace:
            raise BackendError(
                "an ivkit intervention (an IV, a patch or a recording) is attached through the nnsight backend, "
                "which applies it only inside ivkit's own forward passes (nnsight traces), but the Hugging Face "
                "model was called directly, so it would be ignored. Generate with ivkit.generate(model, prompts, "
                "iv=iv), run passes with model.forward(batch), or load the model with backend='torch'"
            )

    def _site(self, model: HookedModel, site: str, layer: int) -> Any:
        block = get_module(self.nn_model, model.spec.layers)[layer]  # the same dotted paths work on envoys
        return get_module(block, model.spec.attn_out_proj) if site == "heads" else block

    def forward(self, model: HookedModel, batch: Batch, *, logits_to_keep: int = 1) -> torch.Tensor:
        nnsight = _import_nnsight()
        active = list(self._active)
        plan: list[tuple[int, str, list[Intervention]]] = []
        for layer in range(model.geometry.n_layers):
            for site in ("heads", "block"):
                ivs = [iv for iv in active if iv.site == site and layer in iv.layers]
                if ivs:
                    plan.append((layer, site, ivs))
        inputs = dict(input_ids=batch.input_ids.cpu(), attention_mask=batch.attention_mask.cpu(),
                      position_ids=batch.position_ids.cpu())
        remote = self.remote
        self._in_trace = True
        try:
            return self._traced_forward(model, plan, inputs, logits_to_keep, remote, nnsight)
        finally:
            self._in_trace = False

    def _traced_forward(self, model, plan, inputs, logits_to_keep, remote, nnsight) -> torch.Tensor:
        with self.nn_model.trace(logits_to_keep=logits_to_keep, use_cache=False, remote=remote) as tracer:
            with tracer.invoke(**inputs):  # one batched invoke: ivkit's rows, already left-padded
                reads = nnsight.save([])
                for layer, site, ivs in plan:
                    envoy = self._site(model, site, layer)
                    x = envoy.input if site == "heads" else envoy.output
                    changed = False
                    for iv in ivs:
                        if getattr(iv, "reads_only", False) and remote is not False:
                            reads.append(x.clone())  # replayed locally after the trace
                            continue
                        new = iv.edit(layer, x)
                        if new is not None:
                            x, changed = new, True
                    if changed:
                        if site == "heads":
                            envoy.input = x
                        else:
                            envoy.output = x
                logits = self.nn_model.output.logits.save()
        if remote is not False:
            it = iter(reads)
            for layer, site, ivs in plan:
                for iv in ivs:
                    if getattr(iv, "reads_only", False):
                        iv.edit(layer, next(it))
        return logits.float()

    def describe(self) -> dict[str, Any]:
        nnsight = _import_nnsight()
        return {"backend": self.name, "nnsight": getattr(nnsight, "__version__", "?"), "remote": self.remote}
