"""Benchmark: the time of one training step (forward, backward, Adam; float32) of a few small
networks in rlscratch, beside the same networks in PyTorch CPU when torch can be had.
(``python -m rlscratch.bench nn`` runs this file; ``python benchmarks/bench_nn.py`` does the same.)

    python -m rlscratch.bench nn                                    # + PyTorch if this python has it
    python -m rlscratch.bench nn --torch-python /path/to/python     # PyTorch timed in a subprocess
    python -m rlscratch.bench nn --blas-threads 1,2                 # compare numpy BLAS thread counts
    python -m rlscratch.bench nn --json                             # machine-readable results

Every network is described once, in ``CASES``; ``build_rlscratch`` and ``build_torch`` turn the same
description into each framework's model, and ``rlscratch_step`` / ``torch_step`` write the same
update in each. PyTorch runs with ``torch.set_num_threads(2)`` and its default Adam; numpy's BLAS is
pinned to 2 threads too (``--blas-threads``). rlscratch's first layer has ``input_grad = False``, as
PyTorch's input needs no gradient. Every process timed has glibc's malloc told to keep freed memory
(``--malloc``, rlscratch.runtime), sparing both sides a page fault per 4 KiB of each step's big
temporaries.

Method. Each side ("rlscratch", "torch", or one rlscratch side per BLAS thread count) builds its
model and warms up. Then ``--rounds`` rounds alternate between the sides, the order reversed every
other round so that the slow drift of a shared machine hits all sides alike; in each round a side
times a block of about ``--block`` seconds of single steps, one ``time.perf_counter`` pair around
each (``--clock cpu``: ``time.process_time``). A side's figure is the median over every step of
every round, and the ratio is the median rlscratch step over the median PyTorch step (below 1:
rlscratch is faster). A side that lives in a subprocess sits idle, blocked on its pipe, while the
other side is timed (benchmarks/worker.py: the protocol every benchmark's worker speaks).

Run it on an otherwise idle machine. When other processes compete for the cores, multi-threaded
code (PyTorch, numpy's BLAS at 2 threads) waits at every parallel region for a thread that is not
running and slows down by orders of magnitude, far more than single-threaded numpy; the bench
prints a warning when the load average exceeds the number of CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from worker import Worker
from worker import serve as serve_requests

LR = 1e-3
GAMMA = 0.99
MAX_GRAD_NORM = 10.0
TORCH_THREADS = 2
# numpy BLAS threads for the rlscratch side unless --blas-threads says otherwise: 2, as many as
# PyTorch gets (OpenBLAS's own default is one per core). On the 2-core development machine 2 threads
# made case (a) 1.4x faster than threadpool_limits(1) and changed nothing else, since OpenBLAS runs
# small products on one thread anyway; ``--blas-threads 1,2`` measures it on yours.
DEFAULT_BLAS_THREADS = "2"


# -- the networks ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One benchmarked network and update.

    layers: ("linear", n_out) | ("conv", n_out, kernel, padding) | ("flatten",) | (activation name,)
            | ("resblock", kernel) -- relu(x + conv(relu(conv(x)))), both convs channels -> channels,
              padded to keep the map size (MuZero's residual block, without normalisation)
    task:   "classify" -- softmax cross-entropy on integer labels
            "q"        -- Huber loss on Q(s, a) of the taken actions against fixed targets
            "dqn"      -- a full DQN update: target r + gamma (1 - done) max_a' Q_target(s', a'),
                          Huber on Q(s, a), backward, global gradient-norm clipping, Adam
    target: the ratio rlscratch/PyTorch the project aims to stay under
    """

    key: str
    title: str
    input_shape: tuple[int, ...]
    layers: tuple[tuple, ...]
    batch: int
    task: str
    target: float

    @property
    def n_out(self) -> int:
        return next(layer[1] for layer in reversed(self.layers) if layer[0] == "linear")

    @property
    def needs_conv(self) -> bool:
        return any(layer[0] in ("conv", "resblock") for layer in self.layers)


def mlp(sizes: list[int], activation: str) -> tuple[tuple, ...]:
    """Linear layers of the given widths with ``activation`` between them (none after the last)."""
    layers: list[tuple] = []
    for width in sizes[1:-1]:
        layers += [("linear", width), (activation,)]
    return (*layers, ("linear", sizes[-1]))


