"""python -m rlscratch.notation FILE [--size X=784 ...]

Prints the parsed program (canonical form), its data and inferred parameter shapes, and the forward,
loss and backward passes one line per step -- the chain rule written out. Errors are one line and
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlscratch.cli import run_cli
from rlscratch.errors import UserError

from .compiler import explain
from .parser import NotationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlscratch.notation", description=__doc__.split("\n\n")[1])
    parser.add_argument("file", help="a program in the arrow notation ('-' reads standard input)")
    parser.add_argument("--size", action="append", default=[], metavar="NAME=N",
                        help="the feature size of a data state not declared in the file, e.g. --size X=784")
    args = parser.parse_args(argv)
    sizes = {}
    for item in args.size:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise UserError(f"--size {item!r}: expected NAME=N with N a positive integer, e.g. --size X=784")
        sizes[name.strip()] = int(value)
    if args.file == "-":
        text, where = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, where = Path(args.file).read_text(), args.file
        except OSError as err:
            raise UserError(f"cannot read {args.file}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise UserError(f"{args.file} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                            f"{err.start}); save it with UTF-8 encoding") from None
    try:
        sys.stdout.write(explain(text, sizes))
    except NotationError as err:
        raise UserError(f"{where}: {err}") from None
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
