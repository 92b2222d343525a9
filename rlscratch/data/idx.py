"""The IDX file format (LeCun's MNIST container): reading with strict validation, and writing.

Layout: a 4-byte magic ``0x00 0x00 TYPE NDIM``, then NDIM big-endian uint32 sizes, then the data
in C order. Only TYPE 0x08 (unsigned byte) is supported, which is all MNIST uses.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from rlscratch.errors import UserError

__all__ = ["DataError", "UBYTE", "decode_idx", "encode_idx", "is_gzip", "read_bytes", "read_idx"]

UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"

StrPath = str | os.PathLike[str]


class DataError(UserError, ValueError):
    """A data file is missing, truncated or corrupt. ``str(err)`` is one line naming the file and the fix."""


def is_gzip(head: bytes) -> bool:
    """Whether bytes start like a gzip stream. Content decides, not the file name, so a renamed
    or hand-decompressed file still loads."""
    return head[:2] == _GZIP_MAGIC


def read_bytes(path: StrPath) -> bytes:
    """The file's content, gunzipped if it is gzip data."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if not is_gzip(raw):
        return raw
    try:
        return gzip.decompress(raw)
    # A bad header raises BadGzipFile (an OSError), a cut-off stream EOFError, bad deflate data zlib.error.
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({_one_line(e)})") from e


def decode_idx(data: bytes, expected_magic: int, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a fresh, writable uint8 array, checking magic, header and length."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DataError(f"{name}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated inside the header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        dims = "x".join(map(str, shape))
        raise DataError(f"{name}: {what}: header says {dims} ({expected} bytes), file has {len(data)} bytes")
    # Copy so callers may normalise in place; frombuffer over bytes would be read-only. ~10 ms for 47 MB.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_idx(path: StrPath, expected_magic: int) -> np.ndarray:
    """Load an IDX file (gzip or raw) as a uint8 array; any defect raises :class:`DataError`."""
    return decode_idx(read_bytes(path), expected_magic, name=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array (uncompressed)."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writing supports uint8 only, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    header = struct.pack(f">I{array.ndim}I", (UBYTE << 8) | array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
