"""Environment wrappers of our own.

``ObservationNormalizer`` works on the batch of observations of all parallel envs at once (so every
env shares one estimate) and is saved in checkpoints; ``RewardNormalizer`` is its counterpart for the
rewards an on-policy agent learns from (the agent holds and checkpoints it); the others are ordinary
gymnasium wrappers applied to each env.
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
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, batch)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        scaled = (obs - self.mean) / np.sqrt(self.var + self.eps)
        return np.clip(scaled, -self.clip, self.clip).astype(obs.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.var, self.count = state["mean"].copy(), state["var"].copy(), state["count"].copy()


def merge_moments(mean: np.ndarray, var: np.ndarray, count: np.ndarray, batch: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running (mean, var, count) merged with a batch's along axis 0 (Chan et al.'s parallel formula):
    with delta = batch_mean - mean and total = count + n,
        mean' = mean + delta n / total,   var' = (var count + batch_var n + delta^2 count n / total) / total."""
    n = batch.shape[0]
    if batch.dtype in (np.float32, np.float64):
        # batch.mean(axis=0) and batch.var(axis=0), the same sums and roundings as numpy's methods (so the
        # same bits) without their per-call bookkeeping, which on a batch of 16 costs more than the maths
        # (this runs twice per vector step: observations and the rewards' returns)
        batch_mean = np.add.reduce(batch, axis=0) / n
        deviation = batch - batch_mean
        batch_var = np.add.reduce(deviation * deviation, axis=0) / n
    else:  # (integer and boolean observations: numpy's methods sum them in float64)
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
    total = count + n
    delta = batch_mean - mean
    new_mean = mean + delta * n / total
    new_var = (var * count + batch_var * n + delta ** 2 * count * n / total) / total
    return new_mean, new_var, np.array(total)


class RewardNormalizer:
    """r -> clip(r / sqrt(Var[G] + eps), -clip, clip), where G is each env's running discounted return
    G <- gamma G + r (reset to 0 when its episode ends) and Var[G] a running variance over every G seen --
    the maths of SB3's VecNormalize and gymnasium's NormalizeReward. Dividing by the spread of returns
    (not of rewards) keeps the value targets near unit scale whatever the env's reward scale; rewards are
    not centred, so their sign (and what termination means) is kept. Only the learner sees these: logged
    and evaluated returns are the env's own."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.returns = np.zeros(num_envs, dtype=np.float64)  # G per env
        self.mean = np.zeros((), dtype=np.float64)
        self.var = np.ones((), dtype=np.float64)
        self.count = np.array(1e-4)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, self.returns)
        scaled = np.clip(reward / np.sqrt(self.var + self.eps), -self.clip, self.clip)
        self.returns[done] = 0.0
        return scaled.astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"returns": self.returns.copy(), "mean": self.mean.copy(), "var": self.var.copy(),
                "count": self.count.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state["returns"].shape != self.returns.shape:
            raise ValueError(f"reward normaliser has {state['returns'].shape} running returns, expected "
                             f"{self.returns.shape}")
        for key in ("returns", "mean", "var", "count"):
            setattr(self, key, state[key].copy())


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
