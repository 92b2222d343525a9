"""Scalars on a categorical support: how MuZero predicts values and rewards of any scale.

A network that regresses returns directly must output numbers from 0 to several hundred, and a
squared error on them gives gradients of that size. MuZero (Schrittwieser et al. 2020, appendix F)
instead squashes the scalar with an invertible transform and predicts it as a *distribution* over
the integers -S..S, trained with cross-entropy like a classifier:

    h(x)      = sign(x) (sqrt(|x| + 1) - 1) + eps x                      (Pohlen et al. 2018)
    h^-1(y)   = sign(y) ( ((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1 )

h grows like sqrt for large |x| (so 400 maps to about 19.4 with eps = 0.001) and is exactly
inverted by h^-1 (solve the quadratic in sqrt(|x| + 1) for y = h(x)).

**Two-hot.** A transformed value y between the integers floor(y) = l and l + 1 is written as the
distribution with mass (l + 1 - y) on l and (y - l) on l + 1; its mean is exactly y. Reading a
prediction back is the mean under the predicted probabilities, then h^-1:

    x_hat = h^-1( sum_i p_i * i ),      i = -S, ..., S

so scalar -> two-hot -> scalar is the identity for every |h(x)| <= S (tested as a round trip).
"""

from __future__ import annotations

import math

import numpy as np

EPS = 0.001


def transform(x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x."""
    x = np.asarray(x)
    return np.sign(x) * (np.sqrt(np.abs(x) + 1.0) - 1.0) + eps * x


def inverse_transform(y: np.ndarray, eps: float = EPS) -> np.ndarray:
    """h^-1(y) = sign(y) (((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1).

    Tree search calls this on every leaf, so the constants are folded and the work done in place:
    1 + 4 eps (|y| + 1 + eps) = 4 eps |y| + (1 + 4 eps (1 + eps))."""
    y = np.asarray(y)
    root = np.sqrt(np.abs(y) * (4.0 * eps) + (1.0 + 4.0 * eps * (1.0 + eps)))
    root -= 1.0
    root *= 1.0 / (2.0 * eps)
    root *= root
    root -= 1.0
    return np.copysign(root, y)


def inverse_transform_scalar(y: float, eps: float = EPS) -> float:
    """``inverse_transform`` of one Python float, with ``math`` instead of numpy: a search over a
    single root reads two scalars per leaf, and nine numpy calls on 0-d arrays would cost more than
    the rest of the leaf's arithmetic. Same folded constants, same operations (a test compares)."""
    root = math.sqrt(abs(y) * (4.0 * eps) + (1.0 + 4.0 * eps * (1.0 + eps)))
    root = (root - 1.0) * (1.0 / (2.0 * eps))
    return math.copysign(root * root - 1.0, y)


def support_bins(support_size: int) -> int:
    """Number of categories for the support -S..S."""
    return 2 * support_size + 1


def scalar_to_support(x: np.ndarray, support_size: int, eps: float = EPS) -> np.ndarray:
    """Two-hot distributions (..., 2S+1) of h(x), clipped to [-S, S]."""
    y = np.clip(transform(np.asarray(x, dtype=np.float64), eps), -support_size, support_size)
    low = np.floor(y)
    upper_weight = y - low                              # mass on l + 1
    low_index = (low + support_size).astype(np.int64)   # category of l
    out = np.zeros(y.shape + (support_bins(support_size),))
    np.put_along_axis(out, low_index[..., None], (1.0 - upper_weight)[..., None], axis=-1)
    # at y = S exactly, l + 1 is past the end; its weight is 0 then, so clamp the index
    high_index = np.minimum(low_index + 1, 2 * support_size)
    high = np.take_along_axis(out, high_index[..., None], axis=-1) + upper_weight[..., None]
    np.put_along_axis(out, high_index[..., None], high, axis=-1)
    return out


def expected_support(probs: np.ndarray, support_size: int) -> np.ndarray:
    """sum_i p_i i over the support -S..S (the mean in transformed space)."""
    return probs @ np.arange(-support_size, support_size + 1, dtype=probs.dtype)


def support_to_scalar(probs: np.ndarray, support_size: int, eps: float = EPS) -> np.ndarray:
    """h^-1 of the mean of a distribution over -S..S: the inverse of ``scalar_to_support``."""
    return inverse_transform(expected_support(probs, support_size), eps)


def support_moments(support_size: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The (2S+1, 2) matrix [1 | i]: e @ it gives (sum_i e_i, sum_i e_i i) in one product."""
    return np.stack([np.ones(support_bins(support_size)), np.arange(-support_size, support_size + 1)],
                    axis=1).astype(dtype)


def logits_to_mean(logits: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Mean of softmax(logits) over the support, without forming the softmax: with
    e = exp(logits - max), the mean is sum_i e_i i / sum_i e_i (``moments`` from support_moments)."""
    e = np.exp(logits - np.maximum.reduce(logits, axis=-1, keepdims=True))
    sums = e @ moments
    return sums[..., 1] / sums[..., 0]


def logits_to_scalar(logits: np.ndarray, support_size: int, eps: float = EPS) -> np.ndarray:
    """A network's support logits (..., 2S+1) -> scalars (...): softmax, mean, h^-1."""
    return inverse_transform(logits_to_mean(logits, support_moments(support_size, logits.dtype)), eps)
