"""Greedy generation through any backend, with an instruction vector or without.

Concepts
--------
`generate` decodes greedily by running the whole sequence through ``model.forward`` (so
through the model's backend: plain hooks, a TransformerBridge, or an nnsight trace, locally or on
NDIF) once per new token. With an IV, ``scale * vector`` is added to the output of block
``layer`` at the last prompt token and at every generated token: what KV-cached generation does
under `ivkit.InstructionVector.apply`, where the hook adds it to each new position as it
is processed (tested to give the same tokens). An IV whose ``injection`` is ``"heads"`` instead
sets its heads to ``scale *`` their means at those same positions.

Gotchas
-------
* ``with iv.apply(model): model.model.generate(...)`` calls the Hugging Face model directly. That
  works on the torch and transformer-lens backends, whose hooks live on those modules, but an
  nnsight model applies interventions only inside its traces. ivkit refuses that call on an
  nnsight model (a clear `BackendError`) rather than ignore the IV; use
  `generate`, which works everywhere.
* Each step re-runs the whole sequence (no KV cache), so it costs ``max_new_tokens`` full passes:
  meant for short answers. For long generations on a torch model, ``iv.apply`` with the model's
  own ``generate`` is faster and gives the same tokens.
* Rows are left-padded together and all decode ``max_new_tokens`` steps; each row's text is cut
  at its first EOS (and at ``stop``).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

from ..core.errors import InputError
from ..core.io import progress_bar
from ..core.prompts import EncodedPrompts
from ..models.hooks import add_to_residual
from ..models.model import IVModel
from ..vectors import InstructionVector


def _prompt_ids(model: IVModel, prompts) -> list[list[int]]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, EncodedPrompts):
        return [list(x) for x in prompts.input_ids]
    out = []
    for p in prompts:
        ids = model.encode(p) if isinstance(p, str) else [int(t) for t in p]
        if not ids:
            raise InputError("generate got an empty prompt")
        out.append(ids)
    if not out:
        raise InputError("generate got no prompts")
    return out


@torch.inference_mode()
def generate_ids(
    model: IVModel,
    prompts: str | Sequence[str] | Sequence[Sequence[int]] | EncodedPrompts,
    *,
    iv: InstructionVector | None = None,
    vector: torch.Tensor | None = None,
    layer: int | None = None,
    scale: float | None = None,
    max_new_tokens: int = 8,
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[int]]:
    """The new token ids of each prompt, greedily decoded (see the module docstring).

    Args:
        prompts: text(s), token-id lists, or `EncodedPrompts`.
        iv: an instruction vector; ``layer`` and ``scale`` default to its own.
        vector: a raw ``(d_model,)`` vector instead of ``iv`` (needs ``layer``; scale 1).
        max_new_tokens: tokens to decode per prompt.

    Returns:
        per prompt, ``max_new_tokens`` token ids (EOS not cut here).
    """
    if iv is not None and vector is not None:
        raise InputError("give iv or vector, not both")
    if iv is not None:  # checked and resolved once, injected at every step
        iv.check_compatible(model)
        injection, layer = iv.resolve_injection(layer)
    elif vector is not None and layer is None:
        raise InputError("a raw vector needs layer=...")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    seqs = _prompt_ids(model, prompts)
    out: list[list[int]] = []
    for start in progress_bar(range(0, len(seqs), batch_size), desc="generate", progress=progress):
        rows = [list(s) for s in seqs[start:start + batch_size]]
        new: list[list[int]] = [[] for _ in rows]
        for step in range(max_new_tokens):
            # the last prompt token and every token generated so far: the last step + 1 positions
            where = slice(-(step + 1), None)
            if iv is not None:
                ctx = iv._injected(model, injection, layer, scale, positions=where)
            elif vector is not None:
                ctx = add_to_residual(model, layer, vector, scale=1.0 if scale is None else scale, positions=where)
            else:
                ctx = nullcontext()
            with ctx:
                logits = model.forward(model.make_batch(rows))[:, -1]
            for r, t in enumerate(logits.argmax(-1).tolist()):
                rows[r].append(t)
                new[r].append(t)
        out.extend(new)
    return out


def generate(
    model: IVModel,
    prompts: str | Sequence[str] | Sequence[Sequence[int]] | EncodedPrompts,
    *,
    iv: InstructionVector | None = None,
    vector: torch.Tensor | None = None,
    layer: int | None = None,
    scale: float | None = None,
    max_new_tokens: int = 8,
    stop: Sequence[str] = ("\n",),
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` through the model's backend, optionally steered.

    ``generate(model, "Q: lantern\\nA:", iv=iv)`` works on every backend; see
    `generate_ids` for the arguments. Each text is cut at the first EOS token and at the
    first string of ``stop`` (a newline by default: the answer line).
    """
    ids = generate_ids(model, prompts, iv=iv, vector=vector, layer=layer, scale=scale,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    eos = getattr(model.tokenizer, "eos_token_id", None)
    texts = []
    for row in ids:
        if eos is not None and eos in row:
            row = row[:row.index(eos)]
        text = model.tokenizer.decode(row, skip_special_tokens=True)
        for s in stop:
            if s and s in text:
                text = text[:text.index(s)]
        texts.append(text)
    return texts
