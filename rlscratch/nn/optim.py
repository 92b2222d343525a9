"""Optimizers over a model's flat parameter vector, learning-rate schedules and gradient clipping.

Because every parameter of a model lives in one contiguous vector (rlscratch.nn.module), an optimizer
step is a handful of whole-vector numpy operations, whatever the number of layers. The schedule
functions here are the maths; configs name them through rlscratch/optim_config.py (the ``optim:``
section and its ``{kind, start, end, steps, clock}`` schedules), which also builds the optimizer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from .module import Module

Schedule = Callable[[int], float]


# -- learning-rate schedules: step index (0-based) -> learning rate --------------------------------
def constant(lr: float) -> Schedule:
    return lambda step: lr


def linear(start: float, end: float, steps: int) -> Schedule:
    """Linear from ``start`` to ``end`` over ``steps`` steps, then held at ``end``."""
    return lambda step: start + (end - start) * min(step / max(steps, 1), 1.0)


def cosine(lr: float, steps: int, min_lr: float = 0.0) -> Schedule:
    """Half a cosine from ``lr`` down to ``min_lr`` over ``steps`` steps, then held."""
    return lambda step: min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))


def step_decay(lr: float, every: int, gamma: float) -> Schedule:
    """``lr * gamma ** (step // every)``."""
    return lambda step: lr * gamma ** (step // every)


def as_schedule(lr: float | Schedule) -> Schedule:
    """A number is a constant rate; a callable (step -> rate) is used as it is."""
    return lr if callable(lr) else constant(float(lr))


def clip_grad_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale the whole gradient vector down so its L2 norm is at most ``max_norm``; returns the norm
    before clipping. One norm over all parameters, so the update's direction is preserved."""
    norm = float(np.sqrt(np.dot(grads, grads)))
    if norm > max_norm:
        grads *= max_norm / (norm + 1e-12)
    return norm


def flush_subnormals(x: np.ndarray, scratch: np.ndarray | None = None) -> None:
    """Set every entry smaller in magnitude than the smallest normal float (1.2e-38 in float32) to 0.

    Weights that training pushes towards zero (dead units under weight decay) end up *subnormal*,
    and x86 CPUs handle subnormal operands in microcode, many times slower per operation: a trained
    MuZero network with 9% of its float32 weights subnormal ran its batched search 2.2x slower than
    the same network with them set to 0. Values that small contribute nothing to any product.

    The check (is any |x| < tiny, a zero or a subnormal?) reads x twice and writes nothing, through
    x's bits as integers. An IEEE float's bits, read as an unsigned integer, grow with the float from
    +0 (0) to +inf, and every negative float's bits are larger still (the sign bit): so the smallest
    unsigned value is below bits(tiny) exactly when some x in [+0, tiny) exists. Read as a signed
    integer, the negative floats come first, -0 being the most negative integer and then -subnormals,
    -tiny, ... upwards: so the smallest signed value is below INT_MIN + bits(tiny) exactly when some x
    in (-tiny, -0] exists. Two min-reductions instead of |x| into ``scratch`` and a min over it: 27.5 ->
    21.4 us on 132k float32 weights (one core). Only then does the mask pass run (|x| into ``scratch``)."""
    unsigned, signed, tiny, tiny_bits, signed_min = _float_bits(x.dtype)
    if (np.minimum.reduce(x.view(unsigned), axis=None) < tiny_bits
            or np.minimum.reduce(x.view(signed), axis=None) < signed_min + tiny_bits):
        magnitude = np.abs(x, out=scratch)
        np.copyto(x, 0.0, where=magnitude < tiny)


@functools.cache
def _float_bits(dtype: np.dtype) -> tuple[np.dtype, np.dtype, float, int, int]:
    """(unsigned and signed integer dtypes of dtype's size, tiny, tiny's bits, the signed minimum)."""
    unsigned, signed = np.dtype(f"u{dtype.itemsize}"), np.dtype(f"i{dtype.itemsize}")
    tiny = np.finfo(dtype).tiny
    return unsigned, signed, tiny, int(np.array(tiny, dtype=dtype).view(unsigned)), int(np.iinfo(signed).min)


class Optimizer:
    """Base class: holds the model's flat ``params``/``grads`` vectors, a schedule and a step count.

    ``weight_decay`` is classic L2 regularisation (g <- g + wd * theta) except in AdamW, which decays
    the weights directly (decoupled).
    """

    state_names: tuple[str, ...] = ()

    def __init__(self, model: Module, lr: float | Schedule = 1e-3, weight_decay: float = 0.0) -> None:
        self.params = model.flat_params
        self.grads = model.flat_grads
        self.schedule = as_schedule(lr)
        self.weight_decay = float(weight_decay)  # hyperparameters as Python floats: see step()
        self.steps = 0
        self._scratch = np.empty_like(self.params)
        for name in self.state_names:
            setattr(self, name, np.zeros_like(self.params))

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return self.schedule(self.steps)

    def _l2_gradient(self) -> np.ndarray:
        """g + wd * theta (without touching the stored gradient)."""
        if self.weight_decay == 0.0:
            return self.grads
        np.multiply(self.params, self.weight_decay, out=self._scratch)
        self._scratch += self.grads
        return self._scratch

    def step(self) -> None:
        # float(): a schedule returning an np.float64 would silently turn float32 updates into float64
        self._update(float(self.schedule(self.steps)))
        flush_subnormals(self.params, self._scratch)
        self.steps += 1

    def _update(self, lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: getattr(self, name).copy() for name in self.state_names}
        state["steps"] = np.array(self.steps, dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self.state_names:
            if name not in state:
                raise ValueError(f"optimizer state is missing '{name}' (was it saved by {type(self).__name__}?)")
            value = state[name]
            if value.shape != self.params.shape:
                raise ValueError(f"optimizer state '{name}' has shape {value.shape}, model has {self.params.shape}")
            np.copyto(getattr(self, name), value)
        self.steps = int(state["steps"])


class SGD(Optimizer):
    """theta <- theta - lr * g."""

    def _update(self, lr: float) -> None:
        g = self._l2_gradient()
        self.params -= lr * g


class Momentum(Optimizer):
    """Heavy-ball momentum:  v <- mu v + g,  theta <- theta - lr v.
    Nesterov looks ahead:    theta <- theta - lr (g + mu v)."""

    state_names = ("velocity",)

    def __init__(self, model: Module, lr: float | Schedule = 1e-2, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(model, lr, weight_decay)
        self.momentum = float(momentum)
        self.nesterov = nesterov

    def _update(self, lr: float) -> None:
        g = self._l2_gradient()
        self.velocity *= self.momentum
        self.velocity += g
        if self.nesterov:
            self.params -= lr * (g + self.momentum * self.velocity)
        else:
            self.params -= lr * self.velocity


class RMSprop(Optimizer):
    """s <- rho s + (1 - rho) g^2,   theta <- theta - lr g / (sqrt(s) + eps)."""

    state_names = ("square_avg",)

    def __init__(self, model: Module, lr: float | Schedule = 1e-3, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(model, lr, weight_decay)
        self.alpha = float(alpha)
        self.eps = float(eps)

    def _update(self, lr: float) -> None:
        g = self._l2_gradient()
        self.square_avg *= self.alpha
        self.square_avg += (1.0 - self.alpha) * g * g
        denom = np.sqrt(self.square_avg)
        denom += self.eps
        self.params -= lr * g / denom


class Adam(Optimizer):
    """Adam (Kingma & Ba), bias-corrected, at step t = 1, 2, ...:

        m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
        theta <- theta - lr * [m / (1 - b1^t)] / (sqrt(v / (1 - b2^t)) + eps)
    """

    state_names = ("m", "v")
    decoupled = False

    def __init__(self, model: Module, lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(model, lr, weight_decay)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self._scratch2 = np.empty_like(self.params)

    def _update(self, lr: float) -> None:
        t = self.steps + 1
        if self.decoupled:
            g = self.grads
            if self.weight_decay:
                self.params *= 1.0 - lr * self.weight_decay
        else:
            g = self._l2_gradient()
        tmp = self._scratch2  # one preallocated work vector: every line below is in place
        self.m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=tmp)
        self.m += tmp
        self.v *= self.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - self.beta2
        self.v += tmp
        # The bias corrections folded into two scalars (Kingma & Ba, end of section 2), which saves a
        # pass over the vector:  lr [m / (1 - b1^t)] / (sqrt(v / (1 - b2^t)) + eps)
        #   = step_size * m / (sqrt(v) + eps_hat),  step_size = lr c / (1 - b1^t),  eps_hat = eps c,
        # with c = sqrt(1 - b2^t).
        c = math.sqrt(1.0 - self.beta2 ** t)
        np.sqrt(self.v, out=tmp)
        tmp += self.eps * c
        np.divide(self.m, tmp, out=tmp)
        tmp *= lr * c / (1.0 - self.beta1 ** t)
        self.params -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): theta <- theta (1 - lr wd) before the
    Adam step, instead of adding wd * theta to the gradient."""

    decoupled = True

    def __init__(self, model: Module, lr: float | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(model, lr, betas, eps, weight_decay)
