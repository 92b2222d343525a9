"""Finite-difference gradient checks: the proof that every hand-written backward pass is right.

Central differences in float64:  dL/dtheta_i ~ (L(theta + h e_i) - L(theta - h e_i)) / 2h, compared
elementwise with the analytic gradient by the relative error |a - n| / max(|a| + |n|, tiny), the
floor ``tiny`` keeping exactly-zero gradients (a dead ReLU) from dividing roundoff by zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .module import Module


def numerical_gradient(loss_fn: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of ``loss_fn()`` with respect to ``x``, perturbed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat_x, x), "x must be contiguous so it can be perturbed in place"
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + h
        plus = loss_fn()
        flat_x[i] = original - h
        minus = loss_fn()
        flat_x[i] = original
        flat_grad[i] = (plus - minus) / (2.0 * h)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray, tiny: float = 1e-7) -> float:
    """Largest elementwise |a - n| / max(|a| + |n|, tiny)."""
    if analytic.shape != numeric.shape:
        raise ValueError(f"gradient shapes differ: analytic {analytic.shape}, numeric {numeric.shape}")
    if analytic.size == 0:
        return 0.0
    denom = np.maximum(np.abs(analytic) + np.abs(numeric), tiny)
    return float(np.max(np.abs(analytic - numeric) / denom))


def check_gradients(loss_fn: Callable[[], float], wrt: dict[str, tuple[np.ndarray, np.ndarray]],
                    h: float = 1e-6, tiny: float = 1e-7) -> dict[str, float]:
    """For each name -> (array, analytic gradient), the max relative error against finite differences
    of ``loss_fn`` (which must read the arrays afresh on every call)."""
    return {name: relative_error(analytic, numerical_gradient(loss_fn, array, h), tiny)
            for name, (array, analytic) in wrt.items()}


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def check_module(module: Module, *inputs: np.ndarray, rng: np.random.Generator, h: float = 1e-6,
                 tiny: float = 1e-7, before_forward: Callable[[], None] | None = None) -> dict[str, float]:
    """Gradient-check one module in float64: L = sum(G * module.forward(*inputs)) for a random
    upstream gradient G. Returns the max relative error for each input ("input0", ...) and each
    parameter (by qualified name). ``before_forward`` resets any randomness (Dropout's generator)
    so every evaluation sees the same function."""
    if module.num_params() and module.dtype != np.float64:
        raise ValueError("gradient checks run in float64: call module.astype(np.float64) first")
    inputs = tuple(np.array(x, dtype=np.float64) for x in inputs)
    reset = before_forward or (lambda: None)

    reset()
    outputs = _as_tuple(module.forward(*inputs))
    upstream = tuple(rng.standard_normal(y.shape) for y in outputs)
    if module.num_params():
        module.zero_grad()
    input_grads = _as_tuple(module.backward(upstream if len(upstream) > 1 else upstream[0]))

    def loss() -> float:
        reset()
        ys = _as_tuple(module.forward(*inputs))
        module.clear_saved()
        return float(sum(np.sum(g * y) for g, y in zip(upstream, ys)))

    wrt = {f"input{i}": (x, dx) for i, (x, dx) in enumerate(zip(inputs, input_grads))}
    for name, owner, key in module.named_params():
        wrt[name] = (owner.params[key], owner.grads[key].copy())
    return check_gradients(loss, wrt, h, tiny)
