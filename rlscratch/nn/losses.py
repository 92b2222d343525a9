"""Losses as plain functions returning ``(loss, dL/dprediction)``.

Every loss averages a per-sample loss l_n over the batch, optionally weighted (importance-sampling
weights w_n) and masked (m_n in {0, 1}):

    L = sum_n w_n m_n l_n / D,    D = sum_n m_n  (= N without a mask)

so dL/dprediction_n = w_n m_n / D * dl_n/dprediction_n. Samples are the leading axis; a per-sample
loss over several outputs is the mean (MSE, Huber) or sum (cross-entropy) over the trailing axes.

Targets, weights and masks are cast to the prediction's dtype, so a float32 network's gradient
stays float32 even when its targets were computed in float64.
"""

from __future__ import annotations

import numpy as np

from .activations import log_softmax


def _sample_scale(n: int, dtype, weights: np.ndarray | None, mask: np.ndarray | None) -> np.ndarray:
    """The factor w_n m_n / D that multiplies each sample's loss and gradient."""
    scale = np.ones(n, dtype=dtype) if weights is None else np.asarray(weights, dtype=dtype).reshape(n).copy()
    if mask is None:
        scale /= n
    else:
        m = np.asarray(mask, dtype=dtype).reshape(n)
        scale *= m / max(float(m.sum()), 1.0)
    return scale


def _per_sample_mean(values: np.ndarray) -> np.ndarray:
    if values.ndim == 1:  # one number per sample (a Q(s, a) batch), its own mean: skips np.mean's ~5 us
        return values
    return values.reshape(values.shape[0], -1).mean(axis=1)


def _broadcast(scale: np.ndarray, like: np.ndarray) -> np.ndarray:
    return scale.reshape((-1,) + (1,) * (like.ndim - 1))


def mse(pred: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None,
        mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean squared error.  l_n = mean_k (p_nk - t_nk)^2,   dl_n/dp_nk = 2 (p_nk - t_nk) / K."""
    diff = pred - np.asarray(target, dtype=pred.dtype)
    per_sample_size = diff.size // diff.shape[0]
    scale = _sample_scale(diff.shape[0], pred.dtype, weights, mask)
    loss = float(scale @ _per_sample_mean(diff * diff))
    return loss, diff * _broadcast(scale * (2.0 / per_sample_size), diff)


def huber(pred: np.ndarray, target: np.ndarray, delta: float = 1.0, weights: np.ndarray | None = None,
          mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Huber (smooth L1): quadratic near zero, linear beyond ``delta`` so outliers cannot blow up
    the gradient.

    l = d^2 / 2 if |d| <= delta else delta (|d| - delta/2),    dl/dp = clip(d, -delta, delta)
    """
    diff = pred - np.asarray(target, dtype=pred.dtype)
    delta = float(delta)
    abs_diff = np.abs(diff)
    quadratic = np.minimum(abs_diff, delta)
    elementwise = quadratic * (abs_diff - 0.5 * quadratic)  # equals both branches above
    per_sample_size = diff.size // diff.shape[0]
    scale = _sample_scale(diff.shape[0], pred.dtype, weights, mask)
    loss = float(scale @ _per_sample_mean(elementwise))
    grad = np.copysign(quadratic, diff)  # = clip(d, -delta, delta): min(|d|, delta) with d's sign
    grad *= _broadcast(scale / per_sample_size if per_sample_size > 1 else scale, diff)
    return loss, grad


def softmax_cross_entropy(logits: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None,
                          mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Cross-entropy of softmax(logits) against integer labels (N,) or distributions (N, C).

    l_n = -sum_c y_nc log p_nc,  p = softmax(z)  (log p from a stable log-sum-exp)
    dl_n/dz_n = p_n - y_n        (the softmax Jacobian and the log's 1/p cancel: docs/backprop.md)
    """
    logp = log_softmax(logits)
    n = logits.shape[0]
    scale = _sample_scale(n, logits.dtype, weights, mask)
    grad = np.exp(logp)
    if target.ndim == logits.ndim - 1 and target.dtype.kind in "iu":  # integer labels (np.issubdtype: 2 us)
        rows = np.arange(n)
        per_sample = -logp[rows, target]
        grad[rows, target] -= 1.0
    else:
        target = np.asarray(target, dtype=logits.dtype)
        per_sample = -(target * logp).sum(axis=-1)
        grad -= target
    grad *= scale[:, None]
    return float(scale @ per_sample), grad


LOSSES = {"mse": mse, "huber": huber, "softmax_cross_entropy": softmax_cross_entropy}
