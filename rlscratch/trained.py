"""A trained agent, loaded from its run directory, for use from Python::

    import rlscratch
    agent = rlscratch.load("runs/dqn_cartpole-CartPole-v1-s0-20261204-231500")
    action = agent.act(obs)                          # one observation -> one action
    actions = agent.act(batch_of_obs)                # (N, *obs_shape) -> N actions
    action = agent.act(obs, deterministic=False)     # the exploring policy the agent trained with

``act`` is the same greedy policy the training loop evaluates (``Agent.act(obs, explore=False)``),
with the run's observation normaliser applied first when it had one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlscratch.agent import Agent
from rlscratch.config import RunConfig
from rlscratch.envs.wrappers import ObservationNormalizer


class TrainedAgent:
    """An agent restored from a checkpoint, acting on one observation or a batch."""

    def __init__(self, config: RunConfig, agent: Agent, normalizer: ObservationNormalizer | None) -> None:
        self.config = config
        self.agent = agent  # the agent object itself: its networks, its hyperparameters (agent.config)
        self.normalizer = normalizer
        # the shape of ONE observation: an agent trained on a dataset says so itself (input_shape)
        self.obs_shape: tuple[int, ...] = tuple(getattr(agent, "input_shape", None) or agent.spec.obs_shape)

    @property
    def observation_space(self) -> gym.Space | None:
        return self.agent.spec.observation_space if self.agent.spec is not None else None

    @property
    def action_space(self) -> gym.Space | None:
        return self.agent.spec.action_space if self.agent.spec is not None else None

    def act(self, obs: Any, deterministic: bool = True) -> Any:
        """The action for one observation (shaped like the env's), or an array of actions for a batch
        (a leading batch axis). ``deterministic=False``: the agent's exploring policy, which draws on
        its random generator."""
        obs = np.asarray(obs)
        single = obs.ndim == len(self.obs_shape)
        batch = obs[None] if single else obs
        if batch.shape[1:] != self.obs_shape:
            raise ValueError(f"expected an observation of shape {self.obs_shape} or a batch (N, *{self.obs_shape}), "
                             f"got shape {obs.shape}")
        if self.normalizer is not None:
            batch = self.normalizer.normalize(batch)
        actions = self.agent.act(batch, explore=not deterministic)
        return actions[0] if single else actions


def load(run_dir: str | Path, checkpoint: str | Path | None = None, best: bool = False) -> TrainedAgent:
    """The agent a run trained, from its latest checkpoint (or ``checkpoint``, or with ``best`` the
    best evaluation's, checkpoints/best.npz), ready to ``act``.

    Note that this imports whatever the run's config names: its agent class and env (README, Security)."""
    from rlscratch.trainer import load_trained_agent

    config, agent, normalizer = load_trained_agent(Path(run_dir), Path(checkpoint) if checkpoint else None, best)
    return TrainedAgent(config, agent, normalizer)
