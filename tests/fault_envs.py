"""Environments for fault-injection tests (env.id: "fault_envs:FaultCartPole-v0", with this folder on
PYTHONPATH): CartPole that can announce an evaluation, slow it down, or emit NaN observations.

    marker:     a file created at every reset -- as an evaluation env (env.eval_kwargs), it tells a test
                that an evaluation has begun, so a signal can be sent in the middle of one
    step_delay: seconds slept per step (an evaluation long enough to be interrupted)
    nan_after:  from this many steps (counted over the env's life) on, observations are NaN
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class FaultCartPole(CartPoleEnv):
    def __init__(self, marker: str | None = None, step_delay: float = 0.0, nan_after: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.marker, self.step_delay, self.nan_after = marker, step_delay, nan_after
        self.steps = 0

    def reset(self, **kwargs):
        if self.marker:
            Path(self.marker).touch()
        return super().reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if self.step_delay:
            time.sleep(self.step_delay)
        if self.nan_after is not None and self.steps >= self.nan_after:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


if "FaultCartPole-v0" not in gym.registry:
    gym.register("FaultCartPole-v0", entry_point=FaultCartPole, max_episode_steps=500)
