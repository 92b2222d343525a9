"""Dense layers and the plumbing that wires modules together.

Shapes: a batch is the leading axis. ``Linear`` stores its weight as (out, in), the layout of the
maths in docs/backprop.md (z = W v + b for one column vector v), so a batch of row vectors X (N, in)
goes through as Z = X W^T + b.
"""

from __future__ import annotations

import numpy as np

from .init import get_initialiser
from .module import Module


class Linear(Module):
    """Fully connected layer.

    Forward:   Z = X W^T + b                 X: (N, in)   W: (out, in)   b: (out,)   Z: (N, out)
    Backward:  dL/dX  = dL/dZ W              (N, in)   -- W^T carries dL/dZ back, row by row
               dL/dW += dL/dZ^T X            (out, in) -- sum over the batch of outer products dz v^T
               dL/db += sum_n dL/dZ_n        (out,)

    Inputs and gradients of another dtype (float64 observations or advantages, say) are cast to the
    weights' dtype, so a float32 network computes in float32 throughout. With ``input_grad = False``
    (the first layer of a network: its input is data) backward skips dL/dX and returns None.
    """

    returns_fresh = True  # Z and dL/dX are new arrays (it keeps X, not Z)

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator, init: str = "he",
                 gain: float | None = None, bias: bool = True, dtype=np.float32) -> None:
        super().__init__()
        initialiser = get_initialiser(init)
        kwargs = {} if gain is None else {"gain": gain}
        self.add_param("W", initialiser((n_out, n_in), rng, dtype=dtype, **kwargs))
        if bias:
            self.add_param("b", np.zeros(n_out, dtype=dtype))

    def infer(self, x: np.ndarray) -> np.ndarray:
        W = self.params["W"]
        z = np.asarray(x, dtype=W.dtype) @ W.T
        if "b" in self.params:
            z += self.params["b"]
        return z

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.params["W"].dtype)
        self._saved.append(x)
        return self.infer(x)

    def backward(self, dz: np.ndarray) -> np.ndarray | None:
        x = self._saved.pop()
        dz = np.asarray(dz, dtype=x.dtype)
        grads = self.grads
        if self.grads_zeroed:  # they are 0 (zero_grad): store the products, no temporaries to add
            np.matmul(dz.T, x, out=grads["W"])
            if "b" in grads:
                np.add.reduce(dz, axis=0, out=grads["b"])
            self.grads_zeroed = False
        else:
            grads["W"] += dz.T @ x
            if "b" in grads:
                grads["b"] += dz.sum(axis=0)
        if not self.input_grad:
            return None
        return dz @ self.params["W"]


class Flatten(Module):
    """Forward: (N, d1, d2, ...) -> (N, d1*d2*...).   Backward: reshape dL/dY back to the input shape."""

    returns_view = True

    def infer(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._saved.append(x.shape)
        return self.infer(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self._saved.pop())


class Reshape(Module):
    """Forward: (N, ...) -> (N, *shape).   Backward: reshape dL/dY back to the input shape."""

    returns_view = True

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def infer(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], *self.shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._saved.append(x.shape)
        return self.infer(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self._saved.pop())


class Dropout(Module):
    """Inverted dropout: each unit is kept with probability 1-p and scaled by 1/(1-p) in training, so
    evaluation is the identity.

    Forward (train):  m_i ~ Bernoulli(1-p),  y = x * m / (1-p)        (eval: y = x)
    Backward:         dL/dx = dL/dy * m / (1-p)
    """

    def __init__(self, p: float, rng: np.random.Generator) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng

    def infer(self, x: np.ndarray) -> np.ndarray:
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._saved.append(None)
            return x
        scaled_mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / (1.0 - self.p)
        self._saved.append(scaled_mask)
        return x * scaled_mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        scaled_mask = self._saved.pop()
        return dy if scaled_mask is None else dy * scaled_mask


class Concat(Module):
    """Joins several inputs along the last axis, e.g. a latent state and a one-hot action.

    Forward:  y = [x_1 | x_2 | ... ]        Backward: dL/dx_i = the matching slice of dL/dy
    """

    def infer(self, *xs: np.ndarray) -> np.ndarray:
        return np.concatenate(xs, axis=-1)

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        self._saved.append(np.cumsum([x.shape[-1] for x in xs])[:-1])
        return self.infer(*xs)

    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.split(dy, self._saved.pop(), axis=-1))


class Split(Module):
    """Cuts the last axis into pieces of the given sizes, e.g. policy logits and a value.

    Forward:  (y_1, y_2, ...) = x[..., :s_1], x[..., s_1:s_1+s_2], ...
    Backward: dL/dx = [dL/dy_1 | dL/dy_2 | ...]
    """

    def __init__(self, *sizes: int) -> None:
        super().__init__()
        self.cuts = np.cumsum(sizes)[:-1]

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.split(x, self.cuts, axis=-1))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.infer(x)

    def backward(self, dys: tuple[np.ndarray, ...]) -> np.ndarray:
        return np.concatenate(dys, axis=-1)


class Sequential(Module):
    """Applies layers in order; backward visits them in reverse (the chain rule).

    A layer that returns a tuple (Split) feeds the next layer its elements as separate arguments, so
    ``Sequential(Concat(), Linear(...), ...)`` takes several inputs.

    In place. Between two layers the array passed on is seen by no one else, so a layer that can work
    in place (``can_overwrite``: ReLU) is told to overwrite it -- when the layer before promised it is
    fresh (``returns_fresh``: Linear, Conv2d; through ``returns_view`` layers such as Flatten). The
    caller's own arrays (the input of forward, the dL/dy given to backward) are never overwritten.
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.layers = list(layers)

    @staticmethod
    def _run(layers, method: str, y, unpack: bool):
        """Call ``method`` of each layer on the previous one's result (a tuple spread into arguments
        when ``unpack``), telling a layer that can work in place to overwrite a fresh array."""
        fresh = False  # the caller's array
        for layer in layers:
            fn = getattr(layer, method)
            if unpack and isinstance(y, tuple):
                y = fn(*y)
            elif fresh and layer.can_overwrite:
                y = fn(y, overwrite=True)
            else:
                y = fn(y)
            fresh = layer.returns_fresh or (fresh and layer.returns_view)
        return y

    def forward(self, *xs: np.ndarray):
        return self._run(self.layers, "forward", xs if len(xs) > 1 else xs[0], unpack=True)

    def infer(self, *xs: np.ndarray):
        return self._run(self.layers, "infer", xs if len(xs) > 1 else xs[0], unpack=True)

    def backward(self, dy):
        return self._run(reversed(self.layers), "backward", dy, unpack=False)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)


class Residual(Module):
    """Skip connection around a body: the gradient flows through both paths and adds.

    Forward:  y = x + F(x)          Backward: dL/dx = dL/dy + F'(x)^T dL/dy
    """

    def __init__(self, body: Module) -> None:
        super().__init__()
        self.body = body

    def infer(self, x: np.ndarray) -> np.ndarray:
        return x + self.body.infer(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x + self.body.forward(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy + self.body.backward(dy)
