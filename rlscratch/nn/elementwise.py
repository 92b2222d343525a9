"""Elementwise and row-wise layers: arithmetic (+ - * /), exp, log, picking an entry, row sums and maxima.

The arrow notation (rlscratch.notation) builds these from expressions such as ``r_t + gamma * V_{t+1}``
or ``log(pi_t[a_t])``; they are ordinary layers and can be used anywhere.

Each layer is *defined by its formulas* (nn/formula.py): ``forward`` is y as a formula of the inputs,
``backward`` the gradient of each input as a formula of the inputs, y and gy = dL/dy. The class below
compiles both once into numpy functions, and rlscratch.notation prints the very same strings when it
explains a program (and writes them into generated code) -- the derivative is written once, here.

Shapes and broadcasting. A batch is the leading axis; a per-sample number (a reward) is a column
(N, 1) and broadcasts against (N, K). An input that was broadcast in forward gets its gradient summed
over the broadcast axes (y = a + b with a (N, 1), b (N, K): dL/da_n = sum_k dL/dy_nk), and a gradient
computed narrower than its input (the (N, 1) gradient of a row sum) is copied across. A plain Python
number as an input gets no gradient (None). Integer data entering arithmetic (a done flag d_t) is
turned into a float column first, so ``1 - d_t`` is (N, 1), not an (N, N) table.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .formula import compile_formula, names_in
from .module import Module


def as_operand(x: Any) -> Any:
    """Integer data (labels, done flags) become a float column (N, 1); arrays and numbers pass unchanged."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
        x = x.astype(np.float32)
        return x[:, None] if x.ndim == 1 else x
    return x


def as_labels(x: Any) -> np.ndarray:
    """Integer labels (N,) from labels or a float column of whole numbers."""
    array = np.asarray(x)
    return array.reshape(array.shape[0]).astype(np.int64)


