"""The one way a benchmark runs code in another Python: a worker subprocess, one JSON line per message.

A comparison against another library (PyTorch, Stable-Baselines3) needs that library's Python -- a
venv of its own, since rlscratch never depends on it -- so the benchmark starts a worker there and
drives it over its stdin/stdout:

    parent (this Python)                          worker (``python SCRIPT --worker ...`` in the other venv)
    Worker(python, [SCRIPT, "--worker", ...])  -> serve(info, handlers)
                                               <- {"result": info}                 first line: what it runs on
    worker.call("setup", key="c")              -> {"command": "setup", "key": "c"}
                                               <- {"result": ...} or {"error": "ValueError: ..."}
    worker.close()                             -> stdin closed: the worker's loop ends, it exits 0

While the worker computes, the parent sits blocked on the pipe (and the other way round), so timings
taken on either side never overlap. The worker runs with this checkout's root and benchmarks/ on its
PYTHONPATH, so it can import rlscratch and the benchmark modules next to this file.

This module runs under the other venv's Python too, so it imports only the standard library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent


class WorkerError(RuntimeError):
    """The worker died, or its handler raised (the message names which worker and why)."""


class Worker:
    """The parent's end: start ``python *argv`` with the JSON-line protocol, read its first line (``info``)."""

    def __init__(self, python: str, argv: Sequence[str], name: str = "benchmark worker",
                 env: dict[str, str] | None = None) -> None:
        self.python = python
        self.name = name
        path = os.pathsep.join(filter(None, [str(ROOT), str(BENCHMARKS), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen([python, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, **(env or {}), PYTHONPATH=path))
        self.info: dict = self._read()

    def _read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise WorkerError(f"the {self.name} ({self.python}) exited with code {self.process.wait()}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.name} ({self.python}): {reply['error']}")
        return reply["result"]

    def call(self, command: str, **kwargs: Any) -> Any:
        """Run ``handlers[command](**kwargs)`` in the worker and return its result."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"command": command, **kwargs}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self, timeout: float = 60.0) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=timeout)


def serve(info: dict, handlers: dict[str, Callable[..., Any]]) -> int:
    """The worker's end: announce ``info``, then answer one request per stdin line until stdin closes.
    A handler's exception goes back to the parent as ``{"error": ...}`` rather than killing the worker."""
    print(json.dumps({"result": info}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("command")
        try:
            reply = {"result": handlers[command](**request)}
        except Exception as error:  # tell the parent instead of dying silently
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), flush=True)
    return 0
