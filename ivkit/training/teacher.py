"""The teacher of IV-guided training, computed once per example and cached.

The teacher is the model *before* fine-tuning, frozen, with the training task's IV injected at the
last prompt token (Jiang et al.). Frozen means its outputs depend only on the example, so instead
of a second forward pass every step (as the authors' code does), ivkit runs it once per example
before training and keeps, per position that predicts an answer token (the last prompt token
first), the top ``k`` logits, their token ids, and the log-sum-exp of all logits at the KL's
temperature. That is enough for the KL of `bucket_kl` (exact when ``k`` is the vocabulary;
otherwise the tokens outside the top ``k`` form one bucket, which can only lower the KL), and it
leaves one model in memory instead of two.

Shapes (``n`` examples, ``A`` the most answer positions, ``k`` kept logits):

* ``top_idx``: ``(n, A, k)``; token ids of the largest teacher logits
* ``top_logit``: ``(n, A, k)``; those logits (raw, not divided by the temperature)
* ``lse``: ``(n, A)``; ``logsumexp(logits / T)`` over the whole vocabulary
* ``n_pos``: ``(n,)``; answer positions of each example (the rest is padding)
* ``heads``: ``(n, h, d)``; the IV's heads' outputs at the last prompt token, no IV (only with the
  consistency term)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from ..core.io import atomic_save_safetensors, progress_bar
from ..models.hooks import record_head_outputs
from ..models.model import IVModel, length_batches
from ..vectors import InstructionVector
from .data import Features


@dataclass(frozen=True, eq=False)
class TeacherCache:
    """The teacher's outputs per example (see the module docstring for the shapes)."""

    top_idx: Int[Tensor, "n A k"]
    top_logit: Float[Tensor, "n A k"]
    lse: Float[Tensor, "n A"]
    n_pos: Int[Tensor, " n"]
    temperature: float
    heads: Float[Tensor, "n h d_head"] | None = None

    def save(self, path: Path, key: str) -> None:
        tensors = {"top_idx": self.top_idx, "top_logit": self.top_logit, "lse": self.lse, "n_pos": self.n_pos}
        if self.heads is not None:
            tensors["heads"] = self.heads
        atomic_save_safetensors(path, tensors, metadata={"key": key, "temperature": repr(self.temperature)})

    @classmethod
    def load(cls, path: Path, key: str) -> "TeacherCache | None":
        """The cache at ``path`` if it was made under ``key`` (the same IV, examples and settings)."""
        if not path.exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("key") != key:
            return None
        t = load_file(str(path))
        return cls(t["top_idx"], t["top_logit"], t["lse"], t["n_pos"], float(meta["temperature"]), t.get("heads"))


@torch.inference_mode()
def build_teacher_cache(model: IVModel, features: Sequence[Features], iv: InstructionVector, *, temperature: float,
                        top_k: int, scale: float | None = None, record_heads: bool = False, batch_size: int = 16,
                        progress: bool = True) -> TeacherCache:
    """Run the teacher (``model`` as it is now, with ``iv`` injected at each last prompt token) on
    every example and keep what the KL terms need."""
    iv.check_compatible(model)
    injection, layer = iv.resolve_injection()
    n, amax = len(features), max(f.answer_positions for f in features)
    k = min(top_k, int(model.model.get_output_embeddings().weight.shape[0]))
    top_idx = torch.zeros(n, amax, k, dtype=torch.long)
    top_logit = torch.zeros(n, amax, k)
    lse = torch.zeros(n, amax)
    heads = torch.zeros(n, len(iv.heads), model.geometry.d_head) if record_heads else None
    batches = length_batches([len(f.input_ids) for f in features], batch_size)
    for idx in progress_bar(batches, desc="teacher", progress=progress):
        rows = [features[i] for i in idx]
        batch = model.make_batch([f.input_ids for f in rows])
        width = batch.input_ids.shape[1]
        ends = torch.tensor([width - len(f.input_ids) + f.prompt_end for f in rows])
        keep = max(f.answer_positions for f in rows) + 1
        with iv._injected(model, injection, layer, scale, positions=ends.to(model.device)):
            logits = model.forward(batch, logits_to_keep=keep)                        # (B, keep, V)
        for r, (i, f) in enumerate(zip(idx, rows)):
            a = f.answer_positions
            lg = logits[r, keep - a - 1: keep - 1]                                       # (a, V)
            vals, ids = lg.topk(k, dim=-1)
            top_idx[i, :a], top_logit[i, :a] = ids.cpu(), vals.cpu()
            lse[i, :a] = torch.logsumexp(lg / temperature, -1).cpu()
        if heads is not None:
            heads[idx] = _head_outputs(model, batch, ends, iv.heads)
    n_pos = torch.tensor([f.answer_positions for f in features])
    return TeacherCache(top_idx, top_logit, lse, n_pos, float(temperature), heads)


def _head_outputs(model: IVModel, batch, ends: Tensor, heads: list[tuple[int, int]]) -> Tensor:
    """The listed heads' outputs at ``ends`` in a pass without any IV: ``(B, len(heads), d_head)``."""
    layers = sorted({l for l, _ in heads})
    with record_head_outputs(model, layers=layers, positions=ends.to(model.device)) as rec:
        model.forward(batch)
    return torch.stack([rec.z[l][:, h] for l, h in heads], dim=1).float().cpu()


def bucket_kl(student_logits: Float[Tensor, "R V"], top_idx: Int[Tensor, "R k"], top_logit: Float[Tensor, "R k"],
              lse: Float[Tensor, " R"], temperature: float) -> Float[Tensor, " R"]:
    """``KL(student || teacher)`` of the two softmaxes at ``temperature``, per row, with the teacher
    known on its top ``k`` tokens (and its log-sum-exp) and every other token in one bucket:
    ``sum_top p_s (log p_s - log p_t) + q_rest (log q_rest - log p_rest)``. Equal to the full KL
    when ``k`` covers the vocabulary; never larger otherwise."""
    ls = torch.log_softmax(student_logits.float() / temperature, -1)
    lp_s = ls.gather(-1, top_idx)
    lp_t = top_logit / temperature - lse[:, None]
    p_s = lp_s.exp()
    q_rest = (1 - p_s.sum(-1)).clamp_min(0.0)
    p_rest = (1 - lp_t.exp().sum(-1)).clamp_min(1e-12)
    rest = torch.where(q_rest > 1e-12, q_rest * (q_rest.clamp_min(1e-12).log() - p_rest.log()), torch.zeros_like(q_rest))
    return (p_s * (lp_s - lp_t)).sum(-1) + rest
