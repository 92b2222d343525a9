"""DQN (Mnih et al. 2015) and the extensions that each cost a config switch: Double DQN (van Hasselt
et al. 2016), a dueling head (Wang et al. 2016), n-step returns, prioritized replay (Schaul et al.
2016), Polyak-averaged target networks and a decaying learning rate (any ``optim.lr`` schedule).

Per env step (every count below is in env steps summed over the parallel envs, like total_steps):

    a = random action with probability epsilon (a schedule: linear from start to end over its steps),
        else argmax_a Q(s, a)
    store (s, a, r, s', terminated, truncated) in replay, which folds n steps into
        (s, a, G, s_n, discount):  G = sum_k gamma^k r_k,  discount = gamma^m, or 0 after a termination
    every train_freq env steps once learning_starts have passed, gradient_steps times:
        sample a batch (uniformly, or with P(i) ~ p_i^alpha and importance weights w_i, exponent beta)
        y   = G + discount * Q_target(s_n, argmax_a' Q(s_n, a'))    (Double DQN)
            = G + discount * max_a' Q_target(s_n, a')                (DQN)
        L   = mean_i w_i * huber(Q(s_i, a_i) - y_i)       (or squared error; w = 1 without priorities)
        theta <- optim(theta, clip(dL/dtheta, max_grad_norm));  prioritized: p_i <- |Q(s_i, a_i) - y_i| + eps
        every target_update_interval updates: theta_target <- tau theta + (1 - tau) theta_target
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.buffers import PrioritizedReplayBuffer, ReplayBuffer
from rlscratch.config import ModelConfig, bounded
from rlscratch.errors import ConfigError
from rlscratch.models import network
from rlscratch.optim_config import (
    OptimConfig,
    Schedule,
    ScheduleSpec,
    finish_config,
    make_optimizer,
    optim_field,
    schedule_field,
)


@dataclass
class DQNConfig:
    gamma: float = bounded(0.99, ge=0, le=1)
    n_step: int = bounded(1, ge=1, help="rewards summed before bootstrapping")
    buffer_size: int = bounded(100_000, ge=1, help="replay capacity in transitions")
    batch_size: int = bounded(64, ge=1)
    learning_starts: int = bounded(1000, ge=0, help="env steps before the first update")
    train_freq: int = bounded(4, ge=1, help="env steps between training rounds")
    gradient_steps: int = bounded(1, ge=1, help="gradient updates per training round")
    optim: OptimConfig = optim_field(name="adam", lr=1e-3, max_grad_norm=10.0)
    loss: str = bounded("huber", choices=("huber", "mse"))
    target_update_interval: int = bounded(1000, ge=1, help="gradient updates between target updates")
    tau: float = bounded(1.0, gt=0, le=1, help="1: hard copy; below 1: Polyak averaging")
    epsilon: ScheduleSpec = schedule_field(1.0, 0.05, 10_000, help="probability of a random action")
    double_dqn: bool = True
    dueling: bool = False
    prioritized: bool = False
    priority_alpha: float = bounded(0.6, ge=0, help="0: uniform sampling")
    priority_beta: ScheduleSpec = schedule_field(0.4, 1.0, 100_000, help="importance-sampling exponent")
    priority_eps: float = bounded(1e-6, gt=0)

    def __post_init__(self) -> None:
        finish_config(self)  # the agent's optimizer defaults; every schedule states its length


class Dueling(nn.Module):
    """A dueling head over shared features h (Wang et al. 2016):

        Q(s, a) = V(s) + A(s, a) - (1/K) sum_k A(s, k)

    Subtracting the mean makes V and A identifiable (A averages to zero over actions).

    Backward, with g = dL/dQ of shape (N, K):
        dL/dV   = sum_k g_k                   V is added to every Q_k
        dL/dA_j = g_j - (1/K) sum_k g_k       A_j enters Q_j directly and every Q_k through the mean
        dL/dh   = value.backward(dL/dV) + advantage.backward(dL/dA)     h feeds both streams
    """

    def __init__(self, value: nn.Module, advantage: nn.Module) -> None:
        super().__init__()
        self.value = value
        self.advantage = advantage

    def infer(self, h: np.ndarray) -> np.ndarray:
        a = self.advantage.infer(h)
        return self.value.infer(h) + (a - a.mean(axis=1, keepdims=True))

    def forward(self, h: np.ndarray) -> np.ndarray:
        # The streams keep their own caches; the combination itself needs nothing saved.
        a = self.advantage.forward(h)
        return self.value.forward(h) + (a - a.mean(axis=1, keepdims=True))

    def backward(self, g: np.ndarray) -> np.ndarray | None:
        g_sum = g.sum(axis=1, keepdims=True)
        dh_advantage = self.advantage.backward(g - g_sum / g.shape[1])
        dh_value = self.value.backward(g_sum)
        if dh_advantage is None or dh_value is None:
            return None
        return dh_value + dh_advantage


def q_network(obs_dim: int | gym.Space, n_actions: int, model: ModelConfig, rng: np.random.Generator,
              dueling: bool = False) -> nn.Sequential:
    """The model section's MLP with one output per action; ``dueling`` splits its last layer into a
    value and an advantage stream (Linear(width, 1) and Linear(width, n_actions))."""
    if not dueling:
        net = network(obs_dim, n_actions, model, rng)
    else:
        if not model.hidden:
            raise ConfigError("agent.dueling needs at least one hidden layer (model.hidden) to share")
        if model.notation is not None:
            raise ConfigError("model.notation: agent.dueling splits model.hidden's last layer into two streams; "
                              "write the Q-network in the notation without dueling, or drop model.notation")
        width = model.hidden[-1]
        trunk = network(obs_dim, width, dataclasses.replace(model, hidden=model.hidden[:-1]), rng)
        head = Dueling(nn.Linear(width, 1, rng, init=model.init), nn.Linear(width, n_actions, rng, init=model.init))
        net = nn.Sequential(*trunk.layers, nn.get_activation(model.activation), head).flatten()
    if isinstance(net, nn.Sequential):  # (a notation model already skips it)
        net.layers[0].input_grad = False  # its input is data: skip dL/dobs
    return net


def td_target(rewards: np.ndarray, discounts: np.ndarray, next_q_target: np.ndarray,
              next_q_online: np.ndarray | None = None) -> np.ndarray:
    """y = G + discount * Q_target(s', a*) with a* = argmax_a Q_online(s', a) (Double DQN: the online
    net picks, the target net evaluates, which removes max's upward bias), or a* = argmax_a
    Q_target(s', a) without ``next_q_online`` (DQN: y = G + discount * max_a Q_target(s', a))."""
    if next_q_online is None:
        next_value = next_q_target.max(axis=1)
    else:
        next_value = next_q_target[np.arange(len(next_q_target)), next_q_online.argmax(axis=1)]
    return rewards + discounts * next_value


class DQN(Agent):
    Config = DQNConfig
    counters = ("updates", "env_steps")

    def __init__(self, config: DQNConfig, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        c = config
        self.env_steps = 0
        self.n_actions = spec.n_actions
        self.q = q_network(spec.observation_space, self.n_actions, model, rng, c.dueling)
        self.target = self.q.clone()
        # Every schedule reads the clock it names: the env-step counter below, or the update count.
        self.optimizer = make_optimizer(c.optim, self.q, lambda: self.env_steps)
        self.epsilon_schedule = Schedule(c.epsilon, "agent.epsilon")
        self.beta_schedule = Schedule(c.priority_beta, "agent.priority_beta")
        self.loss_fn = nn.huber if c.loss == "huber" else nn.mse

        space = spec.observation_space
        # float observations are stored as float32 (all the network reads); images keep their uint8
        obs_dtype = np.float32 if np.issubdtype(space.dtype, np.floating) else space.dtype
        buffer_args = dict(capacity=c.buffer_size, obs_shape=(spec.obs_dim,), obs_dtype=obs_dtype,
                           action_dtype=np.min_scalar_type(self.n_actions - 1), num_envs=spec.num_envs,
                           n_step=c.n_step, gamma=c.gamma)
        self.buffer = (PrioritizedReplayBuffer(**buffer_args, alpha=c.priority_alpha, eps=c.priority_eps)
                       if c.prioritized else ReplayBuffer(**buffer_args))
        self.rows = np.arange(c.batch_size)

    @property
    def epsilon(self) -> float:
        return self.epsilon_schedule(self.env_steps, self.updates)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        n = len(obs)
        if not explore:
            return self.q.infer(obs.reshape(n, -1)).argmax(axis=1)
        random_mask = self.rng.random(n) < self.epsilon
        # floor(U * K) is uniform on {0..K-1}; rng.integers costs ~10x more for such tiny draws
        random_actions = (self.rng.random(n) * self.n_actions).astype(np.int64)
        if random_mask.all():  # early in training: no need to run the network at all
            return random_actions
        greedy = self.q.infer(obs.reshape(n, -1)).argmax(axis=1)
        return greedy if not random_mask.any() else np.where(random_mask, random_actions, greedy)

    def observe(self, step: Step) -> dict[str, float]:
        n = len(step.reward)
        self.buffer.add(step.obs.reshape(n, -1), step.action, step.reward, step.next_obs.reshape(n, -1),
                        step.terminated, step.truncated)
        before, self.env_steps = self.env_steps, self.env_steps + n
        metrics = {"train/epsilon": self.epsilon}
        c = self.config
        if self.env_steps >= c.learning_starts and self.env_steps // c.train_freq > before // c.train_freq:
            metrics["train/lr"] = self.optimizer.lr
            results = [self.update() for _ in range(c.gradient_steps)]
            metrics["loss/td"] = float(np.mean([loss for loss, _ in results]))
            metrics["train/q_mean"] = float(np.mean([q for _, q in results]))
        return metrics

    def update(self) -> tuple[float, float]:
        """One gradient step on a replayed batch; returns (loss, mean Q of the taken actions)."""
        c = self.config
        if c.prioritized:
            batch = self.buffer.sample(c.batch_size, self.rng, beta=self.beta_schedule(self.env_steps, self.updates))
        else:
            batch = self.buffer.sample(c.batch_size, self.rng)
        # Targets from `infer`: no caches, and no gradient flows into them.
        next_q_online = self.q.infer(batch.next_obs) if c.double_dqn else None
        y = td_target(batch.rewards, batch.discounts, self.target.infer(batch.next_obs), next_q_online)

        q = self.q.forward(batch.obs)
        q_taken = q[self.rows, batch.actions]
        loss, dq_taken = self.loss_fn(q_taken, y, weights=batch.weights)
        dq = np.zeros_like(q)  # only the taken action's output receives gradient
        dq[self.rows, batch.actions] = dq_taken
        self.q.zero_grad()
        self.q.backward(dq)
        if c.optim.max_grad_norm > 0:
            nn.clip_grad_norm(self.q.flat_grads, c.optim.max_grad_norm)
        self.optimizer.step()
        self.updates += 1

        if c.prioritized:
            self.buffer.update_priorities(batch.indices, q_taken - y)
        if self.updates % c.target_update_interval == 0:
            self.target.copy_from(self.q, c.tau)
        return loss, float(q_taken.mean())

    def components(self) -> dict:
        return {"rng": self.rng, "q": self.q, "target": self.target, "optimizer": self.optimizer,
                "buffer": self.buffer}
