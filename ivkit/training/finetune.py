"""A small, seeded, resumable fine-tuning harness, so that checkpoints exist without outside tools.

Concepts
--------
* **Data**: ``{"input", "output"}`` pairs (a task name or file), written as instruction prompts:
  ``"{instruction}\\n\\nQ: {input}\\nA:"`` followed by ``" {output}"`` and the EOS token, or with
  the model's chat template (``chat=True``). The loss is the causal-LM loss on the answer tokens
  only.
* **Full fine-tuning** (default) or **LoRA** (``lora=True``, through ``peft``: rank 8, alpha 16 on
  ``q_proj`` and ``v_proj`` by default, as in Jiang et al.).
* **Checkpoints**: ``OUT/checkpoint-<step>/`` in Hugging Face format (for LoRA: the adapter),
  plus ``trainer_state.json`` (step, losses, steps per second, seed, data); the newest one also
  keeps ``optimizer.pt`` (loaded with ``weights_only=True``) for resuming.
  Writes go to a temporary folder that is renamed when complete.
* **Seeded and resumable**: the batch of step ``s`` depends only on the seed and ``s``; a rerun
  into the same ``OUT`` continues from the newest complete checkpoint and ends where an
  uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..core.errors import InputError, IVKitError
from ..core.io import atomic_write_text, progress_bar
from ..core.prompts import DEFAULT_TEMPLATE, PromptTemplate, make_prompt
from ..core.tasks import Example, Task, load_task
from ..models.loading import load_model
from ..models.model import IVModel

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class FinetuneResult:
    """Where the run wrote its checkpoints, and its losses.

    Attributes:
        out: the run directory.
        checkpoints: the ``checkpoint-<step>`` folders, in order.
        losses: ``[(step, loss)]`` for every step run (resumed runs include the earlier ones).
        steps_per_second: training speed of this process's steps.
    """

    out: Path
    checkpoints: list[Path]
    losses: list[tuple[int, float]] = field(default_factory=list)
    steps_per_second: float = 0.0


def _examples_to_features(model: IVModel, examples: list[Example], *, instruction: str | None, chat: bool,
                          template: PromptTemplate, max_len: int) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels (``-100`` on the prompt) per example."""
    eos = model.tokenizer.eos_token_id
    feats = []
    for ex in examples:
        if chat:
            p = make_prompt(ex, style="chat", instruction=instruction, tokenizer=model.tokenizer)
        elif instruction:
            p = make_prompt(ex, style="instruction", instruction=instruction, template=template)
        else:
            p = make_prompt(ex, style="zero_shot", template=template)
        prompt_ids = model.encode(p.text, add_special_tokens=p.add_special_tokens)
        full = model.encode(p.text + p.answer, add_special_tokens=p.add_special_tokens)
        if full[:len(prompt_ids)] != prompt_ids:
            full = prompt_ids + model.encode(p.answer, add_special_tokens=False)
        ids = full + ([eos] if eos is not None else [])
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
        feats.append((ids[-max_len:], labels[-max_len:]))
    return feats


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The examples of step ``step`` (1-based): consecutive slices of seeded per-epoch shuffles."""
    start = (step - 1) * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, i = divmod(pos, n)
        perm = np.random.default_rng([seed, 0xF7, epoch]).permutation(n)
        out.append(int(perm[i]))
    return out


def _collate(feats: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(i) for i, _ in feats)
    ids = torch.full((len(feats), width), pad_id, dtype=torch.long)
    labels = torch.full((len(feats), width), -100, dtype=torch.long)
    mask = torch.zeros((len(feats), width), dtype=torch.long)
    for r, (i, l) in enumerate(feats):  # right padding: training needs no last-token alignment
        ids[r, :len(i)] = torch.tensor(i)
        labels[r, :len(l)] = torch.tensor(l)
        mask[r, :len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _latest_checkpoint(out: Path) -> tuple[int, Path] | None:
    best = None
    for p in out.glob("checkpoint-*"):
        if p.is_dir() and (p / STATE_FILE).exists() and p.name.split("-")[-1].isdigit():
            step = int(p.name.split("-")[-1])
            if best is None or step > best[0]:
                best = (step, p)
    return best


def finetune(
    model: IVModel | str,
    data: Task | str,
    out: str | Path,
    *,
    steps: int = 100,
    save_every: int = 20,
    batch_size: int = 8,
    lr: float | None = None,
    seed: int = 0,
    lora: bool = False,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj"),
    chat: bool = False,
    instruction: str | None = None,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    max_len: int = 128,
    resume: bool = True,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune on ``data`` and save a checkpoint every ``save_every`` steps.

    Args:
        model: an :class:`~ivkit.IVModel` or anything :func:`~ivkit.load_model` takes. Trained in
            place (full fine-tuning); pass a fresh load if you still need the original.
        data: a task name or a JSON/JSONL file of ``{"input", "output"}``; all its examples train.
        out: the run directory.
        lr: learning rate; default 5e-5 (full) or 1e-4 (LoRA).
        instruction: the instruction line; defaults to the task's own (none: the bare template).
        resume: continue from the newest checkpoint in ``out`` (else refuse a non-empty ``out``).

    Returns:
        A :class:`FinetuneResult`.
    """
    out = Path(out)
    ivm = load_model(model)
    task = load_task(data)
    instruction = instruction if instruction is not None else task.instruction
    if steps < 1 or save_every < 1:
        raise InputError("steps and save_every must be at least 1")
    lr = lr if lr is not None else (1e-4 if lora else 5e-5)
    config = {"data": task.name, "data_source": task.source, "n_examples": len(task), "steps": steps,
              "save_every": save_every, "batch_size": batch_size, "lr": lr, "seed": seed, "lora": lora,
              "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_targets": list(lora_targets), "chat": chat,
              "instruction": instruction, "template": template.to_dict(), "max_len": max_len, "model": ivm.name}

    latest = _latest_checkpoint(out) if out.exists() else None
    if not resume and out.exists() and any(out.iterdir()):
        raise IVKitError(f"{out} is not empty and resume is off: choose a new --out, or resume the run in it")
    torch.manual_seed(seed)
    net = _with_lora(ivm.model, latest[1] if latest is not None and resume else None, lora_r, lora_alpha,
                     lora_targets) if lora else ivm.model
    start, losses = _resume_weights(net, latest[1], out, config, lora) if latest is not None and resume else (0, [])
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if latest is not None and resume:
        _resume_optimizer(opt, latest[1])

    feats = _examples_to_features(ivm, task.examples, instruction=instruction, chat=chat, template=template,
                                  max_len=max_len)
    t0 = time.perf_counter()
    done = _train(net, ivm, opt, feats, out, start, losses, config, progress)
    sps = done / max(time.perf_counter() - t0, 1e-9)
    if lora:  # leave the caller a plain model: the adapters merged
        ivm.model = net.merge_and_unload().eval()
    found = sorted((p for p in out.glob("checkpoint-*") if (p / STATE_FILE).exists()),
                   key=lambda p: int(p.name.split("-")[-1]))
    log.info("fine-tuned %d steps at %.2f steps/s; %d checkpoints in %s", done, sps, len(found), out)
    return FinetuneResult(out, found, losses, sps)


