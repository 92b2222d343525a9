"""Saving models and optimizer state to ``.npz`` (no pickle, written atomically)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .module import Module
from .optim import Optimizer

_OPTIM = "optim/"


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` via a temporary file in the same folder and a rename, so a crash
    mid-write leaves any previous file at ``path`` intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` (pickle refused); a missing or corrupt file raises ValueError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .npz file ({str(err).splitlines()[0]})") from None


def save(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None) -> None:
    """Parameters and buffers by qualified name, plus the optimizer's state under ``optim/``."""
    arrays = model.state_dict()
    if optimizer is not None:
        arrays.update({_OPTIM + k: v for k, v in optimizer.state_dict().items()})
    atomic_savez(path, arrays)


def load(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None) -> None:
    """Restore what ``save`` wrote; a file that does not match the model raises ValueError naming
    the first mismatch."""
    arrays = load_npz(path)
    model_state = {k: v for k, v in arrays.items() if not k.startswith(_OPTIM)}
    try:
        model.load_state_dict(model_state)
        if optimizer is not None:
            optimizer.load_state_dict({k[len(_OPTIM):]: v for k, v in arrays.items() if k.startswith(_OPTIM)})
    except ValueError as err:
        raise ValueError(f"{path} does not match this model: {err}") from None