CASES: tuple[Case, ...] = (
    Case("a", "MLP 784-128-10 ReLU, softmax-CE", (784,), mlp([784, 128, 10], "relu"), 128, "classify", 0.80),
    Case("b", "MLP 784-20-20-20-10 sigmoid, softmax-CE", (784,), mlp([784, 20, 20, 20, 10], "sigmoid"),
         32, "classify", 0.40),
    Case("c", "Q-net 4-64-64-2 ReLU, Huber on Q(s,a)", (4,), mlp([4, 64, 64, 2], "relu"), 64, "q", 0.40),
    Case("d", "DQN update on (c): target net, clip, Adam", (4,), mlp([4, 64, 64, 2], "relu"), 64, "dqn", 0.40),
    Case("e", "conv 3x3x16 p1 ReLU, dense 10, softmax-CE", (1, 28, 28),
         (("conv", 16, 3, 1), ("relu",), ("flatten",), ("linear", 10)), 64, "classify", 0.60),
    # The MinAtar paper's Q-network (Young & Tian 2019): 10x10 maps, one 3x3 valid conv, dense 128.
    Case("f", "MinAtar Q-net 4x10x10 conv 3x3x16, dense 128, 6 actions: DQN update", (4, 10, 10),
         (("conv", 16, 3, 0), ("relu",), ("flatten",), ("linear", 128), ("relu",), ("linear", 6)),
         32, "dqn", 0.50),
    Case("g", "residual block 3x3 at 64 channels on 6x6 maps, dense 10, softmax-CE", (64, 6, 6),
         (("resblock", 3), ("flatten",), ("linear", 10)), 128, "classify", 0.80),
)
CASES_BY_KEY = {case.key: case for case in CASES}


