"""Command line: ``python -m rlscratch.bench <benchmark> [options]`` (``--help`` after a name lists
its options). To add a benchmark, write ``rlscratch/bench/<name>.py`` with a ``main(argv) -> int``
and register it below; modules are imported only when chosen, so one benchmark's optional
dependencies never burden another."""

from __future__ import annotations

import argparse
import importlib
import sys

from rlscratch.cli import Parser

# name -> (module, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "nn": ("rlscratch.bench.nn", "one training step of small networks, rlscratch vs PyTorch CPU"),
    "mcts": ("rlscratch.bench.mcts", "MuZero tree-search throughput (simulations/s), 1 and 64 roots"),
}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m rlscratch.bench",
        description="rlscratch benchmarks.",
        epilog="benchmarks:\n" + "\n".join(f"  {name:<8} {text}" for name, (_, text) in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="options passed on to the benchmark")
    args = parser.parse_args(argv)
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    return int(module.main(args.args) or 0)


if __name__ == "__main__":
    from rlscratch.cli import run_cli

    sys.exit(run_cli(main))
