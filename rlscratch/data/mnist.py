"""Real MNIST: finding the four standard IDX files, loading them with MD5 verification, scaling.

Lookup order (first match wins):

1. an explicit ``path`` (a folder holding the files). It is authoritative: if the files are not
   there it is an error, rather than silently training on some other copy;
2. ``$RLSCRATCH_DATA/mnist/``;
3. the per-user cache, ``$XDG_CACHE_HOME/rlscratch/mnist`` or ``~/.cache/rlscratch/mnist``
   (where ``python -m rlscratch.data fetch mnist`` writes).

Among 2 and 3, the first folder holding any MNIST file is used, and a file missing from it is an
error rather than a reason to mix copies from two places.

Every load re-hashes the decompressed content. Measured: MD5 of the 47 MB train images takes
~0.07-0.1 s against ~0.25 s to gunzip them, so a sidecar stamp to skip hashing is not worth its
staleness risks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rlscratch.data.idx import DataError, StrPath, decode_idx, read_bytes

__all__ = [
    "FETCH_COMMAND",
    "MNIST_FILES",
    "MnistFile",
    "cache_dir",
    "check_mnist",
    "fetch_hint",
    "find_mnist",
    "load_mnist",
    "load_mnist_file",
    "mnist_file_path",
    "scale_images",
]

Split = Literal["train", "test"]

FETCH_COMMAND = "python -m rlscratch.data fetch mnist"
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
ROWS = COLS = 28
SPLIT_SIZES = {"train": 60000, "test": 10000}


@dataclass(frozen=True)
class MnistFile:
    """One of the four standard files: its name without ``.gz``, IDX magic and MD5 of the raw content."""

    stem: str
    magic: int
    md5: str


MNIST_FILES: dict[tuple[str, str], MnistFile] = {
    ("train", "images"): MnistFile("train-images-idx3-ubyte", IMAGES_MAGIC, "6bbc9ace898e44ae57da46a324031adb"),
    ("train", "labels"): MnistFile("train-labels-idx1-ubyte", LABELS_MAGIC, "a25bea736e30d166cdddb491f175f624"),
    ("test", "images"): MnistFile("t10k-images-idx3-ubyte", IMAGES_MAGIC, "2646ac647ad5339dbf082846283269ea"),
    ("test", "labels"): MnistFile("t10k-labels-idx1-ubyte", LABELS_MAGIC, "27ae3e4e09519cfbb04c329615203637"),
}


def cache_dir() -> Path:
    """The per-user folder that ``fetch`` fills: ``$XDG_CACHE_HOME/rlscratch/mnist`` or ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "rlscratch" / "mnist"


def fetch_hint(folder: Path | None = None) -> str:
    """The command that repairs ``folder``; ``--dir`` is added unless it is the default cache."""
    if folder is None or _same_dir(folder, cache_dir()):
        return f"run: {FETCH_COMMAND}"
    return f"run: {FETCH_COMMAND} --dir {folder}"


