"""The maths of a categorical policy pi = softmax(z) over logits z, written once and gradient-checked
(tests/test_policy.py): sampling, log-probabilities, entropy and the policy-gradient loss, each with
its derivative with respect to the logits. A2C, PPO and the policy-gradient bandit use these (MuZero's
visit-count sampling is the same draw over logits log N / T); the networks then carry dL/dz back
through their layers by hand.

The two identities everything below rests on, with pi = softmax(z) and log pi_a = z_a - logsumexp(z):

    d log pi_a / dz_j = [a = j] - pi_j            (onehot(a) - pi)
    d pi_a / dz_j     = pi_a ([a = j] - pi_j)
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn


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