def make_batch(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """One fixed batch of inputs and targets, the same arrays for every side."""
    rng = np.random.default_rng(seed)
    n = case.batch
    return {
        "x": rng.standard_normal((n, *case.input_shape)).astype(np.float32),
        "labels": rng.integers(case.n_out, size=n),
        "actions": rng.integers(case.n_out, size=n),
        "targets": rng.standard_normal(n).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "next_x": rng.standard_normal((n, *case.input_shape)).astype(np.float32),
        "dones": (rng.random(n) < 0.1).astype(np.float32),
    }


def conv_available() -> bool:
    try:
        from rlscratch.nn import Conv2d  # noqa: F401
    except ImportError:
        return False
    return True


# -- rlscratch --------------------------------------------------------------------------------------
def build_rlscratch(case: Case, rng: np.random.Generator):
    from rlscratch import nn

    layers, shape = [], case.input_shape
    for kind, *args in case.layers:
        if kind == "linear":
            layers.append(nn.Linear(shape[-1], args[0], rng))
            shape = (args[0],)
        elif kind == "conv":
            n_out, kernel, padding = args
            layers.append(nn.Conv2d(shape[0], n_out, kernel, rng, stride=1, padding=padding))
            shape = (n_out, *(size + 2 * padding - kernel + 1 for size in shape[1:]))
        elif kind == "resblock":
            layers.append(nn.ResidualBlock(shape[0], args[0], rng))
        elif kind == "flatten":
            layers.append(nn.Flatten())
            shape = (math.prod(shape),)
        else:
            layers.append(nn.get_activation(kind))
    # The input is data: no one needs dL/dx, which PyTorch skips too (its input needs no grad).
    layers[0].input_grad = False
    return nn.Sequential(*layers)


def rlscratch_step(case: Case) -> Callable[[], None]:
    from rlscratch import nn

    net = build_rlscratch(case, np.random.default_rng(0))
    optimizer = nn.Adam(net, lr=LR)
    batch = make_batch(case)
    x, labels, actions = batch["x"], batch["labels"], batch["actions"]
    rows = np.arange(case.batch)

    def q_backward(targets: np.ndarray) -> None:
        q = net.forward(x)
        _, dq_taken = nn.huber(q[rows, actions], targets)
        dq = np.zeros_like(q)
        dq[rows, actions] = dq_taken  # only the taken action's Q(s, a) gets a gradient
        net.backward(dq)

    if case.task == "classify":
        def step() -> None:
            net.zero_grad()
            _, dlogits = nn.softmax_cross_entropy(net.forward(x), labels)
            net.backward(dlogits)
            optimizer.step()
    elif case.task == "q":
        def step() -> None:
            net.zero_grad()
            q_backward(batch["targets"])
            optimizer.step()
    elif case.task == "dqn":
        target_net = net.clone()
        rewards, next_x, not_done = batch["rewards"], batch["next_x"], 1.0 - batch["dones"]

        def step() -> None:
            targets = rewards + GAMMA * not_done * target_net.infer(next_x).max(axis=1)
            net.zero_grad()
            q_backward(targets)
            nn.clip_grad_norm(net.flat_grads, MAX_GRAD_NORM)
            optimizer.step()
    else:
        raise ValueError(f"unknown task {case.task!r}")
    return step


# -- PyTorch ----------------------------------------------------------------------------------------
def torch_reference():
    """benchmarks/torch_reference.py, the same networks in PyTorch: imported only when a benchmark asks
    for the comparison (rlscratch itself never imports torch), from a Python that has torch."""
    import torch_reference

    return torch_reference


def torch_step(case: Case) -> Callable[[], None]:
    return torch_reference().torch_step(case)


STEP_BUILDERS: dict[str, Callable[[Case], Callable[[], None]]] = {"rlscratch": rlscratch_step, "torch": torch_step}


# -- timing -----------------------------------------------------------------------------------------
# "wall": elapsed time, what a user waits for. "cpu": CPU seconds of the whole process (every thread),
# which a busy machine's other processes cannot inflate by preempting this one; it counts spinning
# and helper threads too, so compare like with like (--blas-threads 1 --torch-threads 1).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_steps(step: Callable[[], None], reps: int, clock: str = "wall") -> list[float]:
    """Seconds taken by each of ``reps`` calls of ``step``, by the named clock."""
    times = []
    clock = CLOCKS[clock]
    for _ in range(reps):
        start = clock()
        step()
        times.append(clock() - start)
    return times


def warm_up(step: Callable[[], None], seconds: float, min_reps: int = 10) -> float:
    """Run ``step`` for at least ``seconds`` and ``min_reps`` calls; returns the median call time."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_reps or time.perf_counter() < deadline:
        times += time_steps(step, min_reps)
    return statistics.median(times)


class LocalSide:
    """Times one framework in this process, on ``threads`` threads: PyTorch's intra-op threads, or
    for rlscratch numpy's BLAS threads (None: the library's default)."""

    def __init__(self, framework: str, threads: int | None = None) -> None:
        self.framework = framework
        self.blas_threads = None
        self._steps: dict[str, Callable[[], None]] = {}
        self._controller = None
        if framework == "torch":
            torch_reference().set_threads(threads or TORCH_THREADS)
        elif threads is not None:
            self.blas_threads = threads
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # a python without the project's dependencies (a torch-only venv, say)
                print("note: threadpoolctl is not installed: BLAS threads left at the library default",
                      file=sys.stderr)
                self.blas_threads = None
            else:
                self._controller = ThreadpoolController()

    def _threads(self):
        if self._controller is None:
            return contextlib.nullcontext()
        return self._controller.limit(limits=self.blas_threads, user_api="blas")

    def info(self) -> dict:
        if self.framework == "torch":
            return torch_reference().info()
        return {"numpy": np.__version__, "blas": blas_description(), "blas_threads": self.blas_threads}

    def setup(self, key: str, warmup: float) -> float:
        with self._threads():
            step = STEP_BUILDERS[self.framework](CASES_BY_KEY[key])
            self._steps[key] = step
            return warm_up(step, warmup)

    def time(self, key: str, reps: int, clock: str = "wall") -> list[float]:
        with self._threads():
            return time_steps(self._steps[key], reps, clock)

    def release(self, key: str) -> None:
        self._steps.pop(key, None)

    def close(self) -> None:
        self._steps.clear()


class RemoteSide:
    """Times one framework in a worker subprocess running another Python (one that has torch, say),
    over the benchmarks' one worker protocol (benchmarks/worker.py)."""

    def __init__(self, python: str, framework: str, threads: int | None = None, malloc: str = "tuned") -> None:
        self.python = python
        self.worker = Worker(python, [__file__, "--worker", framework, "--worker-threads", str(threads or 0),
                                      "--malloc", malloc])

    def info(self) -> dict:
        return dict(self.worker.info, python=self.python)

    def setup(self, key: str, warmup: float) -> float:
        return self.worker.call("setup", key=key, warmup=warmup)

    def time(self, key: str, reps: int, clock: str = "wall") -> list[float]:
        return self.worker.call("time", key=key, reps=reps, clock=clock)

    def release(self, key: str) -> None:
        self.worker.call("release", key=key)

    def close(self) -> None:
        self.worker.close(timeout=30)


