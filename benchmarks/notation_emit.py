"""Generated code against the compiled model: the time of one gradient step (forward and backward of
the program's loss, no optimizer), side by side in one run, on the MNIST MLP and a GRU program.

    python benchmarks/notation_emit.py [--repeats 30]

Both sides run the same program on the same weights and batch, float32, numpy's BLAS on one thread
(set OPENBLAS_NUM_THREADS=1 before numpy loads: this script does). The two are timed alternately and
the median of each is reported, with the ratio emitted / compiled (below 1: the generated code is faster).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rlscratch.notation import compile_program  # noqa: E402
from rlscratch.notation.emit import emit  # noqa: E402

MLP = """X: 784
M_1: dense(512)
M_2: dense(256)
X --[M_1|relu]-> h_1 --[M_2|relu]-> h_2 --[M_3: dense(10)|softmax]-> p => one_hot(y)
"""
GRU = """X: 16
W_r, W_z, W_xn, W_hn: dense(64)
V: dense(4)
GRU: x_t, h_{t-1}
  x_t|h_{t-1} --[W_r|sigmoid]-> r_t
  x_t|h_{t-1} --[W_z|sigmoid]-> z_t
  x_t --[W_xn]-> a_t
  h_{t-1} --[W_hn]-> b_t
  a_t + r_t * b_t --[tanh]-> n_t
  (1 - z_t) * n_t + z_t * h_{t-1} -> h_t
  return h_t
0 -> h_0
X_t, h_{t-1} --[GRU]-> h_t
h_t --[V]-> p => y_t
"""


def load(code: str, folder: Path, name: str):
    path = folder / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(name: str, source: str, x: np.ndarray, y: np.ndarray, repeats: int, folder: Path) -> tuple:
    model = compile_program(source, np.random.default_rng(0))
    model.input_grad = False  # the data needs no gradient (the generated code never computes it)
    module = load(emit(source), folder, name)
    params = model.state_dict()

    def compiled() -> float:
        model.zero_grad()
        model.forward(x)
        return model.backward_loss({"y": y})

    def generated() -> float:
        return module.loss_and_gradients(params, x, y)[0]

    assert abs(compiled() - generated()) < 1e-4, "the two disagree"
    times: dict[str, list[float]] = {"compiled": [], "emitted": []}
    for _ in range(repeats):
        for label, step in (("compiled", compiled), ("emitted", generated)):
            start = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - start)
    return statistics.median(times["compiled"]), statistics.median(times["emitted"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = {
        "MNIST MLP 784-512-256-10, batch 128": (MLP, rng.random((128, 784), dtype=np.float32),
                                               rng.integers(0, 10, 128)),
        "GRU 16->64, T=32, batch 32, MSE per step": (GRU, rng.standard_normal((32, 32, 16)).astype(np.float32),
                                                    rng.standard_normal((32, 32, 4)).astype(np.float32)),
    }
    print(f"{'program':45s} {'compiled ms':>12s} {'emitted ms':>11s} {'emitted/compiled':>17s}")
    with tempfile.TemporaryDirectory() as folder:
        for i, (label, (source, x, y)) in enumerate(cases.items()):
            compiled, emitted = bench(f"bench{i}", source, x, y, args.repeats, Path(folder))
            print(f"{label:45s} {1e3 * compiled:12.2f} {1e3 * emitted:11.2f} {emitted / compiled:17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
