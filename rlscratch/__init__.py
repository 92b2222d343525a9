"""rlscratch: deep reinforcement learning from scratch, with every backward pass written by hand."""

from __future__ import annotations

from pathlib import Path as _Path
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from rlscratch.trained import TrainedAgent

__version__ = "0.1.0"

# In a source checkout, agents/, envs/ and configs/ sit beside this package (the project's layout)
# and are installed as rlscratch.agents, rlscratch.envs and rlscratch.configs. Letting this package
# also search the checkout's root makes those names import the same way before installation, under
# an editable install, and when running from the repository root.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "agents" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - __path__ is defined for packages


def load(run_dir: str | _Path, checkpoint: str | _Path | None = None, best: bool = False) -> TrainedAgent:
    """The agent a run directory trained, ready to act: ``rlscratch.load(run_dir).act(obs)``;
    ``best=True``: from the best evaluation's checkpoint (see rlscratch/trained.py)."""
    from rlscratch.trained import load as _load

    return _load(run_dir, checkpoint, best)