def fit_gradient(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A gradient brought to its input's shape: summed over the axes the input was broadcast along,
    copied along the axes the gradient is narrower in."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    if grad.shape != shape:
        grad = np.broadcast_to(grad, shape).copy()
    return grad


class Formula(Module):
    """A layer defined by formulas. Subclasses set:

    * ``inputs``   the names of the inputs, in call order: ("x",) or ("a", "b");
    * ``labels``   the inputs that are integer labels (no gradient, never turned into floats);
    * ``forward_formula``    y as a formula of the inputs;
    * ``backward_formulas``  {input: its gradient as a formula of the inputs, y and gy}; an input not
      listed takes no gradient;
    * ``note``     what the explanation adds after the backward line (optional; ``{gy}``, ``{x}``, ... in
      it are replaced like the formulas' names).

    ``forward`` keeps exactly the values the backward formulas read (and the inputs' shapes).
    """

    inputs: ClassVar[tuple[str, ...]] = ("x",)
    labels: ClassVar[tuple[str, ...]] = ()
    forward_formula: ClassVar[str] = "x"
    backward_formulas: ClassVar[dict[str, str]] = {}
    note: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._forward = staticmethod(compile_formula(cls.forward_formula, cls.inputs))
        env = (*cls.inputs, "y", "gy")
        cls._backward = {name: staticmethod(compile_formula(f, env)) for name, f in cls.backward_formulas.items()}
        used = set().union(*(names_in(f) for f in cls.backward_formulas.values())) if cls.backward_formulas else set()
        unknown = used - set(env)
        if unknown:
            raise TypeError(f"{cls.__name__}: a backward formula reads {sorted(unknown)}, not one of {env}")
        cls._keeps = tuple(name for name in (*cls.inputs, "y") if name in used)

    def _prepare(self, xs: tuple[Any, ...]) -> list[Any]:
        if len(xs) != len(self.inputs):
            raise TypeError(f"{type(self).__name__} takes {len(self.inputs)} input(s), got {len(xs)}")
        return [as_labels(x) if name in self.labels else as_operand(x) for name, x in zip(self.inputs, xs)]

    def infer(self, *xs: Any) -> Any:
        return self._forward(*self._prepare(xs))

    def forward(self, *xs: Any) -> Any:
        values = self._prepare(xs)
        y = self._forward(*values)
        env = dict(zip(self.inputs, values), y=y)
        shapes = [None if name in self.labels or not isinstance(v, np.ndarray) else v.shape
                  for name, v in zip(self.inputs, values)]
        self._saved.append(({name: env[name] for name in self._keeps}, shapes))
        return y

    def backward(self, dy: np.ndarray) -> Any:
        kept, shapes = self._saved.pop()
        env = [kept.get(name) for name in self.inputs] + [kept.get("y"), dy]
        grads = []
        for name, shape in zip(self.inputs, shapes):
            rule = self._backward.get(name)
            grads.append(None if rule is None or shape is None else fit_gradient(np.asarray(rule(*env)), shape))
        return grads[0] if len(grads) == 1 else tuple(grads)


class Add(Formula):
    """y = a + b.   Each input moves y one for one: dL/da = dL/dy, dL/db = dL/dy."""

    inputs = ("a", "b")
    forward_formula = "a + b"
    backward_formulas = {"a": "gy", "b": "gy"}


class Sub(Formula):
    """y = a - b.   dy/da = 1, dy/db = -1:  dL/da = dL/dy, dL/db = -dL/dy."""

    inputs = ("a", "b")
    forward_formula = "a - b"
    backward_formulas = {"a": "gy", "b": "-gy"}


class Mul(Formula):
    """y = a * b (elementwise).   dy/da = b, dy/db = a:  dL/da = dL/dy * b, dL/db = dL/dy * a."""

    inputs = ("a", "b")
    forward_formula = "a * b"
    backward_formulas = {"a": "gy * b", "b": "gy * a"}


class Div(Formula):
    """y = a / b.   dy/da = 1/b, dy/db = -a/b^2:  dL/da = dL/dy / b, dL/db = -dL/dy * a / b^2."""

    inputs = ("a", "b")
    forward_formula = "a / b"
    backward_formulas = {"a": "gy / b", "b": "-gy * a / b ** 2"}


class Negate(Formula):
    """y = -x.   dL/dx = -dL/dy."""

    forward_formula = "-x"
    backward_formulas = {"x": "-gy"}


class Exp(Formula):
    """y = e^x.   (e^x)' = e^x = y, so dL/dx = dL/dy * y: the output is all backward needs."""

    forward_formula = "exp(x)"
    backward_formulas = {"x": "gy * y"}


class Log(Formula):
    """y = log x.   (log x)' = 1/x:  dL/dx = dL/dy / x.

    Applied to a softmax output the notation computes log_softmax of the logits instead (the same
    number, but no log(0), and a gradient that goes straight to the logits)."""

    forward_formula = "log(x)"
    backward_formulas = {"x": "gy / x"}
    note = "for a softmax output x = softmax(z): dL/dz = {gy} - x * sum_k {gy}_k"


class Huber(Formula):
    """y = x^2 / 2 for |x| <= 1, |x| - 1/2 beyond (smooth L1, delta = 1): ``huber(q_t[a_t] - y_t)``, DQN's loss
    written as an objective. Quadratic near zero, linear far out, so a large error cannot blow up the step.

    dy/dx = x inside, sign(x) outside = clip(x, -1, 1):  dL/dx = dL/dy * clip(x, -1, 1)."""

    forward_formula = "where(x * x <= 1, 0.5 * x * x, sqrt(x * x) - 0.5)"
    backward_formulas = {"x": "gy * maximum(minimum(x, 1), -1)"}


class Identity(Formula):
    """y = x, dL/dx = dL/dy (the notation's ``nograd(x)`` runs it with ``infer``: no gradient at all)."""

    forward_formula = "x"
    backward_formulas = {"x": "gy"}


class PickEntry(Formula):
    """y_n = x_n[i_n] for integer labels i (N,): ``pi_t[a_t]``, the probability of the action taken.

    Only the picked entry moves y: dL/dx_n = one_hot(i_n) * dL/dy_n. The labels take no gradient."""

    inputs = ("x", "i")
    labels = ("i",)
    forward_formula = "pick(x, i)"
    backward_formulas = {"x": "one_hot(i, x) * gy"}


class RowSum(Formula):
    """y_n = sum_k x_nk.   dy_n/dx_nk = 1:  dL/dx_nk = dL/dy_n, copied to every feature."""

    forward_formula = "sum_k(x)"
    backward_formulas = {"x": "gy"}
    note = "copied to every feature"


class RowMax(Formula):
    """y_n = max_k x_nk (``max(Q_{t+1})`` in a Q-learning target).

    Only the largest entry moves y: dL/dx_nk = dL/dy_n where x_nk = y_n, else 0 (a tie, where the
    maximum has no derivative, sends the gradient to every tied entry)."""

    forward_formula = "max_k(x)"
    backward_formulas = {"x": "(x == y) * gy"}


class ArgMax(Module):
    """i_n = argmax_k x_nk, an integer per row (``argmax(q_{t+1})``: Double DQN's choice of action). An index
    has no derivative, so there is no backward pass and forward keeps nothing."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).argmax(axis=-1)

    forward = infer


class OneHot(Module):
    """y_n = e_{i_n}, the unit vector of label i_n, with ``classes`` entries. Labels are data: there is
    no gradient to take, so forward keeps nothing."""

    def __init__(self, classes: int | None = None) -> None:
        super().__init__()
        self.classes = classes  # the notation sets it by size inference (or from the prediction it meets)

    def infer(self, labels: Any, classes: int | None = None) -> np.ndarray:
        classes = classes or self.classes
        if classes is None:
            raise ValueError("one_hot: the number of classes is unknown (compare it with a prediction)")
        return np.eye(classes, dtype=np.float32)[as_labels(labels)]

    forward = infer
