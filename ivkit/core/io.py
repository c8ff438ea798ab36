"""Files and progress: atomic writes, strict JSON, digests, progress bars.

Each writer writes to a temporary file in the target's directory, flushes it to disk, then
renames it over the target (``os.replace`` is atomic on POSIX), so a reader never sees a
half-written artifact. Nothing is ever unpickled: tensors go to safetensors, the rest to JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic(path, write)


def atomic_write_json(path: Path, obj: Any, *, indent: int | None = 1) -> None:
    """Write ``obj`` as strict JSON (non-finite floats become null) atomically."""
    atomic_write_text(path, json.dumps(_strict(obj), indent=indent, default=str))


def _strict(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return json_safe(x)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def json_safe(x: Any) -> Any:
    """``x``, with a non-finite float (NaN, inf) turned into None, so that JSON stays strict."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (tensors are made contiguous CPU copies)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(clean, tmp, metadata=metadata))


def progress_bar(iterable=None, *, progress: bool = True, **kwargs):
    """A tqdm bar on stderr, off when ``progress`` is False or ``TQDM_DISABLE`` is set."""
    from tqdm.auto import tqdm

    disabled = (not progress) or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(iterable, disable=disabled, leave=False, **kwargs)
