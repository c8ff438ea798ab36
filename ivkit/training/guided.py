"""IV-guided training (Jiang et al.): fine-tune while keeping the model's IV-related computation.

Two parts, both around the IV of the *training* task, built from the model before fine-tuning:

* **Progressive intervention.** The IV is added to the student (the model being trained) at the
  last prompt token, at full strength for the first 25% of the steps; from 25% to 75% its
  strength falls to 0 in steps of 0.1; after that, none (`iv_strength`). The model first
  learns the task with the IV's help, then without it. (``schedule="constant"`` keeps it on;
  ``"none"`` never adds it.)
* **KL toward the IV-steered original model.** The teacher is the model before fine-tuning,
  frozen, with the IV injected (`ivkit.training.teacher`, cached per example). The loss is

  ``task + alpha_last * KL_last * [KL_last > thr] + alpha_answer * KL_answer * [KL_answer > thr]``
  ``(+ consistency * MSE_heads * [MSE_heads > thr_c])``

  where ``KL = KL(student || teacher)`` of the softmaxes at temperature 2 (no ``T^2`` factor, as
  in the authors' code), ``KL_last`` at the last prompt token and ``KL_answer`` over every
  position that predicts an answer token, each averaged over the batch; ``MSE_heads`` compares
  the IV's heads' outputs at the last prompt token with theirs before fine-tuning.

Defaults follow the reference: ``alpha_last=20``, ``alpha_answer=0.1``, thresholds 0.1 and 0.01,
temperature 2 (`GuidanceConfig`). Every term is logged on its own.
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from ..models.backends.base import Intervention
from ..models.backends.torch_backend import attach_hf_hooks
from ..models.hooks import HeadRecord, ResidualAddition
from ..models.model import IVModel
from ..vectors import InstructionVector
from .config import GuidanceConfig
from .teacher import TeacherCache, bucket_kl


def iv_strength(step: int, total: int, schedule: str = "progressive") -> float:
    """The strength of the IV added to the student at optimizer step ``step`` (0-based: the number
    of steps already taken) of ``total``. ``"progressive"``: 1 until a quarter of the run has
    passed, then 0.1 less for each further twentieth (1.0, 0.9, ..., 0.1), and 0 from three
    quarters on. ``"constant"``: always 1; ``"none"``: always 0."""
    if schedule == "none":
        return 0.0
    if schedule == "constant":
        return 1.0
    frac = step / max(total, 1)
    if frac < 0.25:
        return 1.0
    if frac >= 0.75:
        return 0.0
    return round(1.0 - 0.1 * math.floor((frac - 0.25) / 0.05 + 1e-9), 1)


class HeadBlend(Intervention):
    """Moves the listed heads' outputs at each row's ``positions`` a fraction ``strength`` of the
    way to ``values`` (``(1 - s) * z + s * value``): the progressive form of the heads injection."""

    site = "heads"

    def __init__(self, heads: list[tuple[int, int]], values: Tensor, strength: float, positions: Tensor,
                 n_heads: int):
        self.by_layer: dict[int, list[tuple[int, Tensor]]] = {}
        for (l, h), v in zip(heads, values):
            self.by_layer.setdefault(l, []).append((h, v))
        self.layers, self.strength, self.positions, self.n_heads = tuple(self.by_layer), strength, positions, n_heads

    def edit(self, layer: int, x: Tensor) -> Tensor:
        rows = torch.arange(x.shape[0], device=x.device)
        pos = self.positions.to(x.device)
        z = rearrange(x[rows, pos], "b (h d) -> b h d", h=self.n_heads).clone()
        for h, v in self.by_layer[layer]:
            z[:, h] = (1 - self.strength) * z[:, h] + self.strength * v.to(x.device, x.dtype)
        return x.index_put((rows, pos), rearrange(z, "b h d -> b (h d)"))


class GuidedObjective:
    """The extra loss terms of IV-guided training for one model, IV and teacher cache."""

    def __init__(self, model: IVModel, iv: InstructionVector, cfg: GuidanceConfig, cache: TeacherCache):
        iv.check_compatible(model)
        self.model, self.iv, self.cfg, self.cache = model, iv, cfg, cache
        self.injection, self.layer = iv.resolve_injection()

    @contextmanager
    def student(self, prompt_end: Int[Tensor, " B"], strength: float) -> Iterator[HeadRecord | None]:
        """Inside the block, the training forward pass gets the IV at ``strength`` (at each row's last
        prompt token) and, with the consistency term, records the IV's heads there (with gradients)."""
        g = self.model.geometry
        with ExitStack() as stack:
            if strength > 0:
                if self.injection == "residual":
                    add = ResidualAddition(self.layer, self.iv.vector, self.iv.scale * strength, positions=prompt_end)
                else:
                    add = HeadBlend(self.iv.heads, self.iv.scale * self.iv.head_means, strength, prompt_end, g.n_heads)
                stack.callback(attach_hf_hooks(self.model, add))
            rec = None
            if self.cfg.consistency > 0:
                rec = HeadRecord(g.n_heads, g.d_head, sorted({l for l, _ in self.iv.heads}), prompt_end, detach=False)
                stack.callback(attach_hf_hooks(self.model, rec))
            yield rec

    def terms(self, logits: Float[Tensor, "B T V"], prompt_end: Int[Tensor, " B"], index: Int[Tensor, " B"],
              rec: HeadRecord | None) -> tuple[Tensor, dict[str, float]]:
        """``(weighted sum of the extra terms, the raw terms)`` for a batch whose logits are
        ``logits`` (right-padded rows; row ``r``'s answer positions start at ``prompt_end[r]``)."""
        c, cfg = self.cache, self.cfg
        idx = index.cpu()
        n_pos = c.n_pos[idx]
        rows = torch.arange(len(idx)).repeat_interleave(n_pos)
        offs = torch.cat([torch.arange(int(a)) for a in n_pos])
        pos = prompt_end.cpu()[rows] + offs
        dev = logits.device
        kl = bucket_kl(logits[rows.to(dev), pos.to(dev)], c.top_idx[idx[rows], offs].to(dev),
                       c.top_logit[idx[rows], offs].to(dev), c.lse[idx[rows], offs].to(dev), cfg.temperature)
        first = offs == 0
        kl_last, kl_answer = kl[first.to(dev)].mean(), kl.mean()
        total = logits.new_zeros(())
        if kl_last.item() > cfg.kl_threshold:
            total = total + cfg.alpha_last * kl_last
        if kl_answer.item() > cfg.kl_threshold:
            total = total + cfg.alpha_answer * kl_answer
        raw = {"kl_last": float(kl_last.detach()), "kl_answer": float(kl_answer.detach())}
        if rec is not None:
            now = torch.stack([rec.z[l][:, h] for l, h in self.iv.heads], dim=1)
            mse = (now.float() - c.heads[idx].to(dev)).pow(2).mean()
            if mse.item() > cfg.consistency_threshold:
                total = total + cfg.consistency * mse
            raw["consistency"] = float(mse.detach())
        return total, raw