def serve(framework: str, threads: int | None, malloc: str) -> int:
    """The worker end of RemoteSide: a LocalSide in this process, its methods answered over stdin/stdout."""
    set_malloc(malloc)
    side = LocalSide(framework, threads)
    return serve_requests(side.info(), {"setup": side.setup, "time": side.time, "release": side.release})


def set_malloc(mode: str) -> bool:
    """'tuned': glibc keeps freed memory for reuse (rlscratch.runtime), in every process timed, so
    that neither side pays page faults for its big temporaries each step. True if applied."""
    if mode == "default":
        return False
    from rlscratch.runtime import keep_freed_memory

    return keep_freed_memory()


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown BLAS"
    blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    if not blas:
        return "unknown BLAS"
    return f"{blas[0]['internal_api']} {blas[0]['version']}, {blas[0]['num_threads']} threads by default"


def measure(cases: list[Case], sides: dict[str, LocalSide | RemoteSide], rounds: int, block: float,
            warmup: float, clock: str = "wall") -> list[dict]:
    """Median step time of every case on every side, rounds alternating between sides."""
    results = []
    for case in cases:
        if case.needs_conv and not conv_available():
            results.append({"case": case.key, "title": case.title, "batch": case.batch,
                            "skipped": "rlscratch.nn.Conv2d is not importable yet"})
            continue
        # Each side's block holds about `block` seconds of steps, judged from its warm-up.
        reps = {name: max(3, round(block / side.setup(case.key, warmup))) for name, side in sides.items()}
        samples: dict[str, list[float]] = {name: [] for name in sides}
        order = list(sides)
        for _ in range(rounds):
            for name in order:
                samples[name] += sides[name].time(case.key, reps[name], clock)
            order.reverse()
        for side in sides.values():
            side.release(case.key)
        medians = {name: statistics.median(times) for name, times in samples.items()}
        result = {"case": case.key, "title": case.title, "batch": case.batch, "target": case.target,
                  "median_ms": {name: 1e3 * t for name, t in medians.items()},
                  "quartiles_ms": {name: [1e3 * q for q in statistics.quantiles(times, n=4)]
                                   for name, times in samples.items()},
                  "steps_timed": {name: len(times) for name, times in samples.items()}}
        if "torch" in medians:
            result["ratio"] = {name: t / medians["torch"] for name, t in medians.items() if name != "torch"}
        results.append(result)
    return results


def format_table(results: list[dict], side_names: list[str]) -> str:
    ours = [name for name in side_names if name != "torch"]
    has_torch = "torch" in side_names
    head = ["case", "network", "batch"] + [f"{name} ms" for name in side_names]
    if has_torch:
        head += ["target"] + [f"ratio {name.replace('rlscratch', '')}".rstrip() for name in ours]
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append([r["case"], r["title"], str(r["batch"]), f"skipped: {r['skipped']}"])
            continue
        row = [r["case"], r["title"], str(r["batch"])] + [f"{r['median_ms'][name]:.3f}" for name in side_names]
        if has_torch:
            row += [f"<= {r['target']:.2f}"] + [f"{r['ratio'][name]:.2f}" for name in ours]
        rows.append(row)
    widths = [max(len(row[i]) for row in [head] + rows if i < len(row) and len(row) == len(head))
              for i in range(len(head))]
    lines = []
    for row in [head] + rows:
        if len(row) < len(head):  # a skipped case: its note runs across the timing columns
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
        else:
            cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells))
    return "\n".join(lines)


def parse_threads(text: str) -> list[int | None]:
    return [None if part.strip() == "default" else int(part) for part in text.split(",")]


