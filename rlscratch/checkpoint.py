"""Checkpoints: one ``.npz`` per save under ``RUN_DIR/checkpoints/``, written atomically (temporary
file + rename, so a crash mid-write leaves the previous checkpoint loadable), the last N kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from rlscratch.errors import CheckpointError
from rlscratch.nn.serialization import atomic_savez, load_npz

_NAME = re.compile(r"^step_(\d+)\.npz$")


class CheckpointManager:
    def __init__(self, folder: Path, keep: int = 3) -> None:
        self.folder = folder
        self.keep = keep

    def path_for(self, step: int) -> Path:
        return self.folder / f"step_{step:010d}.npz"

    def all(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary files from an interrupted write are ignored)."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict) -> Path:
        path = self.path_for(step)
        atomic_savez(path, {**arrays, "meta": np.array(json.dumps(meta))})
        for old in self.all()[:-self.keep]:
            old.unlink()
        return path

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of one checkpoint; anything unreadable is a CheckpointError naming the file."""
    try:
        arrays = load_npz(path)
    except ValueError as err:
        raise CheckpointError(f"{err}; delete it to fall back on an earlier checkpoint") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not an rlscratch checkpoint (no 'meta' entry)")
    meta = json.loads(str(arrays.pop("meta")))
    return arrays, meta