def _train(net: Any, ivm: IVModel, opt: torch.optim.Optimizer, feats: list, out: Path, start: int,
           losses: list[tuple[int, float]], config: dict[str, Any], progress: bool) -> int:
    """Steps ``start + 1 .. steps`` (the batch of a step depends only on the seed and the step),
    saving a checkpoint every ``save_every``; returns the number of steps run."""
    steps, save_every, batch_size, seed = config["steps"], config["save_every"], config["batch_size"], config["seed"]
    net.train()
    t0, done = time.perf_counter(), 0
    try:
        for step in progress_bar(range(start + 1, steps + 1), desc="fine-tuning", progress=progress):
            batch = _collate([feats[i] for i in _batch_indices(len(feats), batch_size, step, seed)], ivm.pad_token_id)
            loss = net(**{k: v.to(ivm.device) for k, v in batch.items()}).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append((step, float(loss.detach())))
            done += 1
            if step % save_every == 0 or step == steps:
                _save_checkpoint(net, ivm, opt, out, step, losses, config, done / (time.perf_counter() - t0))
    finally:
        net.eval()
    return done


def _with_lora(net: Any, resume_from: Path | None, r: int, alpha: int, targets: tuple[str, ...]) -> Any:
    """``net`` with LoRA adapters (peft): new ones, or those of the checkpoint being resumed."""
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise IVKitError("--lora needs peft: pip install peft") from None
    if resume_from is not None:
        return PeftModel.from_pretrained(net, str(resume_from), is_trainable=True)
    return get_peft_model(net, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                                          task_type="CAUSAL_LM"))


def _resume_weights(net: Any, ckpt: Path, out: Path, config: dict[str, Any], lora: bool
                    ) -> tuple[int, list[tuple[int, float]]]:
    """Load a checkpoint's full weights into ``net`` (LoRA adapters were loaded with the model);
    return its step and losses. Refuses a run made with other settings."""
    state = json.loads((ckpt / STATE_FILE).read_text())
    if {k: v for k, v in state["config"].items() if k != "steps"} != {k: v for k, v in config.items() if k != "steps"}:
        raise IVKitError(f"{out} holds a run with other settings; resume it with the same settings "
                         f"or choose a new --out")
    if not lora:
        weights = {}
        for f in sorted(ckpt.glob("*.safetensors")):
            weights.update(load_file(str(f)))
        missing, unexpected = net.load_state_dict(weights, strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise IVKitError(f"{ckpt} does not match the model ({missing[:3]}, {unexpected[:3]})")
        if net.config.tie_word_embeddings:
            net.tie_weights()
    log.info("resuming %s from step %d", out, state["global_step"])
    return state["global_step"], [tuple(x) for x in state["losses"]]


def _resume_optimizer(opt: torch.optim.Optimizer, ckpt: Path) -> None:
    """The optimizer's and the RNG's state as they were at the checkpoint (``weights_only`` loads)."""
    if not (ckpt / "optimizer.pt").exists():
        raise IVKitError(f"{ckpt} has no optimizer.pt, so the run cannot continue as it would have "
                         f"without the interruption; start a new --out")
    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    rng = ckpt / "rng_state.pt"
    if rng.exists():  # dropout draws continue where they stopped
        torch.set_rng_state(torch.load(rng, weights_only=True)["torch"])


def _save_checkpoint(net: Any, ivm: IVModel, opt: torch.optim.Optimizer, out: Path, step: int,
                     losses: list[tuple[int, float]], config: dict[str, Any], sps: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out))
    try:
        net.save_pretrained(tmp)
        ivm.tokenizer.save_pretrained(tmp)
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng_state.pt")
        state = {"global_step": step, "losses": losses, "steps_per_second": sps, "config": config,
                 "log_history": [{"step": s, "loss": l} for s, l in losses]}
        atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Resuming needs only the newest optimizer state (twice the model's size for AdamW).
    for older in out.glob("checkpoint-*"):
        if older != target and (older / "optimizer.pt").exists():
            (older / "optimizer.pt").unlink()
    return target
