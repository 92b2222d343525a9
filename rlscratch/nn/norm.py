"""Normalisation layers: standardise activations, then let a learnable gain and bias rescale them.

Both layers compute, over some set of M values x_1..x_M (which set is what tells them apart):

    mu = (1/M) sum_k x_k,   var = (1/M) sum_k (x_k - mu)^2,   inv_std = 1 / sqrt(var + eps)
    xhat_k = (x_k - mu) * inv_std,   y_k = gamma * xhat_k + beta

and share one backward. With dxhat = dL/dy * gamma, differentiating through mu and var (each x_k moves
the mean and the variance of its whole set) collapses to

    dL/dx_k = (1/M) * inv_std * (M dxhat_k - sum_j dxhat_j - xhat_k sum_j dxhat_j xhat_j)

i.e. dxhat with its mean removed (the mean's gradient) and its component along xhat removed (the
variance's). ``_normalised_grad`` implements exactly this line.
"""

from __future__ import annotations

import numpy as np

from .module import Module


def _normalised_grad(dxhat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray,
                     axis: int | tuple[int, ...]) -> np.ndarray:
    """dL/dx from dL/dxhat for xhat = (x - mean(x)) / std(x), the statistics taken over ``axis``.

    Written as inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), the module docstring's
    formula with the 1/M moved inside the sums."""
    mean_dxhat = dxhat.mean(axis=axis, keepdims=True)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axis, keepdims=True)
    dx = dxhat - mean_dxhat
    dx -= xhat * mean_dxhat_xhat
    dx *= inv_std
    return dx


class LayerNorm(Module):
    """Layer normalisation (Ba et al. 2016): each sample is standardised over its last axis (its
    features), so the layer behaves the same in training and evaluation and for any batch size.

    Shapes: x (..., D), gamma and beta (D,), y like x.  Statistics per row, over the D features.

    Forward:   xhat = (x - mu) / sqrt(var + eps),    y = gamma * xhat + beta
    Backward:  dL/dgamma += sum over rows of dL/dy * xhat        dL/dbeta += sum over rows of dL/dy
               dxhat = dL/dy * gamma
               dL/dx = (1/D) * inv_std * (D dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))   (sums over D)
    """

    def __init__(self, num_features: int, eps: float = 1e-5, dtype=np.float32) -> None:
        super().__init__()
        self.eps = eps
        self.add_param("gamma", np.ones(num_features, dtype=dtype))
        self.add_param("beta", np.zeros(num_features, dtype=dtype))

    def _normalise(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        inv_std = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + self.eps)
        xc *= inv_std  # now xhat
        return xc, inv_std

    def infer(self, x: np.ndarray) -> np.ndarray:
        xhat, _ = self._normalise(x)
        return xhat * self.params["gamma"] + self.params["beta"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._normalise(x)
        self._saved.append((xhat, inv_std))
        return xhat * self.params["gamma"] + self.params["beta"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._saved.pop()
        d = xhat.shape[-1]
        self.grads["gamma"] += (dy * xhat).reshape(-1, d).sum(axis=0)
        self.grads["beta"] += dy.reshape(-1, d).sum(axis=0)
        return _normalised_grad(dy * self.params["gamma"], xhat, inv_std, axis=-1)


class BatchNorm(Module):
    """Batch normalisation (Ioffe & Szegedy 2015) of (N, C) features or (N, C, H, W) feature maps.

    Each channel c is standardised over every value it takes in the batch: the N rows of a (N, C)
    input, or the N*H*W pixels of a (N, C, H, W) one (a conv filter's response is one feature wherever
    it is measured). M below is that count. gamma and beta are (C,).

    Training (``forward`` with ``self.training``): the batch's own statistics,
        mu_c = mean of x[:, c, ...],   var_c = (1/M) sum (x[:, c, ...] - mu_c)^2   (biased, as used)
        y = gamma_c * (x - mu_c) / sqrt(var_c + eps) + beta_c
    and the running estimates move towards them (buffers ``running_mean``, ``running_var``):
        running_mean <- (1 - momentum) running_mean + momentum mu
        running_var  <- (1 - momentum) running_var  + momentum var * M / (M - 1)   (unbiased, as PyTorch)
    Evaluation (``forward`` in eval mode, and ``infer`` always): the running estimates replace mu, var,
    so a sample's output no longer depends on the rest of its batch.

    Backward (training):
        dL/dgamma_c += sum dL/dy * xhat        dL/dbeta_c += sum dL/dy      (sums over all but channel)
        dxhat = dL/dy * gamma
        dL/dx = (1/M) * inv_std * (M dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))   (per channel)
    Backward (eval): the statistics are constants, so dL/dx = dxhat * inv_std.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, dtype=np.float32) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.add_param("gamma", np.ones(num_features, dtype=dtype))
        self.add_param("beta", np.zeros(num_features, dtype=dtype))
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)

    @staticmethod
    def _axes(x: np.ndarray) -> tuple[int, ...]:
        """Every axis but the channel axis 1: (0,) for (N, C), (0, 2, 3) for (N, C, H, W)."""
        if x.ndim < 2:
            raise ValueError(f"BatchNorm expects (N, C) or (N, C, H, W) input, got shape {x.shape}")
        return (0, *range(2, x.ndim))

    @staticmethod
    def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
        """(C,) -> (1, C, 1, ...) so it broadcasts against an input of ``ndim`` axes."""
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def _scale_shift(self, xhat: np.ndarray) -> np.ndarray:
        return (xhat * self._per_channel(self.params["gamma"], xhat.ndim)
                + self._per_channel(self.params["beta"], xhat.ndim))

    def _running_normalise(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self._per_channel(self.buffers["running_mean"], x.ndim)
        inv_std = 1.0 / np.sqrt(self._per_channel(self.buffers["running_var"], x.ndim) + self.eps)
        return (x - mean) * inv_std, inv_std

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._scale_shift(self._running_normalise(x)[0])

    def forward(self, x: np.ndarray) -> np.ndarray:
        axes = self._axes(x)
        if not self.training:
            xhat, inv_std = self._running_normalise(x)
            self._saved.append((xhat, inv_std, False))
            return self._scale_shift(xhat)

        count = x.size // x.shape[1]
        mu = x.mean(axis=axes, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xc *= inv_std  # now xhat

        # Updated in place: the buffers stay the same arrays, as copy_from and load_state_dict expect.
        m = self.momentum
        running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
        running_mean *= 1.0 - m
        running_mean += m * mu.ravel()
        running_var *= 1.0 - m
        running_var += (m * count / max(count - 1, 1)) * var.ravel()

        self._saved.append((xc, inv_std, True))
        return self._scale_shift(xc)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        xhat, inv_std, batch_stats = self._saved.pop()
        axes = self._axes(dy)
        self.grads["gamma"] += (dy * xhat).sum(axis=axes)
        self.grads["beta"] += dy.sum(axis=axes)
        dxhat = dy * self._per_channel(self.params["gamma"], dy.ndim)
        if not batch_stats:
            return dxhat * inv_std
        return _normalised_grad(dxhat, xhat, inv_std, axis=axes)
