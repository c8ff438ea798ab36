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

from .errors import IVKitError, InputError
from .io import atomic_write_text, progress_bar
from .models import IVModel, load_model
from .tasks import DEFAULT_TEMPLATE, Example, PromptTemplate, Task, load_task, make_prompt

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


@dataclass
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
    net = ivm.model
    if lora:
        try:
            from peft import LoraConfig, PeftModel, get_peft_model
        except ImportError:
            raise IVKitError("--lora needs peft: pip install peft") from None
        if latest is not None and resume:
            net = PeftModel.from_pretrained(net, str(latest[1]), is_trainable=True)
        else:
            net = get_peft_model(net, LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=list(lora_targets),
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    start, losses = 0, []
    if latest is not None and resume:
        state = json.loads((latest[1] / STATE_FILE).read_text())
        if {k: v for k, v in state["config"].items() if k != "steps"} != {k: v for k, v in config.items() if k != "steps"}:
            raise IVKitError(f"{out} holds a run with other settings; resume it with the same settings "
                             f"or choose a new --out")
        if not lora:
            from safetensors.torch import load_file

            weights = {}
            for f in sorted(latest[1].glob("*.safetensors")):
                weights.update(load_file(str(f)))
            missing, unexpected = net.load_state_dict(weights, strict=False)
            if unexpected or [m for m in missing if "lm_head" not in m]:
                raise IVKitError(f"{latest[1]} does not match the model ({missing[:3]}, {unexpected[:3]})")
            if net.config.tie_word_embeddings:
                net.tie_weights()
        start, losses = state["global_step"], [tuple(x) for x in state["losses"]]
        log.info("resuming %s from step %d", out, start)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if latest is not None and resume:
        if not (latest[1] / "optimizer.pt").exists():
            raise IVKitError(f"{latest[1]} has no optimizer.pt, so the run cannot continue as it would have "
                             f"without the interruption; start a new --out")
        opt.load_state_dict(torch.load(latest[1] / "optimizer.pt", weights_only=True))
        rng = latest[1] / "rng_state.pt"
        if rng.exists():  # dropout draws continue where they stopped
            torch.set_rng_state(torch.load(rng, weights_only=True)["torch"])

    feats = _examples_to_features(ivm, task.examples, instruction=instruction, chat=chat, template=template,
                                  max_len=max_len)
    pad = ivm.pad_token_id
    net.train()
    t0, done = time.perf_counter(), 0
    try:
        for step in progress_bar(range(start + 1, steps + 1), desc="fine-tuning", progress=progress):
            batch = _collate([feats[i] for i in _batch_indices(len(feats), batch_size, step, seed)], pad)
            loss = net(**{k: v.to(ivm.device) for k, v in batch.items()}).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append((step, float(loss.detach())))
            done += 1
            if step % save_every == 0 or step == steps:
                sps = done / (time.perf_counter() - t0)
                _save_checkpoint(net, ivm, opt, out, step, losses, config, sps)
    finally:
        net.eval()
    sps = done / max(time.perf_counter() - t0, 1e-9)
    if lora:  # leave the caller a plain model: the adapters merged
        ivm.model = net.merge_and_unload().eval()
    found = sorted((p for p in out.glob("checkpoint-*") if (p / STATE_FILE).exists()),
                   key=lambda p: int(p.name.split("-")[-1]))
    log.info("fine-tuned %d steps at %.2f steps/s; %d checkpoints in %s", done, sps, len(found), out)
    return FinetuneResult(out, found, losses, sps)


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
