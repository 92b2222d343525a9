"""Reading scalars back from TensorBoard event files, with nothing beyond tensorboardX's own
protobuf classes.

An event file is a sequence of TFRecords: an 8-byte little-endian length, a 4-byte masked CRC-32C
of it, the serialized ``Event`` protobuf, and a 4-byte CRC of that. A file still being written may
end in a partial record, which is skipped. Damage anywhere else (a length whose CRC does not match,
a record that does not parse) is an error naming the file and the byte offset: a damaged length
would otherwise silently cut off every record after it. (The record CRCs are not checked: CRC-32C
in pure Python costs about a second per megabyte, and a damaged record almost never parses.)
Files are read oldest first; a resumed run's writer starts with a SessionLog START at its
``purge_step``, which drops the points logged from that step on by the run it continues -- as
TensorBoard does.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlscratch.errors import UserError


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # the Castagnoli polynomial, reflected
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_scalars(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} from every event file directly in ``run_dir``, sorted by step."""
    from tensorboardX.proto import event_pb2

    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read event file {path}: {err.strerror}") from None
        offset = 0
        damaged = f"event file {path} is damaged at byte {{}}; move it out of the run directory to plot the rest"
        while offset + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            (length_crc,) = struct.unpack_from("<I", data, offset + 8)
            if masked_crc32c(data[offset:offset + 8]) != length_crc:
                raise UserError(damaged.format(offset))
            start, end = offset + 12, offset + 12 + length
            if end + 4 > len(data):
                break
            try:
                event = event_pb2.Event.FromString(data[start:end])
            except Exception:  # protobuf's DecodeError, whose module path varies between versions
                raise UserError(damaged.format(start)) from None
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                # A resumed run's purge_step: it replaces whatever was logged from that step on.
                for pairs in points.values():
                    pairs[:] = [p for p in pairs if p[0] < event.step]
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    points[value.tag].append((event.step, value.simple_value))
            offset = end + 4
    result = {}
    for tag, pairs in points.items():
        pairs.sort(key=lambda p: p[0])
        steps, values = zip(*pairs)
        result[tag] = (np.array(steps), np.array(values))
    return result
