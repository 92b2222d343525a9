"""What A2C and PPO share -- their plumbing, not their algorithms (agents/a2c.py and agents/ppo.py
each read their own update top to bottom):

* ``ActorCritic``: policy parameters z (logits, or a Gaussian's mean and log-std) and a state value for a
  batch of observations, as two networks or one;
* ``OnPolicyConfig``: the hyperparameters both have (rollout length, discount, GAE lambda, optimizer,
  loss coefficients, network layout);
* ``OnPolicyAgent``: acting by sampling the policy (the head -- categorical or diagonal Gaussian,
  rlscratch.policy -- chosen from the action space), filling the rollout buffer (rlscratch.rollout)
  with time limits bootstrapped, and calling the subclass's ``learn`` once per full rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.config import ModelConfig, bounded
from rlscratch.envs.wrappers import RewardNormalizer
from rlscratch.models import network
from rlscratch.nn.init import orthogonal
from rlscratch.optim_config import OptimConfig, Schedule, ScheduleSpec, finish_config, make_optimizer, optim_field
from rlscratch.policy import policy_head
from rlscratch.rollout import RolloutBuffer


class ActorCritic(nn.Module):
    """Policy logits and state value for a batch of observations, as two networks or one.

    shared=False:  Policy: obs -> logits (n_actions)   and   Value: obs -> V (1)   (the notes' picture)
    shared=True:   Net: obs -> [logits | V]              one trunk serves both losses

    forward(obs) -> (logits (B, A), values (B,)), keeping what backward needs;
    backward((dL/dlogits, dL/dvalues)) carries both back (into the shared trunk, they add).

    ``orthogonal_init``: SB3/CleanRL's initialisation -- orthogonal weights, zero biases, gain sqrt(2) in
    the hidden layers, 0.01 for the policy head (a near-uniform first policy) and 1 for the value head.
    Otherwise the hidden layers follow the config's ``model.init``.

    ``log_std`` (a number: continuous actions): the policy network outputs a Gaussian's mean (n_actions
    of them) and this module owns one learnable log-std per action dimension, the same for every state,
    starting at that number. The policy's output is then z = [mean | log_std tiled over the batch], and
    backward sums dL/dz's second half over the batch into the log-std's gradient. Its gradient is
    clipped together with the policy network's.
    """

    def __init__(self, obs_dim: int | gym.Space, n_actions: int, model: ModelConfig, rng: np.random.Generator,
                 shared: bool = False, orthogonal_init: bool = True, log_std: float | None = None) -> None:
        super().__init__()
        self.n_actions, self.shared = n_actions, shared
        self.gaussian = log_std is not None
        if self.gaussian:  # first in the flat parameter vector, right before the policy network's
            self.add_param("log_std", np.full(n_actions, log_std, dtype=np.float32))
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
        # [log_std | policy network]: the slice clip_grad(Policy) measures (separate networks)
        self._n_policy = self.num_params() - (0 if shared else self.value_net.num_params())

    def _policy_z(self, out: np.ndarray) -> np.ndarray:
        if not self.gaussian:
            return out
        z = np.empty((len(out), 2 * self.n_actions), dtype=out.dtype)  # (rows filled in place: this runs every step)
        z[:, :self.n_actions] = out
        z[:, self.n_actions:] = self.params["log_std"]  # the same log-std in every row
        return z

    @staticmethod
    def _batch(obs: np.ndarray) -> np.ndarray:
        return obs.reshape(len(obs), -1)

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = self._batch(obs)
        if self.shared:
            out = self.net(obs)
            return self._policy_z(out[:, :self.n_actions]), out[:, self.n_actions]
        return self._policy_z(self.policy(obs)), self.value_net(obs)[:, 0]

    def backward(self, grads: tuple[np.ndarray, np.ndarray]) -> None:
        dlogits, dvalues = grads
        if self.gaussian:  # z's log-std half: the same parameter in every row, so the rows' gradients add
            self.grads["log_std"] += dlogits[:, self.n_actions:].sum(axis=0)
            dlogits = dlogits[:, :self.n_actions]
        if self.shared:
            self.net.backward(np.concatenate([dlogits, dvalues[:, None]], axis=1))
        else:
            self.policy.backward(dlogits)
            self.value_net.backward(dvalues[:, None])

    def infer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = self._batch(obs)
        if self.shared:
            out = self.net.infer(obs)
            return self._policy_z(out[:, :self.n_actions]), out[:, self.n_actions]
        return self._policy_z(self.policy.infer(obs)), self.value_net.infer(obs)[:, 0]

    def clip_grad(self, max_norm: float) -> tuple[float, float]:
        """clip_grad(Policy) and clip_grad(Value): each network's gradient scaled to norm <= max_norm
        (shared: the one network's); max_norm 0 measures without clipping. Returns the norms before
        clipping, (policy, value)."""
        clip = nn.clip_grad_norm if max_norm > 0 else lambda g, _: float(np.sqrt(np.dot(g, g)))
        if self.shared:
            norm = clip(self.flat_grads, max_norm)  # (the one network's, and the log-std's if any)
            return norm, norm
        return clip(self.flat_grads[:self._n_policy], max_norm), clip(self.value_net.flat_grads, max_norm)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Only the policy (acting): separate networks skip the value network entirely."""
        if self.shared:
            return self.infer(obs)[0]
        return self._policy_z(self.policy.infer(self._batch(obs)))

    def value(self, obs: np.ndarray) -> np.ndarray:
        if self.shared:
            return self.infer(obs)[1]
        return self.value_net.infer(self._batch(obs))[:, 0]


@dataclass
class OnPolicyConfig:
    """The hyperparameters A2C and PPO share (each agent's Config extends it with its own defaults)."""

    n_steps: int = bounded(5, ge=1, help="steps per env per rollout")
    gamma: float = bounded(0.99, ge=0, le=1)
    gae_lambda: float = bounded(1.0, ge=0, le=1, help="1: plain n-step returns")
    optim: OptimConfig = optim_field(name="rmsprop", lr=7e-4, eps=1e-5, alpha=0.99, max_grad_norm=0.5)
    ent_coef: ScheduleSpec = bounded(0.0, ge=0, help="entropy bonus: a number or a schedule")
    vf_coef: float = bounded(0.5, ge=0)
    normalize_advantage: bool = False
    reward_scale: float = bounded(1.0, gt=0, help="rewards are multiplied by this (values then live in that scale)")
    shared_network: bool = False
    orthogonal_init: bool = True
    # Continuous (Box) actions only:
    log_std_init: float = bounded(0.0, help="Box actions: the Gaussian policy's initial log standard deviation")
    squash_actions: bool = bounded(False, help="Box actions: tanh-squash draws into the bounds (default: clip them)")
    normalize_reward: bool = bounded(False, help="rewards / running std of the discounted return, clipped to +-10")

    def __post_init__(self) -> None:
        finish_config(self)  # the agent's optimizer defaults; every schedule states its length


class OnPolicyAgent(Agent):
    """Acting and rollouts for an actor-critic; subclasses write ``learn(next_obs)``, called once the
    rollout buffer holds ``n_steps`` steps of every env (and emptied after it)."""

    counters = ("updates", "env_steps")

    def __init__(self, config: OnPolicyConfig, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.env_steps = 0
        self.head = policy_head(spec.action_space, config.squash_actions)  # categorical or diagonal Gaussian
        self.net = ActorCritic(spec.observation_space, self.head.n_outputs, model, rng, config.shared_network,
                               config.orthogonal_init, config.log_std_init if self.head.continuous else None)
        # Schedules read the clock they name: the env steps counted here, or the optimizer's updates.
        self.optimizer = make_optimizer(config.optim, self.net, lambda: self.env_steps)
        self.ent_coef = Schedule(config.ent_coef, "agent.ent_coef")
        self.buffer = RolloutBuffer(config.n_steps, spec.num_envs, spec.obs_shape, config.gamma,
                                    obs_dtype=spec.observation_space.dtype, action_shape=self.head.action_shape,
                                    action_dtype=self.head.action_dtype)
        self.reward_normalizer = RewardNormalizer(spec.num_envs, config.gamma) if config.normalize_reward else None
        self._drawn: np.ndarray | None = None  # continuous: the raw draws of the last act(), before clipping

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        z = self.net.logits(obs)  # one batched forward for every env
        if not explore:
            return self.head.to_env(self.head.mode(z))  # argmax, or the Gaussian's mean (inside the bounds)
        drawn = self.head.sample(z, self.rng)
        if self.head.continuous:  # the log-probability is of the draw, the env gets it clipped (or squashed)
            self._drawn = drawn
        return self.head.to_env(drawn)

    def observe(self, step: Step) -> dict[str, float]:
        final_values = None
        cut = step.truncated & ~step.terminated
        if cut.any():  # a time limit ended these episodes: the value of where they stopped still counts
            final_values = np.zeros(len(cut), dtype=np.float32)
            final_values[cut] = self.net.value(step.next_obs[cut])
        # Scaling the rewards keeps the values near the range a freshly initialised value head outputs
        # (Acrobot's -1 per step adds up to returns of -100).
        reward = step.reward * self.config.reward_scale
        if self.reward_normalizer is not None:
            reward = self.reward_normalizer(reward, step.terminated | step.truncated)
        actions = step.action
        if self._drawn is not None and self._drawn.shape == step.action.shape:
            actions, self._drawn = self._drawn, None
        self.buffer.add(step.obs, actions, reward, step.terminated, step.truncated, final_values)
        self.env_steps += len(step.reward)
        if not self.buffer.full:
            return {}
        metrics = self.learn(step.next_obs)
        self.buffer.reset()
        return metrics

    def learn(self, next_obs: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def components(self) -> dict:
        parts = {"rng": self.rng, "net": self.net, "optimizer": self.optimizer, "buffer": self.buffer}
        if self.reward_normalizer is not None:
            parts["reward_normalizer"] = self.reward_normalizer
        return parts
