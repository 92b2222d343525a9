"""Elementwise and row-wise nonlinearities. Each keeps the cheapest thing its backward needs
(usually its own output) for every forward call."""

from __future__ import annotations

import functools

import numpy as np

from .module import Module


@functools.lru_cache(maxsize=64)
def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    zeros = np.zeros(shape, dtype=dtype)
    zeros.flags.writeable = False  # shared by every call with this shape: nobody may write into it
    return zeros


# relu's zeros: arrays of at most this many entries get zeros of their own full shape, larger ones
# one sample's zeros broadcast along the batch (so the cached zeros take at most 64 x 256 KB).
FULL_ZEROS_MAX = 1 << 16


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """max(x, 0) elementwise, in x's dtype (``out=x``: in place).

    Why a zero *array*: numpy's maximum against the number 0 runs a loop that is not vectorised, while
    against an array of zeros with one sample's shape, broadcast along the batch, it runs its SIMD
    loop -- measured 2.4x faster on a (64, 12544) float32 array (one core). Zeros of x's own shape
    (no broadcasting) are faster again, 5.2 against 8.2 us on (32, 16, 8, 8) and 2.2 against 3.4 us on
    (64, 64) (one core); kept for arrays of up to FULL_ZEROS_MAX entries, which bounds their memory."""
    shape = x.shape if x.size <= FULL_ZEROS_MAX else x.shape[1:]
    return np.maximum(x, _zeros(shape, x.dtype), out=out)


class ReLU(Module):
    """Forward: y = max(x, 0).   Backward: dL/dx = dL/dy * [x > 0]   (0 at the kink).

    forward keeps the mask [x > 0] itself (one byte an entry), not y: backward is then one product.
    ``overwrite=True`` writes y into x (backward: dL/dx into dL/dy) instead of a new array; Sequential
    asks for it when the array is a fresh one nobody else holds (a Linear's or Conv2d's output, or the
    gradient their backward returned). Measured on bench case (e) (a 64x16x28x28 map), both ways side by
    side in one process on a busy 2-core machine: 1-6% off the whole step, not from the arithmetic but
    from the memory -- the array just written is still in cache, and no second one of 3 MB is brought in."""

    returns_fresh = True  # a new array, or (overwrite=True) the input it was allowed to overwrite
    can_overwrite = True

    def infer(self, x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        return relu(x, out=x if overwrite else None)

    def forward(self, x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        y = relu(x, out=x if overwrite else None)
        self._saved.append(y > 0)
        return y

    def backward(self, dy: np.ndarray, overwrite: bool = False) -> np.ndarray:
        return np.multiply(dy, self._saved.pop(), out=dy if overwrite else None)


class LeakyReLU(Module):
    """Forward: y = x if x > 0 else a x.   Backward: dL/dx = dL/dy * (1 if x > 0 else a)."""

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = float(slope)  # a Python float: x * slope stays float32 for float32 x

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, x * self.slope)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._saved.append(x > 0)
        return self.infer(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        positive = self._saved.pop()
        return np.where(positive, dy, dy * self.slope)


class ELU(Module):
    """Forward: y = x if x > 0 else a (e^x - 1).   Backward: dL/dx = dL/dy * (1 if x > 0 else y + a)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0.0)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = self.infer(x)
        self._saved.append((x > 0, y))
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        positive, y = self._saved.pop()
        return np.where(positive, dy, dy * (y + self.alpha))


class Sigmoid(Module):
    """Forward: y = 1 / (1 + e^-x) = (1 + tanh(x/2)) / 2.   Backward: dL/dx = dL/dy * y (1 - y).

    The tanh form never overflows, whatever the sign of x.
    """

    def infer(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(x * 0.5)
        y += 1.0
        y *= 0.5
        return y

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = self.infer(x)
        self._saved.append(y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._saved.pop()
        return dy * y * (1.0 - y)


class Tanh(Module):
    """Forward: y = tanh(x).   Backward: dL/dx = dL/dy * (1 - y^2)."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(x)
        self._saved.append(y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._saved.pop()
        return dy * (1.0 - y * y)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum exp(x - max): subtracting the row maximum changes nothing mathematically
    and keeps exp from overflowing."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x - logsumexp(x), computed as (x - max) - log sum exp(x - max)."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Module):
    """Forward: y_i = e^{x_i} / sum_j e^{x_j} (last axis).
    Backward: dL/dx = y * (dL/dy - sum_j dL/dy_j y_j)     (the Jacobian diag(y) - y y^T applied to dL/dy)
    """

    def infer(self, x: np.ndarray) -> np.ndarray:
        return softmax(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = softmax(x)
        self._saved.append(y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._saved.pop()
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


class LogSoftmax(Module):
    """Forward: y_i = x_i - log sum_j e^{x_j} (last axis, stable).
    Backward: dL/dx = dL/dy - softmax(x) * sum_j dL/dy_j
    """

    def infer(self, x: np.ndarray) -> np.ndarray:
        return log_softmax(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = log_softmax(x)
        self._saved.append(y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._saved.pop()
        return dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)


ACTIVATIONS: dict[str, type[Module]] = {
    "relu": ReLU, "leaky_relu": LeakyReLU, "elu": ELU, "sigmoid": Sigmoid, "tanh": Tanh,
    "softmax": Softmax, "log_softmax": LogSoftmax,
}


def get_activation(name: str) -> Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}' (choose from {', '.join(ACTIVATIONS)})") from None
