"""Checkpoints: one ``.npz`` per save under ``RUN_DIR/checkpoints/``, written atomically (temporary
file + rename, so a crash mid-write leaves the previous checkpoint loadable), the last N kept.
``best.npz`` beside them is the checkpoint at the best evaluation so far, written the same way and
outside the rotation (never a resume point: ``latest()`` reads only ``step_*.npz``)."""

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

    @property
    def best_path(self) -> Path:
        return self.folder / "best.npz"

    def save_best(self, arrays: dict[str, np.ndarray], meta: dict) -> Path:
        atomic_savez(self.best_path, {**arrays, "meta": np.array(json.dumps(meta))})
        return self.best_path

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None


def read_checkpoint(path: Path, required: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of one checkpoint; anything unreadable is a CheckpointError naming the file.
    ``required``: meta keys the caller reads (the training loop's: ``LOOP_META``)."""
    try:
        arrays = load_npz(path)
    except ValueError as err:
        raise CheckpointError(f"{err}; delete it to fall back on an earlier checkpoint") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path} is not an rlscratch checkpoint (no 'meta' entry)")
    return arrays, parse_meta(arrays.pop("meta"), path, required)


# The meta keys the training loop writes and reads back, and the type each must have.
META_TYPES: dict[str, type | tuple[type, ...]] = {"agent": str, "env_id": str, "num_envs": int, "env_steps": int,
                                                   "elapsed": (int, float)}
LOOP_META = ("agent", "env_id", "num_envs", "env_steps")


def parse_meta(entry: np.ndarray, path: Path, required: tuple[str, ...] = ()) -> dict:
    """A checkpoint's ``meta`` JSON, checked: cut short, not JSON, a required key missing, or a known
    key of the wrong type each name the file and the key (a damaged checkpoint must not half-load)."""
    fix = "delete it to fall back on an earlier checkpoint"
    try:
        meta = json.loads(str(entry))
    except (json.JSONDecodeError, UnicodeError) as err:
        raise CheckpointError(f"{path}: its meta entry is not valid JSON ({err}); {fix}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its meta entry should be a JSON object, got {type(meta).__name__}; {fix}")
    for key in required:
        if key not in meta:
            raise CheckpointError(f"{path}: its meta entry has no '{key}'; {fix}")
    for key, kind in META_TYPES.items():
        if key in meta and (not isinstance(meta[key], kind) or isinstance(meta[key], bool)):
            expected = "a number" if isinstance(kind, tuple) else f"a {kind.__name__}"
            raise CheckpointError(f"{path}: its meta entry has {key}={meta[key]!r}, not {expected}; {fix}")
    return meta
