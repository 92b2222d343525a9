"""Weight initialisers. Each takes an explicit ``numpy.random.Generator``: the package never touches
numpy's global random state, so a seed fully determines a run.

``fan_in``/``fan_out`` follow the (out, in, *kernel) weight layout used throughout rlscratch.nn.
"""

from __future__ import annotations

import math

import numpy as np


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shaped (out, in) or (out, in, kh, kw)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def he_normal(shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32, gain: float = math.sqrt(2.0)):
    """Kaiming/He: N(0, gain^2 / fan_in); keeps activation variance constant through ReLUs."""
    fan_in, _ = fans(shape)
    return (rng.standard_normal(shape) * (gain / math.sqrt(fan_in))).astype(dtype)


def he_uniform(shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32, gain: float = math.sqrt(2.0)):
    """Kaiming/He uniform: U(-b, b) with b = gain * sqrt(3 / fan_in)."""
    fan_in, _ = fans(shape)
    bound = gain * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


def xavier_uniform(shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32, gain: float = 1.0):
    """Glorot/Xavier: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)); suits tanh/sigmoid."""
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape).astype(dtype)


def xavier_normal(shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32, gain: float = 1.0):
    """Glorot/Xavier normal: N(0, gain^2 * 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return (rng.standard_normal(shape) * (gain * math.sqrt(2.0 / (fan_in + fan_out)))).astype(dtype)


def orthogonal(shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32, gain: float = 1.0):
    """Orthogonal rows (or columns) scaled by ``gain``, via QR of a Gaussian matrix (Saxe et al.);
    the sign correction makes the result uniformly distributed over orthogonal matrices."""
    rows, cols = shape[0], math.prod(shape[1:])
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q[:rows, :cols]).reshape(shape).astype(dtype)


def zeros(shape: tuple[int, ...], rng: np.random.Generator | None = None, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


INITIALISERS = {
    "he": he_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "xavier": xavier_uniform,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "orthogonal": orthogonal,
    "zeros": zeros,
}


def get_initialiser(name: str):
    try:
        return INITIALISERS[name]
    except KeyError:
        raise ValueError(f"unknown initialiser '{name}' (choose from {', '.join(INITIALISERS)})") from None
