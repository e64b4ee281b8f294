"""What a run ran on: versions, device, threads and the code's git revision."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from . import __version__


@functools.cache
def git_revision() -> str | None:
    """HEAD of the checkout holding this package, with '-dirty' if it has changes; else None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def environment(device: torch.device, threads: int = 0) -> dict:
    """Versions and hardware of this process, for the run record."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "mnist_lab": __version__, "git": git_revision(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
        "device": str(device), "device_name": name or platform.machine(),
        "threads": threads or torch.get_num_threads(),
    }
