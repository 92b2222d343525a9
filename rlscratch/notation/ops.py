"""Every function the notation knows, each defined once: the module that runs it and its formulas.

An ``OpDef`` holds what one function *is*: the Module that computes it (the core's layer, or an
elementwise layer of nn/elementwise.py), y as a formula of its inputs, and the gradient of each input
and parameter as a formula (nn/formula.py: a Python expression, printed as maths). The explanation
(explain.py) prints these formulas and generated code (emit.py) writes them out as numpy.

* For the notation's own layers (``+ - * /``, ``exp``, ``log``, ``x[i]``, ``sum``, ``max``) the formulas
  *are* the layer: ``nn.elementwise.Exp`` runs ``backward_formulas``, and its OpDef is read off the class.
* For the core's layers (``nn.Linear``, the activations) the module is the core's hand-written code and
  the formulas here are the same maths written as formulas. tests/test_notation_ops.py evaluates every
  runnable formula and checks it against the module's forward and backward, so they cannot drift apart.
* ``conv``, ``batch_norm`` and ``max_pool`` are printed from their formulas but their formulas name
  operations numpy has no one-liner for (``conv``, ``correlate``): ``runnable=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlscratch import nn
from rlscratch.nn import elementwise as ew
from rlscratch.nn.module import Module

SCALAR = 0  # the "size" of a plain number: it broadcasts against any state


@dataclass(frozen=True)
class OpDef:
    """One function of the notation. ``inputs`` name the formulas' arguments (``y`` is the output, ``gy``
    the gradient dL/dy); ``backward`` maps each input or parameter to its gradient's formula;
    ``constants`` are the module attributes a formula reads (``alpha`` of elu), printed as numbers."""

    name: str
    make: Callable[..., Module] | None
    inputs: tuple[str, ...] = ("x",)
    forward: str = ""
    backward: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    params: tuple[str, ...] = ()
    constants: tuple[str, ...] = ()
    runnable: bool = True


def _layer(name: str, cls: type[ew.Formula]) -> OpDef:
    """The OpDef of a formula layer: read off the class, never written a second time."""
    return OpDef(name, cls, cls.inputs, cls.forward_formula, dict(cls.backward_formulas), cls.note)


# -- the notation's own layers (nn/elementwise.py) -----------------------------------------------
BINARY = {"+": _layer("+", ew.Add), "-": _layer("-", ew.Sub), "*": _layer("*", ew.Mul), "/": _layer("/", ew.Div)}
ELEMENTWISE = {
    "neg": _layer("neg", ew.Negate),
    "exp": _layer("exp", ew.Exp),
    "log": _layer("log", ew.Log),
    "sum": _layer("sum", ew.RowSum),
    "max": _layer("max", ew.RowMax),
    "huber": _layer("huber", ew.Huber),
    "pick": _layer("pick", ew.PickEntry),
    "nograd": _layer("nograd", ew.Identity),
}

# -- the core's activations (nn/activations.py), as formulas -------------------------------------
ACTIVATIONS = {
    "relu": OpDef("relu", nn.ReLU, forward="maximum(x, 0)", backward={"x": "gy * (y > 0)"}),
    "sigmoid": OpDef("sigmoid", nn.Sigmoid, forward="sigmoid(x)", backward={"x": "gy * y * (1 - y)"}),
    "tanh": OpDef("tanh", nn.Tanh, forward="tanh(x)", backward={"x": "gy * (1 - y ** 2)"}),
    "softmax": OpDef("softmax", nn.Softmax, forward="softmax(x)", backward={"x": "y * (gy - sum_k(gy * y))"}),
    "log_softmax": OpDef("log_softmax", nn.LogSoftmax, forward="log_softmax(x)",
                         backward={"x": "gy - exp(y) * sum_k(gy)"}),
    "elu": OpDef("elu", nn.ELU, forward="where(x > 0, x, alpha * (exp(minimum(x, 0)) - 1))",
                 backward={"x": "gy * where(x > 0, 1, y + alpha)"}, constants=("alpha",)),
    "leaky_relu": OpDef("leaky_relu", nn.LeakyReLU, forward="where(x > 0, x, x * slope)",
                        backward={"x": "gy * where(x > 0, 1, slope)"}, constants=("slope",)),
}

# -- layers with parameters (declared: M_1: dense(128), C_1: conv(16, 3), B_1: batch_norm) ----------
PARAM_LAYERS = {
    "dense": OpDef("dense", nn.Linear, forward="x @ W.T + b", params=("W", "b"),
                   backward={"W": "gy.T @ x", "b": "sum_n(gy)", "x": "gy @ W"}),
    "conv": OpDef("conv", nn.Conv2d, forward="conv(x, W) + b", params=("W", "b"), runnable=False,
                  backward={"W": "correlate(x, gy)", "b": "sum_pixels(gy)", "x": "conv_transpose(gy, W)"},
                  note="summed over the batch and every output pixel: nn/conv.py's im2col derivation"),
    "batch_norm": OpDef("batch_norm", nn.BatchNorm, forward="gamma * xhat + beta", params=("gamma", "beta"),
                        runnable=False,
                        backward={"gamma": "sum_pixels(gy * xhat)", "beta": "sum_pixels(gy)",
                                  "x": "gamma / std * (gy - mean_pixels(gy) - xhat * mean_pixels(gy * xhat))"},
                        note="xhat = (x - mean) / std per channel, batch statistics; nn/norm.py derives it"),
}

# -- other functions ---------------------------------------------------------------------------------
SHAPING = {
    "dropout": OpDef("dropout", nn.Dropout, forward="x * m / (1 - p)", backward={"x": "gy * m / (1 - p)"},
                     runnable=False, note="m ~ Bernoulli(1 - p), drawn in forward"),
    "max_pool": OpDef("max_pool", nn.MaxPool2d, forward="max_pool(x)", backward={"x": "unpool(gy)"},
                      runnable=False, note="each window's gradient goes to the entry that was its maximum"),
    "flatten": OpDef("flatten", nn.Flatten, forward="flatten(x)", backward={"x": "unflatten(gy)"},
                     note="reshaped back to the input's shape"),
    "reshape": OpDef("reshape", None, forward="reshape(x)", backward={"x": "unflatten(gy)"},
                     note="reshaped back to the input's shape"),
}

UNARY = {**ACTIVATIONS, **{k: ELEMENTWISE[k] for k in ("exp", "log", "sum", "max", "huber")}}
TRANSFORMS = ("nograd", "clip_grad", "adam_opt")
KNOWN_FUNCTIONS = set(UNARY) | set(PARAM_LAYERS) | set(SHAPING) | {"add", "mul", "one_hot", "argmax"} | set(TRANSFORMS)


def lookup(fn: str) -> OpDef | None:
    """The definition of an op by its name in the lowered program ("relu", "+", "dense", ...)."""
    for table in (BINARY, ELEMENTWISE, ACTIVATIONS, PARAM_LAYERS, SHAPING):
        if fn in table:
            return table[fn]
    return None


def make_module(name: str, args: tuple[Any, ...] = ()) -> Module:
    """A new module for a parameter-free function (one per use: each keeps its own saved values)."""
    definition = lookup(name)
    assert definition is not None and definition.make is not None, name
    return definition.make(*args)
