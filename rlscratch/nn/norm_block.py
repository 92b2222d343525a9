"""Normalisation inside residual blocks: a per-sample layer norm over feature maps, and the residual
block with a normalisation after each convolution (conv-norm-relu, as MuZero's and EfficientZero's).

``LayerNorm2d`` standardises each sample over all its C*H*W values (norm.py's shared maths, with the
statistics taken over axes (1, 2, 3)), then applies a learned scale and shift per channel:

    mu_n = mean of x[n],   var_n = mean of (x[n] - mu_n)^2,   inv_std_n = 1 / sqrt(var_n + eps)
    xhat[n, c, h, w] = (x[n, c, h, w] - mu_n) * inv_std_n,    y = gamma_c * xhat + beta_c

    dL/dgamma_c += sum over n, h, w of dL/dy * xhat     dL/dbeta_c += sum over n, h, w of dL/dy
    dxhat = dL/dy * gamma_c
    dL/dx[n] = (1/M) inv_std_n (M dxhat[n] - sum(dxhat[n]) - xhat[n] sum(dxhat[n] xhat[n]))   M = C*H*W

No statistic crosses samples, so training and search compute the same function whatever the batch.
``norm.BatchNorm`` (the other choice) normalises each channel over the batch in training and by its
running estimates in inference.

``NormResidualBlock``:

    Forward:   h = norm1(conv1(x)),  a = relu(h),  z = norm2(conv2(a)),  y = relu(x + z)
    Backward:  g = dL/dy * [y > 0]
               dL/da = conv2's backward of (norm2's backward of g),   dL/dh = dL/da * [a > 0]
               dL/dx = g + conv1's backward of (norm1's backward of dL/dh)
    Inference uses each norm's ``infer`` (BatchNorm: its running statistics).

It draws its two convolutions from the generator exactly as conv.ResidualBlock does, so a network
built with a norm starts with the same convolution weights as one built without.
"""

from __future__ import annotations

import numpy as np

from .activations import relu
from .module import Module
from .norm import BatchNorm, _normalised_grad
from .winograd import WinogradConv3x3

NORMS = ("none", "layer", "batch")


class LayerNorm2d(Module):
    """Layer normalisation of (N, C, H, W) feature maps: statistics per sample over (C, H, W),
    gamma and beta per channel (C,). See the module docstring for the maths."""

    returns_fresh = True

    def __init__(self, channels: int, eps: float = 1e-5, dtype=np.float32) -> None:
        super().__init__()
        self.eps = eps
        self.add_param("gamma", np.ones(channels, dtype=dtype))
        self.add_param("beta", np.zeros(channels, dtype=dtype))

    def _normalise(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.ndim != 4:
            raise ValueError(f"LayerNorm2d expects (N, C, H, W) feature maps, got shape {x.shape}")
        mu = x.mean(axis=(1, 2, 3), keepdims=True)
        xc = x - mu
        inv_std = 1.0 / np.sqrt((xc * xc).mean(axis=(1, 2, 3), keepdims=True) + self.eps)
        xc *= inv_std  # now xhat
        return xc, inv_std

    def _scale_shift(self, xhat: np.ndarray) -> np.ndarray:
        y = xhat * self.params["gamma"][:, None, None]
        y += self.params["beta"][:, None, None]
        return y

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._scale_shift(self._normalise(x)[0])

    def forward(self, x: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._normalise(x)
        self._saved.append((xhat, inv_std))
        return self._scale_shift(xhat)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._saved.pop()
        self.grads["gamma"] += (dy * xhat).sum(axis=(0, 2, 3))
        self.grads["beta"] += dy.sum(axis=(0, 2, 3))
        return _normalised_grad(dy * self.params["gamma"][:, None, None], xhat, inv_std, axis=(1, 2, 3))


def map_norm(kind: str, channels: int, dtype=np.float32) -> Module | None:
    """The normalisation of a conv layer's (N, C, H, W) output: None (``none``), LayerNorm2d (``layer``)
    or BatchNorm (``batch``)."""
    if kind == "none":
        return None
    if kind == "layer":
        return LayerNorm2d(channels, dtype=dtype)
    if kind == "batch":
        return BatchNorm(channels, dtype=dtype)
    raise ValueError(f"unknown normalisation {kind!r}; choose one of {', '.join(NORMS)}")


class NormResidualBlock(Module):
    """conv.ResidualBlock with a normalisation after each of its two 3x3 convolutions (``norm``:
    ``layer`` or ``batch``); the maths is in the module docstring."""

    def __init__(self, channels: int, rng: np.random.Generator, norm: str, init: str = "he",
                 dtype=np.float32) -> None:
        super().__init__()
        if norm == "none":
            raise ValueError("NormResidualBlock needs a norm (layer or batch); use conv.ResidualBlock for none")
        self.conv1 = WinogradConv3x3(channels, channels, rng, init=init, dtype=dtype)
        self.conv2 = WinogradConv3x3(channels, channels, rng, init=init, dtype=dtype)
        self.norm1, self.norm2 = map_norm(norm, channels, dtype), map_norm(norm, channels, dtype)

    def infer(self, x: np.ndarray) -> np.ndarray:
        a = relu(self.norm1.infer(self.conv1.infer(x)))
        y = self.norm2.infer(self.conv2.infer(a))
        y += x
        return relu(y, out=y)

    def forward(self, x: np.ndarray) -> np.ndarray:
        a = relu(self.norm1.forward(self.conv1.forward(x)))
        y = self.norm2.forward(self.conv2.forward(a))
        y += x
        relu(y, out=y)
        self._saved.append((a, y))
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        a, y = self._saved.pop()
        g = dy * (y > 0)
        dh = self.conv2.backward(self.norm2.backward(g))
        dh *= a > 0
        self.conv1.input_grad = self.input_grad
        dx = self.conv1.backward(self.norm1.backward(dh))
        if dx is None:
            return None
        dx += g
        return dx
