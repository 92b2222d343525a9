"""Small agents used by the spine's tests (imported by dotted path, as a user's agent would be)."""

from dataclasses import dataclass

import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, Step
from rlscratch.config import bounded
from rlscratch.models import mlp


@dataclass
class OnlineQConfig:
    lr: float = bounded(1e-3, gt=0)
    epsilon: float = bounded(0.2, ge=0, le=1)
    gamma: float = bounded(0.99, ge=0, le=1)


class OnlineQ(Agent):
    """Semi-gradient Q-learning, one update per vector step: all of its state is in components(),
    so a resumed run must match an uninterrupted one exactly."""

    Config = OnlineQConfig

    def __init__(self, config, spec, model, rng):
        super().__init__(config, spec, model, rng)
        self.q = mlp(spec.obs_dim, spec.n_actions, model, rng)
        self.optimizer = nn.Adam(self.q, lr=config.lr)

    def act(self, obs, explore=True):
        greedy = self.q.infer(obs).argmax(axis=1)
        if not explore:
            return greedy
        random = self.rng.integers(0, self.spec.n_actions, len(obs))
        return np.where(self.rng.random(len(obs)) < self.config.epsilon, random, greedy)

    def observe(self, step: Step):
        target = step.reward + self.config.gamma * (1 - step.terminated) * self.q.infer(step.next_obs).max(axis=1)
        q = self.q(step.obs)
        rows = np.arange(len(q))
        loss, dq_taken = nn.mse(q[rows, step.action], target.astype(q.dtype))
        dq = np.zeros_like(q)
        dq[rows, step.action] = dq_taken
        self.q.zero_grad()
        self.q.backward(dq)
        self.optimizer.step()
        self.updates += 1
        return {"loss/td": loss, "train/epsilon": self.config.epsilon}

    def components(self):
        return {"rng": self.rng, "q": self.q, "optimizer": self.optimizer}