def mnist_file_path(folder: StrPath, entry: MnistFile) -> Path | None:
    """Where ``entry`` lives in ``folder``: the ``.gz`` name (what fetch writes) first, then the raw
    name; None if neither exists. The name only locates the file; its content says if it is gzip."""
    folder = Path(folder)
    for name in (entry.stem + ".gz", entry.stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_mnist(path: StrPath | None = None) -> Path:
    """The folder holding the four MNIST files, following the lookup order in the module docstring.

    Only checks that the files exist; :func:`load_mnist` and :func:`check_mnist` verify content.
    """
    folder, origin, searched = _pick_folder(path)
    if folder is None:
        where = ", ".join(str(f) for f in searched)
        raise DataError(f"MNIST not found (looked in {where}); {fetch_hint()}")
    for entry in MNIST_FILES.values():
        if mnist_file_path(folder, entry) is None:
            raise DataError(_missing(folder, entry, origin))
    return folder


def load_mnist(
    split: Split = "train", path: StrPath | None = None, *, verify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as ``(images, labels)``: uint8 arrays of shape (N, 28, 28) and (N,).

    ``verify`` checks each file's MD5 against the published one (~0.1 s for train); turn it off only
    for data that is deliberately not the official MNIST. Scaling is the caller's choice; see
    :func:`scale_images`. Any defect raises :class:`DataError` with a one-line message and the fix.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_mnist(path)
    images = load_mnist_file(folder, MNIST_FILES[split, "images"], verify)
    labels = load_mnist_file(folder, MNIST_FILES[split, "labels"], verify)
    if images.ndim != 3 or images.shape[1:] != (ROWS, COLS):
        raise _defect(folder, MNIST_FILES[split, "images"], f"images are {_dims(images)}, expected Nx28x28")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise _defect(folder, MNIST_FILES[split, "labels"], f"{_dims(labels)} labels for {images.shape[0]} images")
    if labels.size and labels.max() > 9:
        raise _defect(folder, MNIST_FILES[split, "labels"], f"label {int(labels.max())} is not a digit")
    return images, labels


def check_mnist(path: StrPath | None = None) -> tuple[Path | None, list[str]]:
    """Verify all four files in the folder :func:`find_mnist` would pick: ``(folder, problems)``,
    one line per problem, empty when every file loads and matches its MD5."""
    folder, _, searched = _pick_folder(path)
    if folder is None:
        where = ", ".join(str(f) for f in searched)
        return None, [f"MNIST not found (looked in {where}); {fetch_hint()}"]
    problems = []
    for entry in MNIST_FILES.values():
        try:
            # A matching MD5 pins the whole content, so shapes and image/label counts agree too.
            load_mnist_file(folder, entry, verify=True)
        except DataError as e:
            problems.append(str(e))
    return folder, problems


def scale_images(images: np.ndarray, layout: Literal["flat", "nchw"] = "flat") -> np.ndarray:
    """uint8 images (N, 28, 28) as float32 in [0, 1]: ``"flat"`` gives (N, 784) for MLPs,
    ``"nchw"`` gives (N, 1, 28, 28) for convolutions."""
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    n = images.shape[0]
    shape = {"flat": (n, -1), "nchw": (n, 1, *images.shape[1:])}
    if layout not in shape:
        raise ValueError(f"layout must be 'flat' or 'nchw', got {layout!r}")
    out = images.reshape(shape[layout]).astype(np.float32)
    # Divide rather than multiply by 1/255: 255/255 is exactly 1.0, so the range really is [0, 1].
    out /= np.float32(255.0)
    return out


def load_mnist_file(folder: StrPath, entry: MnistFile, verify: bool = True) -> np.ndarray:
    """One of the four files from ``folder`` as a uint8 array, validated (and MD5-checked if ``verify``)."""
    folder = Path(folder)
    path = mnist_file_path(folder, entry)
    if path is None:
        raise DataError(_missing(folder, entry))
    try:
        data = read_bytes(path)
        array = decode_idx(data, entry.magic, name=str(path))
    except DataError as e:
        raise DataError(f"{e}; {fetch_hint(folder)}") from e
    # Hash after parsing so a truncated or mislabeled file gets the more specific message above.
    if verify:
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != entry.md5:
            raise DataError(f"{path}: MD5 mismatch (got {digest}, expected {entry.md5}); {fetch_hint(folder)}")
    return array


def _pick_folder(path: StrPath | None) -> tuple[Path | None, str, list[Path]]:
    """The folder to use (complete or not), where it came from, and every folder considered."""
    if path is not None:
        folder = Path(path).expanduser()
        return folder, "explicit path", [folder]
    candidates = []
    env = os.environ.get("RLSCRATCH_DATA")
    if env:
        candidates.append((Path(env).expanduser() / "mnist", "$RLSCRATCH_DATA/mnist"))
    candidates.append((cache_dir(), "cache"))
    for folder, origin in candidates:
        if any(mnist_file_path(folder, e) is not None for e in MNIST_FILES.values()):
            return folder, origin, [f for f, _ in candidates]
    return None, "", [f for f, _ in candidates]


def _missing(folder: Path, entry: MnistFile, origin: str = "") -> str:
    where = f" ({origin})" if origin else ""
    return f"{folder / (entry.stem + '.gz')}: file not found{where}; {fetch_hint(folder)}"


def _defect(folder: Path, entry: MnistFile, problem: str) -> DataError:
    path = mnist_file_path(folder, entry) or folder / entry.stem
    return DataError(f"{path}: {problem}; {fetch_hint(folder)}")


def _dims(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape))


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().resolve() == b.expanduser().resolve()
    except OSError:
        return False
