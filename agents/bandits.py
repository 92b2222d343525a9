"""Contextual-bandit agents: every episode is one round -- see a context x, pull an arm a, get a reward r.

    x --[MLP]--> one output per arm --(explore)--> a --env--> r --> replay (x, a, r) --> minibatch updates

Three ways to explore, on the same network (the config's ``model:`` section):

* ``EpsilonGreedyBandit`` -- the network regresses each arm's expected reward, f_a(x) ~ E[r | x, a],
  trained by MSE on the *taken* arm's output only (the other arms' rewards were never seen). It
  plays argmax_a f_a(x), and a uniformly random arm with probability epsilon (decaying).
* ``PolicyGradientBandit`` -- a softmax policy pi(a|x) trained by REINFORCE with a baseline. With one
  step per episode the return is the reward, so the gradient is (r - b) grad log pi(a|x).
* ``NeuralLinUCBBandit`` -- the regression network of the first, with *directed* exploration: an
  upper confidence bound from a per-arm Bayesian linear regression on the network's last hidden
  features phi(x). It tries an arm because its reward is uncertain for *this* x, not at random.

All three learn from minibatches drawn from a replay of the most recent rounds (``replay_size``),
with ``updates_per_round`` gradient steps per round, and act on a batch of contexts at once (one per
parallel env). The greedy policy (``explore=False``) is the argmax of predicted reward or of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.config import ModelConfig, bounded
from rlscratch.models import mlp


# -- shared parts -------------------------------------------------------------------------------------
class BanditReplay:
    """A ring buffer of the last ``capacity`` rounds (x, a, r), plus the probability mu(a|x) with which
    the acting policy chose a (the policy gradient needs it to correct for replaying old rounds)."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...]) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.prob = np.ones(capacity, dtype=np.float32)
        self.pos = 0  # where the next round goes
        self.size = 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, prob: np.ndarray | None = None) -> None:
        for i in range(len(action)):
            self.obs[self.pos] = obs[i]
            self.action[self.pos] = action[i]
            self.reward[self.pos] = reward[i]
            self.prob[self.pos] = 1.0 if prob is None else prob[i]
            self.pos = (self.pos + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of a uniform minibatch (with replacement: early on there are fewer rounds than that)."""
        return rng.integers(0, self.size, batch_size)

    def state_dict(self) -> dict[str, np.ndarray]:
        n = self.size  # only the filled part: a young run's checkpoint stays small
        return {"obs": self.obs[:n].copy(), "action": self.action[:n].copy(), "reward": self.reward[:n].copy(),
                "prob": self.prob[:n].copy(), "pos": np.array(self.pos), "size": np.array(n)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        n = int(state["size"])
        if n > self.capacity or state["obs"].shape[1:] != self.obs.shape[1:]:
            raise ValueError(f"replay of {n} rounds of shape {state['obs'].shape[1:]} does not fit "
                             f"capacity {self.capacity}, shape {self.obs.shape[1:]}")
        for key in ("obs", "action", "reward", "prob"):
            getattr(self, key)[:n] = state[key]
        self.pos, self.size = int(state["pos"]), n


@dataclass
class ReplayConfig:
    """Hyperparameters every bandit agent here shares (each agent's Config extends it)."""

    lr: float = bounded(1e-3, gt=0)
    batch_size: int = bounded(64, ge=1)
    replay_size: int = bounded(20_000, ge=1, help="the most recent rounds kept to learn from")
    updates_per_round: float = bounded(1.0, gt=0, help="gradient steps per round (fractions accumulate)")
    initial_value: float | None = None  # every arm's initial predicted reward (optimism when high); None: random


def build_net(n_in: int, n_out: int, model: ModelConfig, rng: np.random.Generator,
              output_gain: float | None = None, initial_output: float | None = None) -> nn.Sequential:
    """obs -> hidden... -> one output per arm. The first layer's input is the image itself, whose
    gradient nobody needs: skipping it saves a third of that (largest) layer's backward pass.
    ``initial_output`` starts every output near that value (small last-layer weights, that bias)."""
    if initial_output is not None:
        output_gain = 0.01
    net = mlp(n_in, n_out, model, rng, output_gain=output_gain)
    net.layers[0].input_grad = False
    if initial_output is not None:
        net.layers[-1].params["b"][:] = initial_output
    return net


def flat(obs: np.ndarray) -> np.ndarray:
    """(N, *obs_shape) -> (N, obs_dim): the MLP takes an image as a vector of pixels."""
    return obs.reshape(len(obs), -1)


def regression_step(net: nn.Module, optimizer: nn.optim.Optimizer, obs: np.ndarray, action: np.ndarray,
                    reward: np.ndarray) -> float:
    """One gradient step on L = mean_n (f_{a_n}(x_n) - r_n)^2: only the taken arm's output has a target,
    so the other outputs get zero gradient."""
    pred = net(obs)
    rows = np.arange(len(action))
    loss, dpred_taken = nn.mse(pred[rows, action], reward)
    dpred = np.zeros_like(pred)
    dpred[rows, action] = dpred_taken
    net.zero_grad()
    net.backward(dpred)
    optimizer.step()
    return loss


# -- (a) epsilon-greedy on a reward regression --------------------------------------------------------
@dataclass
class EpsilonGreedyConfig(ReplayConfig):
    epsilon_start: float = bounded(0.1, ge=0, le=1)
    epsilon_end: float = bounded(0.0, ge=0, le=1)
    epsilon_decay_rounds: int = bounded(10_000, ge=1, help="rounds to go linearly from start to end")


class EpsilonGreedyBandit(Agent):
    """f_a(x) ~ E[r | x, a] by regression on replayed rounds; play argmax_a f_a(x), or with probability

        epsilon_t = start + (end - start) * min(t / decay_rounds, 1)

    a uniformly random arm."""

    Config = EpsilonGreedyConfig
    counters = ("updates", "rounds", "update_credit")

    def __init__(self, config: EpsilonGreedyConfig, spec: EnvSpec, model: ModelConfig,
                 rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.net = build_net(spec.obs_dim, spec.n_actions, model, rng, initial_output=config.initial_value)
        self.optimizer = nn.Adam(self.net, lr=config.lr)
        self.replay = BanditReplay(config.replay_size, (spec.obs_dim,))
        self.rounds = 0  # rounds played (summed over parallel envs)
        self.update_credit = 0.0  # gradient steps owed: updates_per_round per round, paid in whole steps

    @property
    def epsilon(self) -> float:
        c = self.config
        return c.epsilon_start + (c.epsilon_end - c.epsilon_start) * min(self.rounds / c.epsilon_decay_rounds, 1.0)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        greedy = self.net.infer(flat(obs)).argmax(axis=1)
        if not explore:
            return greedy
        random_arm = self.rng.integers(0, self.spec.n_actions, len(obs))
        return np.where(self.rng.random(len(obs)) < self.epsilon, random_arm, greedy)

    def observe(self, step: Step) -> dict[str, float]:
        self.replay.add(flat(step.obs), step.action, step.reward)
        self.rounds += len(step.action)
        self.update_credit += self.config.updates_per_round * len(step.action)
        losses = []
        while self.update_credit >= 1.0:
            idx = self.replay.sample(self.config.batch_size, self.rng)
            losses.append(regression_step(self.net, self.optimizer, self.replay.obs[idx], self.replay.action[idx],
                                          self.replay.reward[idx]))
            self.update_credit -= 1.0
            self.updates += 1
        metrics = {"train/epsilon": self.epsilon}
        if losses:
            metrics["loss/reward_mse"] = float(np.mean(losses))
        return metrics

    def components(self) -> dict:
        return {"rng": self.rng, "net": self.net, "optimizer": self.optimizer, "replay": self.replay}


# -- (b) REINFORCE with a baseline --------------------------------------------------------------------
def policy_gradient_loss(logits: np.ndarray, actions: np.ndarray, weights: np.ndarray,
                         entropy_coef: float = 0.0) -> tuple[float, np.ndarray]:
    """Loss and dL/dlogits of one minibatch of bandit rounds, by hand.

        L = 1/N sum_n [ -w_n log pi(a_n|x_n) - beta H(pi(.|x_n)) ],   pi = softmax(z),  H = -sum_k pi_k log pi_k

    with w_n = rho_n (r_n - b) held constant. The gradient, per sample, in the fused form:

        d(-log pi(a))/dz = p - onehot(a)            (softmax Jacobian and the log's 1/p cancel)
        d(-H)/dz_k       = p_k (log p_k + H)        (dH/dz_k = -p_k (log p_k + H))
        dL/dz_n          = [ w_n (p_n - onehot(a_n)) + beta p_n (log p_n + H_n) ] / N
    """
    n = len(actions)
    rows = np.arange(n)
    logp = nn.log_softmax(logits)
    p = np.exp(logp)
    entropy = -(p * logp).sum(axis=1)
    loss = float(np.mean(-weights * logp[rows, actions] - entropy_coef * entropy))
    grad = p.copy()
    grad[rows, actions] -= 1.0
    grad *= weights[:, None]
    if entropy_coef:
        grad += entropy_coef * p * (logp + entropy[:, None])
    grad /= n
    return loss, grad.astype(logits.dtype, copy=False)


@dataclass
class PolicyGradientConfig(ReplayConfig):
    baseline: str = bounded("value", choices=("value", "mean"),
                            help="value: a learned b(x) (an extra output); mean: a running mean of the reward")
    value_coef: float = bounded(0.5, ge=0, help="weight of the value output's MSE (baseline: value)")
    baseline_rate: float = bounded(0.01, gt=0, le=1, help="b <- b + rate (r - b) per round (baseline: mean)")
    entropy_coef: float = bounded(0.0, ge=0)
    max_ratio: float = bounded(2.0, gt=0, help="clip of the importance ratio pi/mu for replayed rounds")


class PolicyGradientBandit(Agent):
    """REINFORCE for a one-step episode: the return is the reward, and

        grad J = E_{a ~ pi}[ (r - b) grad log pi(a|x) ]

    The baseline b lowers the variance and leaves the expectation alone, since
    E_{a ~ pi}[grad log pi(a|x)] = 0 for any b that does not depend on a. ``baseline: value`` learns
    b(x) ~ E_{a ~ pi}[r | x] as one more output of the network (regressed on the rewards): an image the
    policy already gets right then teaches little, and a right guess on a hard one a lot -- a single
    running mean (``baseline: mean``) would weigh every right guess by 1 - (overall accuracy).

    Rounds replayed from the buffer were chosen by an older policy mu, so each is reweighted by the
    importance ratio rho = pi(a|x) / mu(a|x), clipped at ``max_ratio`` to bound the variance:
    E_{a ~ mu}[rho (r - b) grad log pi] = E_{a ~ pi}[(r - b) grad log pi]. The agent explores by
    sampling from pi; the greedy action is argmax_a pi(a|x)."""

    Config = PolicyGradientConfig
    counters = ("updates", "rounds", "update_credit", "baseline_mean")

    def __init__(self, config: PolicyGradientConfig, spec: EnvSpec, model: ModelConfig,
                 rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.n_arms = spec.n_actions
        outputs = self.n_arms + (config.baseline == "value")  # logits, then b(x)
        # Small last-layer weights: the first policy is near uniform, so every arm gets tried.
        self.policy = build_net(spec.obs_dim, outputs, model, rng, output_gain=0.01)
        self.optimizer = nn.Adam(self.policy, lr=config.lr)
        self.replay = BanditReplay(config.replay_size, (spec.obs_dim,))
        self.rounds = 0
        self.update_credit = 0.0
        self.baseline_mean = 0.0

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        logits = self.policy.infer(flat(obs))[:, :self.n_arms]
        if not explore:
            return logits.argmax(axis=1)
        probs = nn.softmax(logits.astype(np.float64))
        # a ~ pi: the first arm whose cumulative probability passes a uniform draw
        cumulative = probs.cumsum(axis=1)
        return (cumulative > self.rng.random((len(probs), 1)) * cumulative[:, -1:]).argmax(axis=1)

    def observe(self, step: Step) -> dict[str, float]:
        obs = flat(step.obs)
        # mu(a|x): the policy has not changed since it acted, so recomputing it gives the behaviour
        # probability exactly (and nothing has to be carried from act to observe).
        rows = np.arange(len(step.action))
        mu = nn.softmax(self.policy.infer(obs)[:, :self.n_arms])[rows, step.action]
        self.replay.add(obs, step.action, step.reward, mu)
        self.rounds += len(step.action)
        self.update_credit += self.config.updates_per_round * len(step.action)

        metrics: dict[str, list[float]] = {"loss/policy": [], "loss/value": [], "train/entropy": [],
                                           "train/mean_ratio": []}
        while self.update_credit >= 1.0:
            idx = self.replay.sample(self.config.batch_size, self.rng)
            x, a, r = self.replay.obs[idx], self.replay.action[idx], self.replay.reward[idx]
            out = self.policy(x)
            logits = out[:, :self.n_arms]
            p = nn.softmax(logits)
            ratio = np.minimum(p[np.arange(len(a)), a] / self.replay.prob[idx], self.config.max_ratio)
            if self.config.baseline == "value":
                value = out[:, self.n_arms]
                b = value  # held constant in the policy loss: it only centres the reward
                # b(x) regresses E_{a ~ pi}[r | x]: the ratio reweights the replayed rounds to pi
                value_loss, dvalue = nn.mse(value, r, weights=ratio)
                metrics["loss/value"].append(value_loss)
            else:
                b = self.baseline_mean
            loss, dlogits = policy_gradient_loss(logits, a, ratio * (r - b), self.config.entropy_coef)
            dout = dlogits if self.config.baseline != "value" else \
                np.concatenate([dlogits, self.config.value_coef * dvalue[:, None]], axis=1)
            self.policy.zero_grad()
            self.policy.backward(dout)
            self.optimizer.step()
            self.update_credit -= 1.0
            self.updates += 1
            metrics["loss/policy"].append(loss)
            metrics["train/entropy"].append(float(-(p * np.log(p + 1e-12)).sum(axis=1).mean()))
            metrics["train/mean_ratio"].append(float(ratio.mean()))

        # The running mean follows the rewards as they come (after the update: b never includes the
        # reward it is subtracted from).
        for reward in step.reward:
            self.baseline_mean += self.config.baseline_rate * (float(reward) - self.baseline_mean)
        return {key: float(np.mean(values)) for key, values in metrics.items() if values}

    def components(self) -> dict:
        return {"rng": self.rng, "policy": self.policy, "optimizer": self.optimizer, "replay": self.replay}


# -- (c) Neural-LinUCB: upper confidence bounds on the last hidden features ----------------------------
class ArmRegressions:
    """One Bayesian linear regression per arm on features phi (Gaussian prior N(0, I / lambda)):

        A_a = lambda I + sum_{rounds where a was played} phi phi^T,    b_a = sum r phi,
        theta_a = A_a^{-1} b_a  (posterior mean = ridge estimate),   var(theta_a . phi) ~ phi^T A_a^{-1} phi

    A_a is kept as its inverse and updated by Sherman-Morrison, so adding a round costs O(d^2), not O(d^3):

        (A + phi phi^T)^{-1} = A^{-1} - (A^{-1} phi)(A^{-1} phi)^T / (1 + phi^T A^{-1} phi)

    Everything is float64: thousands of rank-1 updates accumulate round-off in float32.
    """

    def __init__(self, n_arms: int, dim: int, prior: float) -> None:
        self.prior = prior
        self.inverse = np.repeat(np.eye(dim)[None] / prior, n_arms, axis=0)  # A_a^{-1}: (arms, d, d)
        self.b = np.zeros((n_arms, dim))
        self.theta = np.zeros((n_arms, dim))

    def add(self, arm: int, phi: np.ndarray, reward: float) -> None:
        u = self.inverse[arm] @ phi
        self.inverse[arm] -= np.outer(u, u) / (1.0 + phi @ u)
        self.b[arm] += reward * phi
        self.theta[arm] = self.inverse[arm] @ self.b[arm]

    def rebuild(self, features: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Refit every arm from scratch on the given rounds (their features under a new network)."""
        eye = self.prior * np.eye(features.shape[1])
        for arm in range(len(self.inverse)):
            phi, r = features[arms == arm], rewards[arms == arm]
            self.inverse[arm] = np.linalg.inv(eye + phi.T @ phi)
            self.b[arm] = r @ phi
            self.theta[arm] = self.inverse[arm] @ self.b[arm]

    def mean(self, features: np.ndarray) -> np.ndarray:
        """theta_a . phi for every context (rows) and arm (columns)."""
        return features @ self.theta.T

    def width(self, features: np.ndarray) -> np.ndarray:
        """sqrt(phi^T A_a^{-1} phi) for every context (rows) and arm (columns)."""
        quadratic = ((features @ self.inverse) * features).sum(axis=2).T  # (arms, n, d) -> (n, arms)
        return np.sqrt(np.maximum(quadratic, 0.0))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"inverse": self.inverse.copy(), "b": self.b.copy(), "theta": self.theta.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for key in ("inverse", "b", "theta"):
            if state[key].shape != getattr(self, key).shape:
                raise ValueError(f"arm regressions: '{key}' has shape {state[key].shape}, "
                                 f"expected {getattr(self, key).shape}")
            np.copyto(getattr(self, key), state[key])


@dataclass
class NeuralLinUCBConfig(ReplayConfig):
    alpha: float = bounded(0.1, ge=0, help="exploration: how many posterior standard deviations of optimism")
    prior: float = bounded(1.0, gt=0, help="lambda: the ridge / prior precision of each arm's regression")
    refresh_every: int = bounded(500, ge=1, help="rounds between new features (and refitting the arms on them)")


class NeuralLinUCBBandit(Agent):
    """Neural-Linear LinUCB (Riquelme et al. 2018; Li et al. 2010): a network learns a representation,
    and an exact Bayesian linear regression per arm on its last hidden layer phi(x) gives both the
    reward estimate and its uncertainty. The agent plays the arm with the highest upper bound,

        a = argmax_a  theta_a . phi(x) + alpha sqrt(phi(x)^T A_a^{-1} phi(x)),

    so a rarely played arm, or a context unlike those an arm was played on, gets tried: the
    exploration is directed, not random. The network is trained on replayed rounds exactly as in
    EpsilonGreedyBandit (it is the representation learner); the arms' regressions use a frozen copy
    of it, replaced every ``refresh_every`` rounds, when every arm is refit on the replay's rounds
    under the new features. Between refreshes the features are fixed, so each new round is an exact
    rank-1 update. (Early on, before the network has learnt much, phi is a random ReLU projection of
    the pixels and the regressions are a kernel method -- which learns from few rounds far better than
    a few SGD steps do.) The greedy action is argmax_a theta_a . phi(x)."""

    Config = NeuralLinUCBConfig
    counters = ("updates", "rounds", "update_credit")

    def __init__(self, config: NeuralLinUCBConfig, spec: EnvSpec, model: ModelConfig,
                 rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.net = build_net(spec.obs_dim, spec.n_actions, model, rng, initial_output=config.initial_value)
        self.optimizer = nn.Adam(self.net, lr=config.lr)
        self.feature_net = self.net.clone()  # frozen between refreshes
        self.replay = BanditReplay(config.replay_size, (spec.obs_dim,))
        hidden = model.hidden[-1] if model.hidden else spec.obs_dim
        self.arms = ArmRegressions(spec.n_actions, hidden + 1, config.prior)
        self.rounds = 0
        self.update_credit = 0.0

    def features(self, obs: np.ndarray) -> np.ndarray:
        """phi(x): the frozen network's last hidden layer, plus a constant 1 (each arm's intercept)."""
        h = obs
        for layer in self.feature_net.layers[:-1]:
            h = layer.infer(h)
        return np.concatenate([h, np.ones((len(h), 1), h.dtype)], axis=1, dtype=np.float64)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        phi = self.features(flat(obs))
        if not explore:
            return self.arms.mean(phi).argmax(axis=1)
        return (self.arms.mean(phi) + self.config.alpha * self.arms.width(phi)).argmax(axis=1)

    def observe(self, step: Step) -> dict[str, float]:
        obs = flat(step.obs)
        self.replay.add(obs, step.action, step.reward)
        phi = self.features(obs)
        for i, arm in enumerate(step.action):
            self.arms.add(int(arm), phi[i], float(step.reward[i]))
        before, self.rounds = self.rounds, self.rounds + len(step.action)
        self.update_credit += self.config.updates_per_round * len(step.action)

        losses = []
        while self.update_credit >= 1.0:
            idx = self.replay.sample(self.config.batch_size, self.rng)
            losses.append(regression_step(self.net, self.optimizer, self.replay.obs[idx], self.replay.action[idx],
                                          self.replay.reward[idx]))
            self.update_credit -= 1.0
            self.updates += 1
        if self.rounds // self.config.refresh_every > before // self.config.refresh_every:
            self.refresh()
        metrics = {}
        if losses:
            metrics["loss/reward_mse"] = float(np.mean(losses))
        return metrics

    def refresh(self) -> None:
        """New features from the trained network, and every arm refit on the replay under them."""
        self.feature_net.copy_from(self.net)
        n = self.replay.size
        phi = np.concatenate([self.features(self.replay.obs[i:min(i + 4096, n)]) for i in range(0, n, 4096)])
        self.arms.rebuild(phi, self.replay.action[:n], self.replay.reward[:n])

    def components(self) -> dict:
        return {"rng": self.rng, "net": self.net, "optimizer": self.optimizer, "feature_net": self.feature_net,
                "replay": self.replay, "arms": self.arms}
