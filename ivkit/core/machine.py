"""What a measurement ran on: the machine and the versions behind a figure.

Every study script records this next to its numbers, so a page can say which CPU, how many cores
and threads, and which torch / transformers / ivkit produced each figure.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from .._version import __version__


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM (GiB), torch threads, ``OMP_NUM_THREADS`` and the versions of Python,
    torch, transformers, numpy and ivkit, as a JSON-ready dict."""
    import numpy
    import torch
    import transformers

    mem = _proc_field("/proc/meminfo", "MemTotal")
    return {"cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
            "cores": os.cpu_count(), "ram_gib": int(mem.split()[0]) // 1024 // 1024 if mem else None,
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": numpy.__version__, "ivkit": __version__,
            "os": platform.platform()}
