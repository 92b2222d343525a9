"""python -m rlscratch.notation FILE [--size X=784 ...]
   python -m rlscratch.notation emit FILE [--out model.py] [--size X=784 ...]

Prints the parsed program (canonical form), its data and inferred parameter shapes, and the forward,
loss and backward passes one line per step -- the chain rule written out. With ``emit``, writes the
program as a standalone numpy module instead (standard output, or --out). Errors are one line and
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlscratch.cli import run_cli
from rlscratch.errors import UserError

from .emit import emit
from .explain import explain
from .interaction import PROGRAMS
from .syntax import NotationError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    generate = bool(argv) and argv[0] == "emit"
    prog = "python -m rlscratch.notation" + (" emit" if generate else "")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("file", help="a program in the arrow notation ('-' reads standard input), or the name of a "
                                     "shipped agent program (a2c_gae.arrow)")
    if generate:
        argv = argv[1:]
        parser.add_argument("--out", metavar="FILE", help="write the module here (default: standard output)")
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
        path = Path(args.file)
        if not path.exists() and (PROGRAMS / args.file).is_file():  # a shipped agent program: a2c_gae.arrow
            path = PROGRAMS / args.file
        try:
            text, where = path.read_text(), args.file
        except OSError as err:
            raise UserError(f"cannot read {args.file}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise UserError(f"{args.file} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                            f"{err.start}); save it with UTF-8 encoding") from None
    try:
        output = emit(text, sizes, name=Path(where).stem) if generate else explain(text, sizes)
    except NotationError as err:
        raise UserError(f"{where}: {err}") from None
    if generate and args.out:
        try:
            Path(args.out).write_text(output)
        except OSError as err:
            raise UserError(f"cannot write {args.out}: {err.strerror}") from None
    else:
        sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
