"""Recompute vs cache: the generated GRU program over T = 1,000 steps, keeping every state's values for
backward (the cache) or only every k-th state (checkpointing: backward recomputes each segment).

    python benchmarks/notation_recompute.py [--steps 1000] [--repeats 3]

For each setting: the peak memory allocated during one gradient step (tracemalloc, which sees numpy's
arrays; measured in a run of its own, since tracing slows the step) and the median time of the step
without tracing, all in one run, float32, BLAS on one thread. The compiled model's cache is shown too.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rlscratch.notation import compile_program  # noqa: E402
from rlscratch.notation.emit import emit  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from notation_emit import GRU, load  # noqa: E402


def measure(step, repeats: int) -> tuple[float, float]:
    """(peak MiB, median seconds) of one call of ``step``."""
    step()  # warm up
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return peak / 2**20, statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.steps, 32, 16)).astype(np.float32)
    y = rng.standard_normal((args.steps, 32, 4)).astype(np.float32)
    model = compile_program(GRU, np.random.default_rng(0))
    model.input_grad = False
    params = model.state_dict()
    with tempfile.TemporaryDirectory() as folder:
        module = load(emit(GRU), Path(folder), "gru_recompute")
        rows = []

        def compiled() -> None:
            model.zero_grad()
            model.forward(x)
            model.backward_loss({"y": y})

        rows.append(("compiled model (cache everything)", *measure(compiled, args.repeats)))
        for keep in (None, 100, 32, 10, 1):
            label = "emitted, cache everything" if keep is None else f"emitted, keep every {keep}"
            rows.append((label, *measure(lambda k=keep: module.loss_and_gradients(params, x, y, keep_every=k),
                                         args.repeats)))
    print(f"GRU 16->64, batch 32, T = {args.steps}, MSE at every step")
    print(f"{'setting':36s} {'peak MiB':>9s} {'step s':>7s}")
    for label, peak, seconds in rows:
        print(f"{label:36s} {peak:9.1f} {seconds:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