def check_torch_python(python: str) -> None:
    """Refuse up front (one line, exit 2) a --torch-python that does not exist or cannot import torch,
    rather than a worker process dying mid-benchmark."""
    from rlscratch.errors import UserError

    found = shutil.which(python)
    if found is None:
        raise UserError(f"--torch-python {python}: no such interpreter (not an executable file, nor on PATH); "
                        "give the python of a venv that has torch, e.g. --torch-python ~/torch-venv/bin/python")
    try:
        probe = subprocess.run([found, "-c", "import torch"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"--torch-python {python}: cannot run it ({err}); give a working Python interpreter") from None
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        raise UserError(f"--torch-python {python} cannot import torch ({reason}); install torch there "
                        "(pip install torch) or leave out --torch-python")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlscratch.bench nn", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="".join(CASES_BY_KEY),
                        help="which cases, by letter (default: all): " + "; ".join(
                            f"{c.key}) {c.title}" for c in CASES))
    parser.add_argument("--torch-python", metavar="PYTHON",
                        help="time PyTorch in a subprocess running this interpreter (one that has torch)")
    parser.add_argument("--no-torch", action="store_true", help="time rlscratch only")
    parser.add_argument("--blas-threads", default=DEFAULT_BLAS_THREADS, metavar="N[,N...]",
                        help="numpy BLAS threads for rlscratch (threadpoolctl): a number, 'default', or a "
                             f"comma list to time each side by side (default: {DEFAULT_BLAS_THREADS})")
    parser.add_argument("--rounds", type=int, default=20, help="alternating rounds per case (default: 20)")
    parser.add_argument("--block", type=float, default=0.05, help="seconds of steps per side per round")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per side per case")
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                        help="'tuned' (default): glibc keeps freed memory for reuse in both sides' processes "
                             "(rlscratch.runtime.keep_freed_memory); 'default': leave malloc alone")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="'wall' (default): elapsed time; 'cpu': the process's CPU time, immune to other "
                             "processes on a busy machine (use with --blas-threads 1 --torch-threads 1)")
    parser.add_argument("--torch-threads", type=int, default=TORCH_THREADS,
                        help=f"PyTorch's threads (torch.set_num_threads; default: {TORCH_THREADS})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return serve(args.worker, args.worker_threads or None, args.malloc)
    malloc_tuned = set_malloc(args.malloc)

    cases = [CASES_BY_KEY[key] for key in args.cases if key in CASES_BY_KEY]
    threads = parse_threads(args.blas_threads)
    sides: dict[str, LocalSide | RemoteSide] = {}
    for n in threads:
        name = "rlscratch" if len(threads) == 1 else f"rlscratch[{'default' if n is None else n}]"
        sides[name] = LocalSide("rlscratch", n)
    notes = []
    if args.torch_python:
        check_torch_python(args.torch_python)
        sides["torch"] = RemoteSide(args.torch_python, "torch", args.torch_threads, args.malloc)
    elif not args.no_torch:
        try:
            sides["torch"] = LocalSide("torch", args.torch_threads)
        except ImportError:
            notes.append("PyTorch is not importable here: timing rlscratch only "
                         "(--torch-python PYTHON times it with another interpreter)")
    load_before = os.getloadavg()[0]
    try:
        infos = {name: side.info() for name, side in sides.items()}
        results = measure(cases, sides, args.rounds, args.block, args.warmup, args.clock)
    finally:
        for side in sides.values():
            side.close()
    load_after = os.getloadavg()[0]
    if max(load_before, load_after) > (os.cpu_count() or 1):
        # Other work competes for the cores; multi-threaded PyTorch suffers most (its threads wait
        # for each other at every parallel region), which flatters rlscratch's ratios.
        notes.append(f"the machine was busy (1-minute load average {load_before:.1f} before, "
                     f"{load_after:.1f} after, on {os.cpu_count()} CPUs): these timings are unreliable")

    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "python": sys.version.split()[0], "sides": infos, "rounds": args.rounds,
                          "block_s": args.block, "clock": args.clock, "malloc_tuned": malloc_tuned,
                          "load_average": [load_before, load_after], "notes": notes,
                          "results": results}, indent=2))
        return 0
    what = "time" if args.clock == "wall" else "process CPU time"
    print(f"median {what} of one training step (forward + backward + Adam, float32), "
          f"{args.rounds} rounds alternating sides, ~{1e3 * args.block:.0f} ms blocks")
    for name, info in infos.items():
        if name == "torch":
            where = f" in {info['python']}" if "python" in info else " in this process"
            print(f"  torch: PyTorch {info['torch']} CPU, torch.set_num_threads({info['threads']}){where}")
        else:
            pinned = "library default" if info["blas_threads"] is None else f"pinned to {info['blas_threads']}"
            print(f"  {name}: numpy {info['numpy']}, {info['blas']}; BLAS threads {pinned}")
    malloc = "glibc malloc keeps freed memory (--malloc tuned)" if malloc_tuned else "malloc untouched"
    print(f"  {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {malloc}")
    for note in notes:
        print(f"  note: {note}")
    print()
    print(format_table(results, list(sides)))
    if "torch" in sides:
        print("\nratio = rlscratch / PyTorch median step (below 1: rlscratch is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
