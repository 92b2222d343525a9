"""Epsilon-greedy neural contextual bandit: regress each arm's reward, play the best predicted arm,
and a random one with probability epsilon (rlscratch/bandit.py has the replay, the reward models and
the augmentation it shares with the other bandit agents).

The network predicts each arm's expected reward f_a(x) ~ E[r | x, a] and is trained by MSE on the
*taken* arm's prediction only (the other arms' rewards were never seen):

    per round (a batch of contexts, one per parallel env):
        a = argmax_a f_a(x), or a uniformly random arm with probability epsilon (a schedule over rounds)
        store (x, a, r) in the replay
        updates_per_round times (fractions accumulate):
            sample a minibatch of rounds (images randomly shifted by up to augment_shift pixels)
            L = mean_n (f_{a_n}(x_n) - r_n)^2;   one optimizer step
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.bandit import (
    REWARD_MODELS,
    BanditReplay,
    ReplayConfig,
    build_net,
    flat,
    image_shape,
    reward_model_updates,
)
from rlscratch.config import ModelConfig, bounded
from rlscratch.optim_config import Schedule, ScheduleSpec, make_optimizer, schedule_field


@dataclass
class EpsilonGreedyConfig(ReplayConfig):
    reward_model: str = bounded("softmax", choices=REWARD_MODELS)
    epsilon: ScheduleSpec = schedule_field(0.1, 0.0, 10_000, help="probability of a random arm (clock: rounds)")


class EpsilonGreedyBandit(Agent):
    """f_a(x) ~ E[r | x, a] by regression on replayed rounds; play argmax_a f_a(x), or with probability
    epsilon (a schedule over rounds: by default linear from 0.1 to 0 over 10,000) a uniformly random arm."""

    Config = EpsilonGreedyConfig
    counters = ("updates", "rounds", "update_credit")

    def __init__(self, config: EpsilonGreedyConfig, spec: EnvSpec, model: ModelConfig,
                 rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.net = build_net(spec.obs_dim, spec.n_actions, model, rng)
        self.optimizer = make_optimizer(config.optim, self.net, lambda: self.rounds)
        self.epsilon_schedule = Schedule(config.epsilon, "agent.epsilon")
        self.replay = BanditReplay(config.replay_size, (spec.obs_dim,))
        self.image_shape = image_shape(spec, config)  # None: no augmentation
        self.rounds = 0  # rounds played (summed over parallel envs)
        self.update_credit = 0.0  # gradient steps owed: updates_per_round per round, paid in whole steps

    @property
    def epsilon(self) -> float:
        return self.epsilon_schedule(self.rounds, self.updates)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        greedy = self.net.infer(flat(obs)).argmax(axis=1)  # softmax is monotone: argmax f = argmax z
        if not explore:
            return greedy
        random_arm = self.rng.integers(0, self.spec.n_actions, len(obs))
        return np.where(self.rng.random(len(obs)) < self.epsilon, random_arm, greedy)

    def observe(self, step: Step) -> dict[str, float]:
        self.replay.add(flat(step.obs), step.action, step.reward)
        self.rounds += len(step.action)
        self.update_credit += self.config.updates_per_round * len(step.action)
        losses = reward_model_updates(self)
        metrics = {"train/epsilon": self.epsilon}
        if losses:
            metrics["loss/reward_mse"] = float(np.mean(losses))
        return metrics

    def components(self) -> dict:
        return {"rng": self.rng, "net": self.net, "optimizer": self.optimizer, "replay": self.replay}
