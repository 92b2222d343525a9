"""What every command-line tool shares: user errors become one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from rlscratch.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line (argparse prints the whole usage block
    first), so it reads like every other input error: ``prog: error: <message> (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def interactive() -> bool:
    """Is someone watching? Progress bars redraw with carriage returns, which turn a log file or a CI
    transcript into kilobytes of noise, so they are drawn only when stdout and stderr are terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def memory_message(err: MemoryError, agent_section: dict) -> str:
    """One line for an allocation that failed: how much it wanted, and the config keys that size it."""
    wanted = re.search(r"allocate ([\d.]+ \w+) for an array with shape (\([^)]*\))", str(err))
    need = f"an array of {wanted.group(1)} (shape {wanted.group(2)})" if wanted else "more memory than is free"
    sizes = [f"agent.{key} (now {value})" for key, value in agent_section.items()
             if any(word in key for word in ("buffer", "capacity", "replay")) and isinstance(value, int)]
    lower = " or ".join(sizes) if sizes else "the sizes in the agent: and model: sections"
    return f"out of memory: the run needed {need}; lower {lower}"


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main``; a UserError (bad config, missing data, foreign checkpoint) prints
    ``error: <message>`` and returns 2. Anything else is a bug and keeps its traceback."""
    try:
        return main(argv) or 0
    except UserError as err:
        message = " ".join(str(err).split("\n"))  # one line, even when a library's message was not
        print(f"error: {message}", file=sys.stderr)
        return 2
