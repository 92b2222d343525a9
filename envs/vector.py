"""The vector env rlscratch trains with: gymnasium's SyncVectorEnv, autoreset disabled, stepped in a tight loop.

gymnasium's ``SyncVectorEnv.step`` serves every autoreset mode and every space: per env it checks the
mode, splits the actions with ``iterate``, merges each env's ``info`` dict into the batched one, and
at the end stacks the observations with ``concatenate``. With autoreset disabled (the collector,
rlscratch.collector, resets ended envs itself) and array spaces (Box, Discrete, MultiDiscrete,
MultiBinary: one numpy array per batch), that is a loop writing each env's results into row i of
preallocated arrays -- which is all ``step`` below does. The envs, their wrappers and the order they
are stepped in are the same, so the results are the same, bit for bit (tests/test_vector_env.py
steps both side by side); only the per-step Python work around them is less. On an env as cheap as
Pendulum that work was over a fifth of SyncVectorEnv.step's time (cProfile of configs/a2c_pendulum.yaml).

Anything else -- another autoreset mode, Tuple or Dict spaces -- goes through gymnasium's own ``step``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

ARRAY_SPACES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


class LoopVectorEnv(gym.vector.SyncVectorEnv):
    """``SyncVectorEnv`` whose ``step``, with autoreset disabled and array spaces, is a plain loop over the envs."""

    def __init__(self, env_fns, **kwargs: Any) -> None:
        super().__init__(env_fns, **kwargs)
        self.loop_step = (self.autoreset_mode == AutoresetMode.DISABLED
                          and isinstance(self.single_observation_space, ARRAY_SPACES)
                          and isinstance(self.single_action_space, ARRAY_SPACES))

    def step(self, actions):
        if not self.loop_step:
            return super().step(actions)
        if self._autoreset_envs.any():  # (what SyncVectorEnv asserts: an ended env must be reset first)
            raise RuntimeError(f"envs {np.flatnonzero(self._autoreset_envs).tolist()} ended and were not reset "
                               "before this step (autoreset is disabled: reset them with options['reset_mask'])")
        obs, rewards, terminated, truncated = self._observations, self._rewards, self._terminations, self._truncations
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            # actions[i]: the row SyncVectorEnv's iterate() hands env i, for every array space
            self._env_obs[i], rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            obs[i] = self._env_obs[i]  # (SyncVectorEnv stacks them at the end; reset reads _env_obs too)
            if info:  # most envs return {}: nothing to merge
                infos = self._add_info(infos, info, i)
        np.logical_or(terminated, truncated, out=self._autoreset_envs)
        return (obs.copy() if self.copy else obs), rewards.copy(), terminated.copy(), truncated.copy(), infos
