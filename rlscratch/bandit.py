"""What the contextual-bandit agents share (agents/epsilon_greedy_bandit.py, policy_gradient_bandit.py,
linucb_bandit.py). Every episode is one round -- see a context x, pull an arm a, get a reward r:

    x --[MLP]--> one output per arm --(explore)--> a --env--> r --> replay (x, a, r) --> minibatch updates

All three learn from minibatches drawn from a replay of the most recent rounds (``replay_size``),
with ``updates_per_round`` gradient steps per round, and act on a batch of contexts at once (one per
parallel env).

Reward models (``reward_model``) for the two agents that predict rewards:

* ``independent`` -- f_a(x) = z_a(x), one free output per arm: the general contextual bandit.
* ``softmax`` -- f(x) = softmax(z(x)): the predicted rewards of the arms are positive and sum to one.
  That is a prior belief about the problem -- exactly one arm pays 1, as when the arms are the
  classes of a classification task (MNIST) -- and a strong one: a round whose guess was right
  (r = 1 pushes f_a up) now also pushes every other arm down on that x, which independent outputs
  only learn from guessing them wrongly.

``augment_shift: k`` (image observations) trains on each replayed image translated by a random
offset of up to k pixels each way: another prior, that moving the image does not change the reward
(a digit moved by a pixel is the same digit), so every round also stands for its shifted copies.
Acting always sees the image as it is. What these choices measured on MNIST is in docs/bandit-tuning.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlscratch import nn
from rlscratch.agent import EnvSpec
from rlscratch.config import ModelConfig, bounded
from rlscratch.errors import ConfigError
from rlscratch.models import mlp
from rlscratch.optim_config import OptimConfig, finish_config, optim_field


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
    """Hyperparameters every bandit agent shares (each agent's Config extends it). A round is one env
    step, so a schedule on the ``env_steps`` clock counts rounds."""

    optim: OptimConfig = optim_field(name="adam", lr=1e-3)
    batch_size: int = bounded(64, ge=1)
    replay_size: int = bounded(20_000, ge=1, help="the most recent rounds kept to learn from")
    updates_per_round: float = bounded(1.0, gt=0, help="gradient steps per round (fractions accumulate)")
    augment_shift: int = bounded(0, ge=0, help="train on replayed images translated by up to this many pixels "
                                               "(image observations only); 0: as observed")

    def __post_init__(self) -> None:
        finish_config(self)  # the agent's optimizer defaults; every schedule states its length


def build_net(n_in: int, n_out: int, model: ModelConfig, rng: np.random.Generator,
              output_gain: float | None = None) -> nn.Sequential:
    """obs -> hidden... -> one output per arm. The first layer's input is the image itself, whose
    gradient nobody needs: skipping it saves a third of that (largest) layer's backward pass."""
    net = mlp(n_in, n_out, model, rng, output_gain=output_gain)
    if model.notation is None:  # (a network from model.notation already skips it)
        net.layers[0].input_grad = False
    return net


def flat(obs: np.ndarray) -> np.ndarray:
    """(N, *obs_shape) -> (N, obs_dim): the MLP takes an image as a vector of pixels."""
    return obs.reshape(len(obs), -1)


def image_shape(spec: EnvSpec, config: ReplayConfig) -> tuple[int, ...] | None:
    """The observations' image shape ((H, W) or (C, H, W)) when the config augments them, else None."""
    if not config.augment_shift:
        return None
    if len(spec.obs_shape) not in (2, 3):
        raise ConfigError(f"agent.augment_shift translates images, but this env's observations have shape "
                          f"{spec.obs_shape}; give them as images "
                          f"(for rlscratch/MNISTBandit-v0: env.kwargs.flat: false)")
    return spec.obs_shape


def random_shift(x: np.ndarray, shape: tuple[int, ...], max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each row of x (a flattened image of ``shape``) translated by its own (dy, dx), uniform on
    {-max_shift..max_shift}^2, the uncovered border filled with zeros:

        out[i, j] = x[i - dy, j - dx]   (0 where that falls outside the image)

    Data augmentation for a reward that an image's position does not change (a digit moved by a pixel
    or two is the same digit): each replayed round (x, a, r) also stands for (shift(x), a, r). Nothing
    is differentiated through it (the first layer computes no input gradient)."""
    n, (h, w), s = len(x), shape[-2:], max_shift
    images = x.reshape(n, -1, h, w)
    padded = np.zeros((n, images.shape[1], h + 2 * s, w + 2 * s), dtype=x.dtype)
    padded[:, :, s:s + h, s:s + w] = images
    # window offset o = s - shift: out[i, j] = padded[i + o] = x[i + o - s] = x[i - shift]
    offset_y, offset_x = rng.integers(0, 2 * s + 1, (2, n))
    out = np.empty_like(images)
    for oy in range(2 * s + 1):
        for ox in range(2 * s + 1):
            rows = np.flatnonzero((offset_y == oy) & (offset_x == ox))
            if len(rows):
                out[rows] = padded[rows, :, oy:oy + h, ox:ox + w]
    return out.reshape(n, -1)


def replayed_obs(replay: BanditReplay, idx: np.ndarray, shape: tuple[int, ...] | None, max_shift: int,
                 rng: np.random.Generator) -> np.ndarray:
    """The contexts of the replayed rounds ``idx``, randomly translated if the config asks for it."""
    return replay.obs[idx] if shape is None else random_shift(replay.obs[idx], shape, max_shift, rng)


REWARD_MODELS = ("softmax", "independent")


def predicted_rewards(outputs: np.ndarray, reward_model: str) -> np.ndarray:
    """f(x) from the network's outputs z(x): softmax(z), or z itself."""
    return nn.softmax(outputs) if reward_model == "softmax" else outputs


def reward_regression_loss(outputs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                           reward_model: str) -> tuple[float, np.ndarray]:
    """MSE of the taken arms' predicted rewards, and its gradient with respect to the outputs z, by hand:

        L = 1/N sum_n (f_{a_n}(x_n) - r_n)^2,    g_n = dL/df_{a_n} = 2 (f_{a_n} - r_n) / N

    independent (f = z):        dL/dz_n = g_n onehot(a_n)     -- the other arms' outputs get nothing
    softmax     (f = softmax z): df_a/dz = f_a (onehot(a) - f), so
                                 dL/dz_n = g_n f_{a_n} (onehot(a_n) - f_n)   -- every arm moves
    """
    f = predicted_rewards(outputs, reward_model)
    rows = np.arange(len(actions))
    loss, g = nn.mse(f[rows, actions], rewards)
    if reward_model == "softmax":
        doutputs = f * -(g * f[rows, actions])[:, None]
        doutputs[rows, actions] += g * f[rows, actions]
    else:
        doutputs = np.zeros_like(outputs)
        doutputs[rows, actions] = g
    return loss, doutputs


def regression_step(net: nn.Module, optimizer: nn.optim.Optimizer, obs: np.ndarray, actions: np.ndarray,
                    rewards: np.ndarray, reward_model: str) -> float:
    """One gradient step of the reward regression on a minibatch of rounds."""
    loss, doutputs = reward_regression_loss(net(obs), actions, rewards, reward_model)
    net.zero_grad()
    net.backward(doutputs)
    optimizer.step()
    return loss


def reward_model_updates(agent: Any) -> list[float]:
    """Spend a value-based bandit's update credit (``updates_per_round`` per round observed): one
    reward-regression step on a freshly sampled (and, with ``augment_shift``, shifted) replay batch per
    whole unit. Returns the losses. ``agent`` has replay, config, image_shape, rng, net, optimizer,
    update_credit and updates."""
    losses = []
    while agent.update_credit >= 1.0:
        idx = agent.replay.sample(agent.config.batch_size, agent.rng)
        x = replayed_obs(agent.replay, idx, agent.image_shape, agent.config.augment_shift, agent.rng)
        losses.append(regression_step(agent.net, agent.optimizer, x, agent.replay.action[idx],
                                      agent.replay.reward[idx], agent.config.reward_model))
        agent.update_credit -= 1.0
        agent.updates += 1
    return losses


