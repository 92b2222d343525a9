"""Entry point for ``python -m rlscratch.data``; see :mod:`rlscratch.data.cli`."""

import sys

from rlscratch.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
