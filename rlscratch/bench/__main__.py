"""Command line: ``python -m rlscratch.bench <benchmark> [options]`` (``--help`` after a name lists
its options). A thin entry point: every benchmark lives in the checkout's benchmarks/ folder (the one
home of benchmarks, with the one worker protocol, benchmarks/worker.py); this runs
``benchmarks/bench_<name>.py``'s ``main(argv)``. To add a benchmark here, write that file and register
it below; modules are imported only when chosen, so one benchmark's optional dependencies never burden
another."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from rlscratch.cli import Parser
from rlscratch.errors import UserError

# name -> (module in benchmarks/, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "nn": ("bench_nn", "one training step of small networks, rlscratch vs PyTorch CPU"),
    "mcts": ("bench_mcts", "MuZero tree-search throughput (simulations/s), 1 and 64 roots"),
}
FOLDER = Path(__file__).resolve().parents[2] / "benchmarks"  # next to rlscratch/ in a source checkout


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m rlscratch.bench",
        description="rlscratch benchmarks (benchmarks/bench_<name>.py).",
        epilog="benchmarks:\n" + "\n".join(f"  {name:<8} {text}" for name, (_, text) in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="options passed on to the benchmark")
    args = parser.parse_args(argv)
    module = BENCHMARKS[args.benchmark][0]
    if not (FOLDER / f"{module}.py").is_file():
        raise UserError(f"python -m rlscratch.bench runs {FOLDER / module}.py, which is not there: the "
                        "benchmarks come with a source checkout (git clone, then pip install -e .)")
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    return int(importlib.import_module(module).main(args.args) or 0)


if __name__ == "__main__":
    from rlscratch.cli import run_cli

    sys.exit(run_cli(main))
