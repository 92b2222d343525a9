"""What every command-line tool shares: user errors become one line on stderr and exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rlscratch.errors import UserError


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main``; a UserError (bad config, missing data, foreign checkpoint) prints
    ``error: <message>`` and returns 2. Anything else is a bug and keeps its traceback."""
    try:
        return main(argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
