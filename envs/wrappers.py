"""Environment wrappers of our own.

``ObservationNormalizer`` works on the batch of observations of all parallel envs at once (so every
env shares one estimate) and is saved in checkpoints; the others are ordinary gymnasium wrappers
applied to each env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ObservationNormalizer:
    """obs -> clip((obs - mean) / sqrt(var + eps), -clip, clip), with mean and var running estimates
    over every observation seen in training (merged batch-wise, Chan et al.'s parallel formula).
    Evaluation uses the statistics frozen as they are."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = np.array(1e-4)
        self.clip = clip
        self.eps = eps

    def update(self, batch: np.ndarray) -> None:
        n = batch.shape[0]
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
        self.count = np.array(total)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        scaled = (obs - self.mean) / np.sqrt(self.var + self.eps)
        return np.clip(scaled, -self.clip, self.clip).astype(obs.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.var, self.count = state["mean"].copy(), state["var"].copy(), state["count"].copy()


class MaskObservation(gym.ObservationWrapper):
    """Keeps only some observation components, making the task partially observable -- e.g.
    CartPole with ``keep=[0, 2]`` sees positions and angles but not velocities, so a memoryless agent
    cannot tell which way the pole is moving."""

    def __init__(self, env: gym.Env, keep: list[int]) -> None:
        super().__init__(env)
        self.keep = np.asarray(keep, dtype=np.int64)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box)
        self.observation_space = gym.spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


ENV_REWARD = "env_reward"


class RecordEnvReward(gym.Wrapper):
    """Copies each step's reward, as the environment itself gave it, into ``info["env_reward"]``.
    The env factory puts it under every wrapper a config names, so a reward-changing wrapper (scaling,
    clipping) changes what the agent learns from but not the episode returns that are logged and
    evaluated: those sum ``env_reward``. A per-step copy rather than gymnasium's
    RecordEpisodeStatistics keeps the running sums in the collector, whose checkpoint already restores them."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, ENV_REWARD: float(reward)}


def env_reward(reward: np.ndarray, info: dict) -> np.ndarray:
    """A vector step's rewards as the environments gave them, before any reward wrapper (``RecordEnvReward``)."""
    raw = info.get(ENV_REWARD)
    if raw is None:
        return reward
    mask = info.get(f"_{ENV_REWARD}")
    return raw if mask is None or mask.all() else np.where(mask, raw, reward)


WRAPPERS: dict[str, type[gym.Wrapper]] = {"mask_observation": MaskObservation}
