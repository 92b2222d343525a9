"""Reading scalars back from TensorBoard event files, with nothing beyond tensorboardX's own
protobuf classes.

An event file is a sequence of TFRecords: an 8-byte little-endian length, a 4-byte CRC of it, the
serialized ``Event`` protobuf, and a 4-byte CRC of that. (CRCs are not verified: a file still being
written may end in a partial record, which is skipped.) Files are read oldest first; a resumed run's
writer starts with a SessionLog START at its ``purge_step``, which drops the points logged from that
step on by the run it continues -- as TensorBoard does.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import numpy as np


def read_scalars(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} from every event file directly in ``run_dir``, sorted by step."""
    from tensorboardX.proto import event_pb2

    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            start, end = offset + 12, offset + 12 + length
            if end + 4 > len(data):
                break
            event = event_pb2.Event.FromString(data[start:end])
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
