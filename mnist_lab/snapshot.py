"""Mid-run snapshots: a long run killed part-way resumes from its last finished epoch.

A study run writes one after every epoch but the last (weights, optimiser state, random
generators, history, clocks) to `RUNS/partial/KEY.pt`, replacing the previous one atomically;
the study runner deletes it once the run's record is stored. Resuming restores every random
stream, so a resumed run ends with the same numbers as one never interrupted.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def snapshot_path(runs_root: Path, key: str) -> Path:
    """Where the run with this config key keeps its snapshot."""
    return runs_root / "partial" / f"{key}.pt"


def save_snapshot(path: Path, state: dict) -> None:
    """Write the state atomically (temporary file, then rename): a kill leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_snapshot(path: Path, key: str, fmt: int) -> dict | None:
    """The snapshot of the run with this key in format `fmt`, or None if there is none or it
    is unreadable.

    An unreadable snapshot (an older format, a damaged disk) only costs the epochs it held,
    so the run starts over rather than failing.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing or unreadable: start over
        return None
    ok = isinstance(state, dict) and state.get("key") == key and state.get("format") == fmt
    return state if ok else None


def epochs_done(path: Path) -> int:
    """How many epochs the snapshot at path holds (0 if none); reads only the history."""
    try:  # mmap: the weights stay on disk
        return len(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["history"])
    except Exception:  # noqa: BLE001 - missing or unreadable: nothing kept
        return 0
