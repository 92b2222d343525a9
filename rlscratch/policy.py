"""The maths of a categorical policy pi = softmax(z) over logits z, written once and gradient-checked
(tests/test_policy.py): sampling, log-probabilities, entropy and the policy-gradient loss, each with
its derivative with respect to the logits. Below them, the diagonal Gaussian for continuous (Box)
actions (gradient-checked in tests/test_continuous.py), and the two "heads" A2C and PPO act and learn
through, so one code path serves both kinds of action space. A2C, PPO and the policy-gradient bandit use these (MuZero's
visit-count sampling is the same draw over logits log N / T); the networks then carry dL/dz back
through their layers by hand.

The two identities everything below rests on, with pi = softmax(z) and log pi_a = z_a - logsumexp(z):

    d log pi_a / dz_j = [a = j] - pi_j            (onehot(a) - pi)
    d pi_a / dz_j     = pi_a ([a = j] - pi_j)
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from rlscratch import nn
from rlscratch.errors import ConfigError


def sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """a ~ softmax(z), one per row: the first action whose cumulative probability passes a uniform
    draw (scaled by the row's total, so rounding can never leave a row without an action). Computed
    in the logits' dtype: pass float64 logits for float64 probabilities."""
    cdf = np.cumsum(nn.softmax(logits), axis=1)
    u = rng.random((len(logits), 1)) * cdf[:, -1:]
    return (cdf > u).argmax(axis=1)


def log_prob(logits: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log pi(a|s) for each row's action."""
    return nn.log_softmax(logits)[np.arange(len(actions)), actions]


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


def policy_gradient_loss(logits: np.ndarray, actions: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """L = -1/B sum_t w_t log pi(a_t|s_t), and dL/dz, for weights w_t held constant (an advantage,
    or a reward minus a baseline, times an importance ratio).

    With d log pi(a|s) / dz = onehot(a) - pi:
        dL/dz_t = w_t (pi_t - onehot(a_t)) / B
    """
    B = len(actions)
    logp = nn.log_softmax(logits)
    rows = np.arange(B)
    weights = weights.astype(logits.dtype, copy=False)
    loss = -float(np.dot(weights, logp[rows, actions])) / B
    dlogits = np.exp(logp)  # pi
    dlogits[rows, actions] -= 1.0  # pi - onehot(a)
    dlogits *= (weights / B)[:, None]
    return loss, dlogits


# -- policy heads: one interface over the distribution parameters z a network outputs --------------------
# A2C and PPO call only these methods, so one code path serves discrete and continuous actions. z is one
# row of distribution parameters per observation; ``stored`` actions are what the log-probability is computed
# on (kept in the rollout buffer), ``to_env`` turns them into what the environment receives.
class CategoricalHead:
    """pi = softmax(z) over ``n`` actions: z is the logits, stored actions are the env's action indices."""

    continuous = False

    def __init__(self, n: int) -> None:
        self.n_outputs = n  # network outputs per observation
        self.action_shape: tuple[int, ...] = ()
        self.action_dtype = np.int64

    def sample(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return sample_categorical(z, rng)

    def mode(self, z: np.ndarray) -> np.ndarray:
        return z.argmax(axis=1)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return actions

    def log_prob(self, z: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return log_prob(z, actions)

    def log_prob_backward(self, z: np.ndarray, actions: np.ndarray, g: np.ndarray) -> np.ndarray:
        """d/dz of sum_t g_t log pi(a_t|s_t):  g_t (onehot(a_t) - pi_t)."""
        dz = -nn.softmax(z)
        dz[np.arange(len(actions)), actions] += 1.0
        dz *= g.astype(z.dtype, copy=False)[:, None]
        return dz

    def entropy(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        return entropy(z)

    def policy_gradient_loss(self, z: np.ndarray, actions: np.ndarray, weights: np.ndarray
                             ) -> tuple[float, np.ndarray]:
        return policy_gradient_loss(z, actions, weights)


LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def tanh_log_det(u: np.ndarray) -> np.ndarray:
    """sum_i log(1 - tanh(u_i)^2) per row, in the form that stays finite for large |u|:
    1 - tanh(u)^2 = 4 / (e^u + e^-u)^2, so  log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u - np.logaddexp(0.0, -2.0 * u))).sum(axis=1)


def gaussian_log_prob(mean: np.ndarray, log_std: np.ndarray, u: np.ndarray, squash: bool = False) -> np.ndarray:
    """log pi(u|s) of a diagonal Gaussian N(mean, exp(log_std)^2), summed over action dimensions:

        log pi(u) = sum_i [ -(u_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log sqrt(2 pi) ]

    ``squash``: the log-density of a = tanh(u) instead, by the change of variables
    log pi(a) = log pi(u) - sum_i log(1 - tanh(u_i)^2). The correction depends on u only, so it has no
    gradient with respect to mean and log_std (and cancels in PPO's ratio)."""
    x = (u - mean) * np.exp(-log_std)
    logp = (-0.5 * x * x - log_std - LOG_SQRT_2PI).sum(axis=1)
    return logp - tanh_log_det(u) if squash else logp


def gaussian_log_prob_grads(mean: np.ndarray, log_std: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d log pi(u) / d mean_i = (u_i - mu_i) / sigma_i^2,  d log pi(u) / d log_std_i = (u_i - mu_i)^2 / sigma_i^2 - 1
    (with the tanh squash too: its correction depends on u alone)."""
    inv_var = np.exp(-2.0 * log_std)
    diff = u - mean
    return diff * inv_var, diff * diff * inv_var - 1.0


def gaussian_entropy(log_std: np.ndarray) -> np.ndarray:
    """H = sum_i (log sigma_i + 1/2 + log sqrt(2 pi)) per row; dH/dlog_std_i = 1, dH/dmean = 0."""
    return (log_std + 0.5 + LOG_SQRT_2PI).sum(axis=1)


class DiagGaussianHead:
    """A diagonal Gaussian for a Box action space, z = [mean | log_std] (the network gives the mean; the
    log-std is one learnable vector shared by every state, which ActorCritic tiles into z's second half).

    Stored actions are the raw draws u ~ N(mean, sigma^2): the log-probability is always of u. The env
    receives u clipped to the space's bounds (SB3's choice: clipping is not part of the policy), or with
    ``squash`` low + (tanh(u) + 1)(high - low)/2, whose log-density adds -sum log(1 - tanh(u)^2).
    The entropy bonus is the Gaussian's (of u) either way: a squashed Gaussian's has no closed form."""

    continuous = True

    def __init__(self, space: gym.spaces.Box, squash: bool = False) -> None:
        self.dim = int(np.prod(space.shape))
        self.n_outputs = self.dim  # the network outputs the mean; log_std is ActorCritic's own parameter
        self.action_shape: tuple[int, ...] = tuple(space.shape)
        self.action_dtype = np.float32
        self.low, self.high = space.low.reshape(-1).astype(np.float64), space.high.reshape(-1).astype(np.float64)
        self.squash = squash
        if squash and not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ConfigError(f"agent.squash_actions needs finite action bounds, the env's Box is {space}; "
                              "set agent.squash_actions: false")

    def split(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return z[:, :self.dim], z[:, self.dim:]

    def sample(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean, log_std = self.split(z)
        u = mean + np.exp(log_std) * rng.standard_normal(mean.shape)
        return u.astype(np.float32).reshape((len(z),) + self.action_shape)

    def mode(self, z: np.ndarray) -> np.ndarray:
        return self.split(z)[0].astype(np.float32).reshape((len(z),) + self.action_shape)

    def to_env(self, u: np.ndarray) -> np.ndarray:
        u = u.reshape(len(u), -1)
        if self.squash:
            a = self.low + (np.tanh(u) + 1.0) * (0.5 * (self.high - self.low))
        else:
            a = np.clip(u, self.low, self.high)
        return a.astype(np.float32).reshape((len(u),) + self.action_shape)

    def log_prob(self, z: np.ndarray, actions: np.ndarray) -> np.ndarray:
        mean, log_std = self.split(z)
        return gaussian_log_prob(mean, log_std, actions.reshape(mean.shape).astype(z.dtype), self.squash)

    def log_prob_backward(self, z: np.ndarray, actions: np.ndarray, g: np.ndarray) -> np.ndarray:
        """d/dz of sum_t g_t log pi(u_t|s_t): g_t times gaussian_log_prob_grads (the tanh term has none)."""
        mean, log_std = self.split(z)
        dmean, dlog_std = gaussian_log_prob_grads(mean, log_std, actions.reshape(mean.shape).astype(z.dtype))
        g = g.astype(z.dtype, copy=False)[:, None]
        return np.concatenate([dmean * g, dlog_std * g], axis=1)

    def entropy(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean entropy over the batch and dH/dz = [0 | 1/B]."""
        _, log_std = self.split(z)
        dz = np.zeros_like(z)
        dz[:, self.dim:] = 1.0 / len(z)
        return float(gaussian_entropy(log_std).mean()), dz

    def policy_gradient_loss(self, z: np.ndarray, actions: np.ndarray, weights: np.ndarray
                             ) -> tuple[float, np.ndarray]:
        """L = -1/B sum_t w_t log pi(u_t|s_t) and dL/dz."""
        B = len(z)
        loss = -float(np.dot(weights.astype(z.dtype), self.log_prob(z, actions))) / B
        return loss, self.log_prob_backward(z, actions, -weights / B)


PolicyHead = CategoricalHead | DiagGaussianHead


def policy_head(action_space: gym.Space, squash: bool = False) -> PolicyHead:
    """The head an action space needs: Discrete -> categorical, Box -> diagonal Gaussian; others refused."""
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalHead(int(action_space.n))
    if isinstance(action_space, gym.spaces.Box) and np.issubdtype(action_space.dtype, np.floating):
        return DiagGaussianHead(action_space, squash)
    raise ConfigError(f"A2C and PPO act in Discrete or Box action spaces, the env has {action_space}; "
                      "pick an env with one of those, or flatten its actions with a wrapper")
