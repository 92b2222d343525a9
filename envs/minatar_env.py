"""MinAtar's games, plus the state exact resume needs (registered under MinAtar's own ids).

The collector rebuilds an env on resume by replaying its current episode: it restores the env's
state from just before the episode's reset -- gymnasium's ``np_random`` and, for envs that have one,
``get_state()`` -- then resets and repeats the actions taken since (rlscratch/collector.py). MinAtar
never touches ``np_random``. What it carries from one episode into the next is:

  * its own random generator, a ``np.random.RandomState`` in ``minatar.Environment`` (``game.random``,
    shared with the game as ``game.env.random`` once seeded): it draws every sticky action, the
    ball's start, each spawned enemy/car/fish. Only the first episode starts from a seed; every
    later reset goes on drawing from wherever the previous episode left it;
  * the last action taken (``game.last_action``): a sticky action repeats it -- even as the new
    episode's first action.

So without this class, a resumed run replayed every episode after an env's first one from a
fresh, unseeded generator: the envs' observations (and so the replay buffer and every update after)
differed from the uninterrupted run's. ``get_state``/``set_state`` hand both to the collector (a few
KB of JSON per env, captured at each reset), and a seeded reset clears ``last_action`` too, so it
starts exactly like a new env (evaluations reseed their envs every time: the previous evaluation's
last action no longer leaks into the next one's first sticky action).
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np

_root_logger = logging.getLogger()
_level = _root_logger.level
_root_logger.setLevel(logging.ERROR)  # minatar.gym warns that seaborn (only for rgb rendering) is missing
try:
    from minatar.gym import BaseEnv, register_envs
finally:
    _root_logger.setLevel(_level)

from .factory import MINATAR_PREFIX  # noqa: E402

MINATAR_OWN_ENTRY_POINT = "minatar.gym:BaseEnv"
ENTRY_POINT = "rlscratch.envs.minatar_env:MinAtarEnv"


class MinAtarEnv(BaseEnv):
    """minatar.gym.BaseEnv with ``get_state``/``set_state`` (its generator and last action) and
    seeded resets that start as a new env would."""

    def __init__(self, game: str, **kwargs: Any) -> None:
        super().__init__(game, **kwargs)
        # One generator for the sticky actions and the game, as every seeded MinAtar env has anyway.
        self.game.env.random = self.game.random

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            gym.Env.reset(self, seed=seed)  # np_random is unused, but the collector records it: seed it
            self.game.last_action = 0  # as in a new env
        return super().reset(seed=seed, options=options)

    def get_state(self) -> dict[str, Any]:
        """MinAtar's generator (MT19937 key, position, cached Gaussian) and the last action, as JSON."""
        _, key, pos, has_gauss, cached_gaussian = self.game.random.get_state()
        return {"key": np.asarray(key).tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian), "last_action": int(self.game.last_action)}

    def set_state(self, state: dict[str, Any]) -> None:
        # In place: game.random and game.env.random are one object.
        self.game.random.set_state(("MT19937", np.asarray(state["key"], dtype=np.uint32), state["pos"],
                                    state["has_gauss"], state["cached_gaussian"]))
        self.game.last_action = state["last_action"]


def register() -> None:
    """MinAtar's gymnasium ids (MinAtar/Breakout-v1, ...), made by ``MinAtarEnv``. The minatar package
    defines the ids but registers them only when asked; ids it registered with its own class (an
    earlier ``minatar.gym.register_envs()``) are pointed at ours."""
    if not any(env_id.startswith(MINATAR_PREFIX) for env_id in gym.registry):
        register_envs()
    for env_id, spec in gym.registry.items():
        if env_id.startswith(MINATAR_PREFIX) and spec.entry_point == MINATAR_OWN_ENTRY_POINT:
            spec.entry_point = ENTRY_POINT
