"""A run directory's memory of finished stages, so an interrupted extraction resumes.

Each stage of `ivkit.extract` writes its output to ``<out>/.stages/<stage>.json`` (and
``<stage>.safetensors`` for tensors) as soon as it has it, under a *key*: a digest of everything
the output depends on (the model's identity, the task's examples, the settings the stage reads,
and the keys of the stages before it). A rerun into the same directory loads every stage whose key
still matches and computes the rest, so it gives the same result as an uninterrupted run; a
changed setting changes the key of the stages that read it (and of every stage after them), and
those start afresh. Long stages also save their progress (``<stage>.partial.json``: the greedy
path after each head, the sweep after each candidate).

Files are written atomically, the tensors before the JSON that names their digest, so a stage
interrupted while saving is simply computed again. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..core.io import atomic_save_safetensors, atomic_write_json, file_sha256

log = logging.getLogger(__name__)

#: Bumped when a stage's stored form changes, so old stores are recomputed, not misread.
STORE_FORMAT = "ivkit.stages/1"


def digest(*parts: Any) -> str:
    """A short, stable digest of JSON-able parts (a stage key)."""
    blob = json.dumps([STORE_FORMAT, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class StageStore:
    """Stage outputs under ``<out>/.stages``; with ``out=None`` it remembers nothing."""

    def __init__(self, out: str | Path | None):
        self.dir = Path(out) / ".stages" if out is not None else None
        self.resumed: list[str] = []

    def load(self, stage: str, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """The stored ``(data, tensors)`` of ``stage`` if it was stored under ``key``."""
        if self.dir is None:
            return None
        js = self.dir / f"{stage}.json"
        if not js.exists():
            return None
        try:
            record = json.loads(js.read_text())
        except json.JSONDecodeError:
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        tensors: dict[str, torch.Tensor] = {}
        if record.get("tensors_sha256"):
            st = self.dir / f"{stage}.safetensors"
            if not st.exists() or file_sha256(st) != record["tensors_sha256"]:
                return None
            tensors = load_file(str(st))
        if not stage.endswith(".partial"):
            self.resumed.append(stage)
            log.info("resuming: %s from %s", stage, js)
        return record["data"], tensors

    def save(self, stage: str, key: str, data: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Store ``stage``'s output under ``key`` (tensors first, then the JSON naming them)."""
        if self.dir is None:
            return
        record: dict[str, Any] = {"key": key, "data": data}
        if tensors:
            st = self.dir / f"{stage}.safetensors"
            atomic_save_safetensors(st, tensors)
            record["tensors_sha256"] = file_sha256(st)
        atomic_write_json(self.dir / f"{stage}.json", record, indent=None)
