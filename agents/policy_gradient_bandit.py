"""REINFORCE with a baseline as a contextual bandit: a softmax policy pi(a|x), sampled to act and pushed
along (r - b) grad log pi(a|x) -- with one step per episode the return is the reward. The policy
maths (sampling, log-probabilities, entropy and their gradients) is rlscratch/policy.py's, shared with
A2C and PPO; the replay and augmentation are rlscratch/bandit.py's.

    per round (a batch of contexts, one per parallel env):
        a ~ pi(.|x);  store (x, a, r, mu = pi(a|x)) in the replay
        updates_per_round times (fractions accumulate):
            sample a minibatch of rounds;  rho = min(pi(a|x) / mu, max_ratio)
            w = rho (r - b(x))     (b: a learned extra output, or a running mean of the rewards)
            L = -mean w log pi(a|x) - entropy_coef * mean H(pi(.|x))   [+ value_coef * mean rho (b(x) - r)^2]
            one optimizer step
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.bandit import BanditReplay, ReplayConfig, build_net, flat, image_shape, replayed_obs
from rlscratch.config import ModelConfig, bounded
from rlscratch.optim_config import make_optimizer
from rlscratch.policy import entropy, policy_gradient_loss, sample_categorical


def reinforce_loss(logits: np.ndarray, actions: np.ndarray, weights: np.ndarray,
                   entropy_coef: float = 0.0) -> tuple[float, np.ndarray]:
    """Loss and dL/dlogits of one minibatch of rounds, from the shared policy maths (rlscratch/policy.py):

        L = 1/N sum_n [ -w_n log pi(a_n|x_n) - beta H(pi(.|x_n)) ],   w_n = rho_n (r_n - b) held constant
        dL/dz = policy_gradient_loss's  w_n (pi_n - onehot(a_n)) / N   -  beta dH/dz
    """
    loss, dlogits = policy_gradient_loss(logits, actions, weights)
    if entropy_coef:
        mean_entropy, dentropy = entropy(logits)
        loss -= entropy_coef * mean_entropy
        dlogits -= entropy_coef * dentropy
    return loss, dlogits


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
        self.optimizer = make_optimizer(config.optim, self.policy, lambda: self.rounds)
        self.replay = BanditReplay(config.replay_size, (spec.obs_dim,))
        self.image_shape = image_shape(spec, config)  # None: no augmentation
        self.rounds = 0
        self.update_credit = 0.0
        self.baseline_mean = 0.0

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        logits = self.policy.infer(flat(obs))[:, :self.n_arms]
        if not explore:
            return logits.argmax(axis=1)
        return sample_categorical(logits.astype(np.float64), self.rng)  # a ~ pi, in float64

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
            x = replayed_obs(self.replay, idx, self.image_shape, self.config.augment_shift, self.rng)
            a, r = self.replay.action[idx], self.replay.reward[idx]
            out = self.policy(x)
            logits = out[:, :self.n_arms]
            p = nn.softmax(logits)
            ratio = np.minimum(p[np.arange(len(a)), a] / self.replay.prob[idx], self.config.max_ratio)
            if self.config.baseline == "value":
                value = out[:, self.n_arms]
                # b(x) regresses E_{a ~ pi}[r | x] (the ratio reweights the replayed rounds to pi); in
                # the policy loss it is a constant that only centres the reward
                value_loss, dvalue = nn.mse(value, r, weights=ratio)
                loss, dlogits = reinforce_loss(logits, a, ratio * (r - value), self.config.entropy_coef)
                dout = np.concatenate([dlogits, self.config.value_coef * dvalue[:, None]], axis=1)
                metrics["loss/value"].append(value_loss)
            else:
                loss, dout = reinforce_loss(logits, a, ratio * (r - self.baseline_mean), self.config.entropy_coef)
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
