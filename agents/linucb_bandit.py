"""Neural-LinUCB as a contextual bandit: the reward predictor of the epsilon-greedy agent, explored by
an upper confidence bound instead of at random -- a per-arm Bayesian linear regression on the
network's last hidden features phi(x) says how uncertain each arm's prediction is for *this* x
(rlscratch/bandit.py has the replay, reward models and augmentation the bandit agents share).

    per round (a batch of contexts, one per parallel env):
        a = argmax_a f_a(x) + alpha sqrt(phi(x)^T A_a^{-1} phi(x))
        store (x, a, r);  A_a^{-1} <- Sherman-Morrison update with phi(x)
        updates_per_round times: minibatch regression step, as in epsilon-greedy
        every refresh_every rounds: phi <- the trained network's features; rebuild every A_a on the replay
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
    predicted_rewards,
    reward_model_updates,
)
from rlscratch.config import ModelConfig, bounded
from rlscratch.errors import ConfigError
from rlscratch.optim_config import make_optimizer


class ArmPrecisions:
    """Per-arm precision matrices of a Bayesian linear regression on features phi (prior N(0, I / lambda)):

        A_a = lambda I + sum_{rounds where a was played} phi phi^T,     var(w_a . phi) ~ phi^T A_a^{-1} phi

    kept as inverses and updated by Sherman-Morrison, so adding a round costs O(d^2), not O(d^3):

        (A + phi phi^T)^{-1} = A^{-1} - (A^{-1} phi)(A^{-1} phi)^T / (1 + phi^T A^{-1} phi)

    float64: thousands of rank-1 updates would accumulate round-off in float32.
    """

    def __init__(self, n_arms: int, dim: int, prior: float) -> None:
        self.prior = prior
        self.inverse = np.repeat(np.eye(dim)[None] / prior, n_arms, axis=0)  # A_a^{-1}: (arms, d, d)

    def add(self, arm: int, phi: np.ndarray) -> None:
        u = self.inverse[arm] @ phi
        self.inverse[arm] -= np.outer(u, u) / (1.0 + phi @ u)

    def rebuild(self, features: np.ndarray, arms: np.ndarray) -> None:
        """Every A_a from scratch, from the given rounds (their features under a new network)."""
        eye = self.prior * np.eye(features.shape[1])
        for arm in range(len(self.inverse)):
            phi = features[arms == arm]
            self.inverse[arm] = np.linalg.inv(eye + phi.T @ phi)

    def width(self, features: np.ndarray) -> np.ndarray:
        """sqrt(phi^T A_a^{-1} phi) for every context (rows) and arm (columns)."""
        quadratic = ((features @ self.inverse) * features).sum(axis=2).T  # (arms, n, d) -> (n, arms)
        return np.sqrt(np.maximum(quadratic, 0.0))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"inverse": self.inverse.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state["inverse"].shape != self.inverse.shape:
            raise ValueError(f"precision matrices of shape {state['inverse'].shape}, expected {self.inverse.shape}")
        np.copyto(self.inverse, state["inverse"])


@dataclass
class NeuralLinUCBConfig(ReplayConfig):
    reward_model: str = bounded("softmax", choices=REWARD_MODELS)
    alpha: float = bounded(0.1, ge=0, help="exploration: how many standard deviations of optimism")
    prior: float = bounded(1.0, gt=0, help="lambda: the prior precision (ridge) of each arm's regression")
    refresh_every: int = bounded(500, ge=1, help="rounds between new features (and rebuilding A_a on them)")


class NeuralLinUCBBandit(Agent):
    """The network f predicts each arm's reward (trained as in EpsilonGreedyBandit). Its last hidden
    layer gives features phi(x), in which its last layer is linear: z_a(x) = w_a . phi(x) + c_a. A
    Bayesian linear regression of each arm's weights w_a on the rounds it was played gives the width
    of a confidence interval around the prediction, and the agent plays the highest upper bound:

        a = argmax_a  f_a(x) + alpha sqrt(phi(x)^T A_a^{-1} phi(x))

    (NeuralUCB (Zhou et al. 2020) with the gradient restricted to the last layer -- the gradient of
    z_a with respect to it is phi(x) in arm a's block, so its precision matrix splits per arm: LinUCB
    (Li et al. 2010) on learnt features.) An arm rarely played on contexts like x has a wide interval
    there, so it gets tried: the exploration is directed, not random, and fades where the arms are known.

    The widths use a frozen copy of the network's features, replaced every ``refresh_every`` rounds,
    when every A_a is rebuilt from the replay's rounds under the new features; in between, each round
    is an exact rank-1 update. The greedy action is argmax_a f_a(x)."""

    Config = NeuralLinUCBConfig
    counters = ("updates", "rounds", "update_credit")

    def __init__(self, config: NeuralLinUCBConfig, spec: EnvSpec, model: ModelConfig,
                 rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        if model.notation is not None:
            raise ConfigError("model.notation: linucb_bandit reads its network's last hidden layer (model.hidden), "
                              "which a notation program does not expose; use model.hidden, or another bandit agent")
        self.net = build_net(spec.obs_dim, spec.n_actions, model, rng)
        self.optimizer = make_optimizer(config.optim, self.net, lambda: self.rounds)
        self.feature_net = self.net.clone()  # frozen between refreshes
        self.replay = BanditReplay(config.replay_size, (spec.obs_dim,))
        self.image_shape = image_shape(spec, config)  # None: no augmentation
        hidden = model.hidden[-1] if model.hidden else spec.obs_dim
        self.precisions = ArmPrecisions(spec.n_actions, hidden + 1, config.prior)
        self.rounds = 0
        self.update_credit = 0.0

    def features(self, obs: np.ndarray) -> np.ndarray:
        """phi(x): the frozen network's last hidden layer, plus a constant 1 (for the output's bias)."""
        h = obs
        for layer in self.feature_net.layers[:-1]:
            h = layer.infer(h)
        return np.concatenate([h, np.ones((len(h), 1), h.dtype)], axis=1, dtype=np.float64)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        x = flat(obs)
        outputs = self.net.infer(x)
        if not explore:
            return outputs.argmax(axis=1)  # softmax is monotone: argmax f = argmax z
        reward = predicted_rewards(outputs, self.config.reward_model)
        return (reward + self.config.alpha * self.precisions.width(self.features(x))).argmax(axis=1)

    def observe(self, step: Step) -> dict[str, float]:
        obs = flat(step.obs)
        self.replay.add(obs, step.action, step.reward)
        phi = self.features(obs)
        for i, arm in enumerate(step.action):
            self.precisions.add(int(arm), phi[i])
        before, self.rounds = self.rounds, self.rounds + len(step.action)
        self.update_credit += self.config.updates_per_round * len(step.action)

        losses = reward_model_updates(self)
        if self.rounds // self.config.refresh_every > before // self.config.refresh_every:
            self.refresh()
        metrics = {}
        if losses:
            metrics["loss/reward_mse"] = float(np.mean(losses))
        return metrics

    def refresh(self) -> None:
        """New features from the trained network, and every A_a rebuilt on the replay under them."""
        self.feature_net.copy_from(self.net)
        n = self.replay.size
        phi = np.concatenate([self.features(self.replay.obs[i:min(i + 4096, n)]) for i in range(0, n, 4096)])
        self.precisions.rebuild(phi, self.replay.action[:n])

    def components(self) -> dict:
        return {"rng": self.rng, "net": self.net, "optimizer": self.optimizer, "feature_net": self.feature_net,
                "replay": self.replay, "precisions": self.precisions}
