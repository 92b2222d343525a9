"""A2C: synchronous advantage actor-critic (Mnih et al. 2016), with GAE(lambda) as an option.

N parallel envs each take ``n_steps`` steps with the current stochastic policy; the rollout buffer
(rlscratch.rollout) holds those T x N transitions. Then one gradient step on all of them:

    V_{t+1} * gamma + r_t - V_t -> TD_t                    the TD error; V_{t+1} = 0 past an episode end
    TD_t + gamma * lam * A_{t+1} * (1 - d_t) -> A_t        GAE; lam = 1: A_t = R_t - V_t, R_t the n-step return
    O_t --[clip_grad(Policy)]-> pi_t  $  A_t * log(pi_t)   ascend A_t log pi(a_t | s_t), plus an entropy bonus
    O_t --[clip_grad(Value)]-> V_t  =>  A_t + V_t          regress V on the return R_t = A_t + V_t

(docs/notation.md: ``pi $ E`` maximises E with the gradient flowing only through pi; ``=>`` is a mean
squared error to a constant target; ``clip_grad(F)`` scales F's gradient to norm <= max_grad_norm.)
As one loss to descend, averaged over the B = T*N transitions:

    L = -mean_t A_t log pi(a_t|s_t)  -  ent_coef * mean_t H(pi(.|s_t))  +  vf_coef * mean_t (V_t - R_t)^2

A_t and R_t are numbers here (computed from the values before the step): no gradient flows through
them. The gradients with respect to the policy's logits z are written out below (``policy_gradient_loss``,
``entropy``) and checked by finite differences in tests/test_actor_critic.py; the networks then carry
them back through their layers by hand like any other loss.

Time limits: a truncated episode's last reward gets gamma * V(final observation) added (the future it
was cut from still had value); a terminated one's does not. rlscratch.rollout.RolloutBuffer does that
fold, rlscratch.returns does the recursions above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.config import ModelConfig, bounded
from rlscratch.models import network
from rlscratch.nn.init import orthogonal
from rlscratch.rollout import RolloutBuffer


# -- the policy's maths: categorical distributions over logits z ----------------------------------
def sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """a ~ softmax(z), one per row: the first action whose cumulative probability passes a uniform
    draw (scaled by the row's total, so rounding can never leave a row without an action)."""
    cdf = np.cumsum(nn.softmax(logits), axis=1)
    u = rng.random((len(logits), 1)) * cdf[:, -1:]
    return (cdf > u).argmax(axis=1)


def log_prob(logits: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log pi(a|s) for each row's action."""
    return nn.log_softmax(logits)[np.arange(len(actions)), actions]


def policy_gradient_loss(logits: np.ndarray, actions: np.ndarray, advantages: np.ndarray
                         ) -> tuple[float, np.ndarray]:
    """L = -1/B sum_t A_t log pi(a_t|s_t), and dL/dz.

    log pi(a|s) = z_a - logsumexp(z), so  d log pi(a|s) / dz = onehot(a) - pi  and
        dL/dz_t = A_t (pi_t - onehot(a_t)) / B
    """
    B = len(actions)
    logp = nn.log_softmax(logits)
    rows = np.arange(B)
    advantages = advantages.astype(logits.dtype, copy=False)
    loss = -float(np.dot(advantages, logp[rows, actions])) / B
    dlogits = np.exp(logp)  # pi
    dlogits[rows, actions] -= 1.0  # pi - onehot(a)
    dlogits *= (advantages / B)[:, None]
    return loss, dlogits


def entropy(logits: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean entropy H = -1/B sum_t sum_a pi log pi, and dH/dz.

    With d pi_a / dz_j = pi_a ([a = j] - pi_j):
        dH_t/dz_j = -sum_a (log pi_a + 1) pi_a ([a = j] - pi_j) = -pi_j (log pi_j + H_t)
    """
    logp = nn.log_softmax(logits)
    pi = np.exp(logp)
    per_row = -(pi * logp).sum(axis=1)  # H_t
    dH = -pi * (logp + per_row[:, None])
    dH /= len(logits)
    return float(per_row.mean()), dH


# -- the networks ------------------------------------------------------------------------------------
class ActorCritic(nn.Module):
    """Policy logits and state value for a batch of observations, as two networks or one.

    shared=False:  Policy: obs -> logits (n_actions)   and   Value: obs -> V (1)   (the notes' picture)
    shared=True:   Net: obs -> [logits | V]              one trunk serves both losses

    forward(obs) -> (logits (B, A), values (B,)), keeping what backward needs;
    backward((dL/dlogits, dL/dvalues)) carries both back (into the shared trunk, they add).

    ``orthogonal_init``: SB3/CleanRL's initialisation -- orthogonal weights, zero biases, gain sqrt(2) in
    the hidden layers, 0.01 for the policy head (a near-uniform first policy) and 1 for the value head.
    Otherwise the hidden layers follow the config's ``model.init``.
    """

    def __init__(self, obs_dim: int | gym.Space, n_actions: int, model: ModelConfig, rng: np.random.Generator,
                 shared: bool = False, orthogonal_init: bool = True) -> None:
        super().__init__()
        self.n_actions, self.shared = n_actions, shared
        if shared:
            self.net = network(obs_dim, n_actions + 1, model, rng, output_gain=1.0)
            nets = [self.net]
        else:
            self.policy = network(obs_dim, n_actions, model, rng, output_gain=0.01)
            self.value_net = network(obs_dim, 1, model, rng, output_gain=1.0)
            nets = [self.policy, self.value_net]
        for net in nets:
            # (A network written in model.notation keeps its own initialisation and layout.)
            linears = [m for m in net.layers if isinstance(m, nn.Linear)] if isinstance(net, nn.Sequential) else []
            if linears and linears[0] is net.layers[0]:  # (models.network already did it otherwise)
                linears[0].input_grad = False  # its input is the observation: no gradient needed
            if shared and linears:
                linears[-1].params["W"][:n_actions] *= 0.01  # orthogonal rows: logits at gain 0.01, V at 1
            for layer in linears[:-1] if orthogonal_init else []:
                layer.params["W"][...] = orthogonal(layer.params["W"].shape, rng, gain=math.sqrt(2.0))
                layer.params["b"][...] = 0.0
        self.flatten()  # one parameter vector for both (one optimizer); each network a slice of it

    @staticmethod
    def _batch(obs: np.ndarray) -> np.ndarray:
        return obs.reshape(len(obs), -1)

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = self._batch(obs)
        if self.shared:
            out = self.net(obs)
            return out[:, :self.n_actions], out[:, self.n_actions]
        return self.policy(obs), self.value_net(obs)[:, 0]

    def backward(self, grads: tuple[np.ndarray, np.ndarray]) -> None:
        dlogits, dvalues = grads
        if self.shared:
            self.net.backward(np.concatenate([dlogits, dvalues[:, None]], axis=1))
        else:
            self.policy.backward(dlogits)
            self.value_net.backward(dvalues[:, None])

    def infer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = self._batch(obs)
        if self.shared:
            out = self.net.infer(obs)
            return out[:, :self.n_actions], out[:, self.n_actions]
        return self.policy.infer(obs), self.value_net.infer(obs)[:, 0]

    def clip_grad(self, max_norm: float) -> tuple[float, float]:
        """clip_grad(Policy) and clip_grad(Value): each network's gradient scaled to norm <= max_norm
        (shared: the one network's). Returns the norms before clipping, (policy, value)."""
        if self.shared:
            norm = nn.clip_grad_norm(self.net.flat_grads, max_norm)
            return norm, norm
        return (nn.clip_grad_norm(self.policy.flat_grads, max_norm),
                nn.clip_grad_norm(self.value_net.flat_grads, max_norm))

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Only the policy (acting): separate networks skip the value network entirely."""
        if self.shared:
            return self.infer(obs)[0]
        return self.policy.infer(self._batch(obs))

    def value(self, obs: np.ndarray) -> np.ndarray:
        if self.shared:
            return self.infer(obs)[1]
        return self.value_net.infer(self._batch(obs))[:, 0]


def make_optimizer(name: str, net: nn.Module, lr, eps: float, alpha: float) -> nn.optim.Optimizer:
    if name == "rmsprop":
        return nn.RMSprop(net, lr=lr, alpha=alpha, eps=eps)
    return nn.Adam(net, lr=lr, eps=eps)


# -- the agent ---------------------------------------------------------------------------------------
@dataclass
class A2CConfig:
    n_steps: int = bounded(5, ge=1, help="steps per env per rollout; one update per rollout")
    gamma: float = bounded(0.99, ge=0, le=1)
    gae_lambda: float = bounded(1.0, ge=0, le=1, help="1: plain n-step A2C")
    lr: float = bounded(7e-4, gt=0)
    anneal_steps: int = bounded(0, ge=0, help="env steps over which lr decays linearly to 0 (0: constant)")
    optimizer: str = bounded("rmsprop", choices=("rmsprop", "adam"))
    optimizer_eps: float = bounded(1e-5, gt=0)
    rmsprop_alpha: float = bounded(0.99, gt=0, lt=1)
    ent_coef: float = bounded(0.0, ge=0)
    vf_coef: float = bounded(0.5, ge=0)
    max_grad_norm: float = bounded(0.5, gt=0)
    normalize_advantage: bool = False
    reward_scale: float = bounded(1.0, gt=0, help="rewards are multiplied by this (values then live in that scale)")
    shared_network: bool = False
    orthogonal_init: bool = True


class A2C(Agent):
    Config = A2CConfig
    counters = ("updates", "env_steps")

    def __init__(self, config: A2CConfig, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.env_steps = 0
        self.net = ActorCritic(spec.observation_space, spec.n_actions, model, rng, config.shared_network,
                               config.orthogonal_init)
        lr = (nn.optim.linear(config.lr, 0.0, config.anneal_steps) if config.anneal_steps
              else nn.optim.constant(config.lr))
        # The schedule follows env steps, not optimizer steps: lr(env steps so far).
        self.optimizer = make_optimizer(config.optimizer, self.net, lambda _: lr(self.env_steps),
                                        config.optimizer_eps, config.rmsprop_alpha)
        self.buffer = RolloutBuffer(config.n_steps, spec.num_envs, spec.obs_shape, config.gamma,
                                    obs_dtype=spec.observation_space.dtype)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        logits = self.net.logits(obs)  # one batched forward for every env
        if not explore:
            return logits.argmax(axis=1)
        return sample_categorical(logits, self.rng)

    def observe(self, step: Step) -> dict[str, float]:
        final_values = None
        cut = step.truncated & ~step.terminated
        if cut.any():  # a time limit ended these episodes: the value of where they stopped still counts
            final_values = np.zeros(len(cut), dtype=np.float32)
            final_values[cut] = self.net.value(step.next_obs[cut])
        # Scaling the rewards keeps the values near the range a freshly initialised value head outputs
        # (Acrobot's -1 per step adds up to returns of -100).
        self.buffer.add(step.obs, step.action, step.reward * self.config.reward_scale, step.terminated,
                        step.truncated, final_values)
        self.env_steps += len(step.reward)
        if not self.buffer.full:
            return {}
        metrics = self.learn(step.next_obs)
        self.buffer.reset()
        return metrics

    def learn(self, next_obs: np.ndarray) -> dict[str, float]:
        cfg, buf = self.config, self.buffer
        obs, actions = buf.flat(buf.obs), buf.flat(buf.actions)

        # One forward pass over all T*N observations (keeping activations for backward). The
        # parameters have not changed since these actions were taken, so these are the acting values.
        logits, values = self.net(obs)
        buf.values[...] = values.reshape(buf.values.shape)
        # V_{t+1} * gamma + r_t - V_t -> TD_t;  TD_t + gamma * lam * A_{t+1} * (1 - d_t) -> A_t
        buf.compute_advantages(self.net.value(next_obs), cfg.gae_lambda)  # V(s_T) bootstraps the last step
        advantages, returns = buf.flat(buf.advantages), buf.flat(buf.returns)
        if cfg.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        # pi_t $ A_t * log(pi_t): descend -A_t log pi(a_t|s_t) - ent_coef * H(pi(.|s_t))
        policy_loss, dlogits = policy_gradient_loss(logits, actions, advantages)
        mean_entropy, dentropy = entropy(logits)
        dlogits -= cfg.ent_coef * dentropy
        # V_t => A_t + V_t: vf_coef * mean (V_t - R_t)^2
        value_loss, dvalues = nn.mse(values, returns)
        dvalues *= cfg.vf_coef

        self.net.zero_grad()
        self.net.backward((dlogits, dvalues))
        policy_norm, value_norm = self.net.clip_grad(cfg.max_grad_norm)  # clip_grad(Policy), clip_grad(Value)
        lr = self.optimizer.lr
        self.optimizer.step()
        self.updates += 1
        metrics = {"loss/policy": policy_loss, "loss/value": value_loss, "loss/entropy": mean_entropy,
                   "train/grad_norm_policy": policy_norm, "train/grad_norm_value": value_norm, "train/lr": lr}
        if returns.var() > 0:  # 1 - Var(R - V) / Var(R): how much of the returns' spread V explains
            metrics["train/explained_variance"] = 1.0 - float((returns - values).var() / returns.var())
        return metrics

    def components(self) -> dict:
        return {"rng": self.rng, "net": self.net, "optimizer": self.optimizer, "buffer": self.buffer}

