"""Formulas: a layer's forward and backward maths written once, run by numpy and printed as maths.

A formula is a Python expression over named arrays. The backward pass of y = e^x is ``"gy * y"``
(dL/dx = dL/dy * y), of y = a / b with respect to b ``"-gy * a / b ** 2"``. One string serves three
readers:

* ``compile_formula`` turns it into a numpy function once: what the layer runs (nn/elementwise.py);
* ``render`` prints it in the notation of docs/backprop.md with every name replaced by what it stands
  for -- ``dL/dh * (1 - h^2)`` -- which is how ``python -m rlscratch.notation`` explains a program;
* generated code (``python -m rlscratch.notation emit``) writes it out as a line of Python.

So a derivative is written exactly once, and the explanation cannot drift from what runs.

The names a formula may use: its inputs (``x``; ``a``, ``b``), its output ``y``, the upstream gradient
``gy`` (dL/dy), a layer's parameters or constants (``W``, ``alpha``), and the helpers below. Their
printed forms:

    a @ b    a b           (a matrix product)        v.T       v^T
    v ** 2   v^2                                      (v > 0)   [v > 0]   (Iverson bracket: 1 or 0)
    sum_n(v) sum_n v       (over the batch)           sum_k(v)  sum_k v   (over the features, kept (N, 1))
    max_k(v) max v         (over the features)        pick(v, i)  v[i]    (each row's entry i_n, (N, 1))
    one_hot(i, v)  one_hot(i)  (rows e_{i_n}, as wide as v)
    where(c, a, b) (a if c else b)
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping

import numpy as np

# The helpers, as source: executed here for the layers, and copied verbatim into generated code so that
# a generated module needs numpy only.
HELPERS_SOURCE = '''\
def sum_n(v):
    return v.sum(axis=0)


def sum_k(v):
    return v.sum(axis=-1, keepdims=True)


def max_k(v):
    return v.max(axis=-1, keepdims=True)


def pick(v, i):
    i = np.asarray(i).reshape(len(i)).astype(np.int64)
    return v[np.arange(len(i)), i][:, None]


def one_hot(i, v):
    i = np.asarray(i).reshape(len(i)).astype(np.int64)
    out = np.zeros(v.shape, dtype=v.dtype)
    out[np.arange(len(i)), i] = 1
    return out


def sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
'''

NAMESPACE: dict[str, object] = {"np": np, "exp": np.exp, "log": np.log, "tanh": np.tanh, "maximum": np.maximum,
                                "minimum": np.minimum,
                                "where": np.where, "sqrt": np.sqrt}
exec(HELPERS_SOURCE, NAMESPACE)  # noqa: S102 -- our own source text above, nothing from outside

# numpy names a formula may call in generated code, written as np.<name> there
NUMPY_FUNCTIONS = ("exp", "log", "tanh", "maximum", "minimum", "where", "sqrt")


def names_in(formula: str) -> set[str]:
    """The variables a formula reads (not the helpers it calls)."""
    tree = ast.parse(formula, mode="eval")
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} - called


def compile_formula(formula: str, args: tuple[str, ...]) -> Callable[..., np.ndarray]:
    """A numpy function of ``args`` (positional, in that order) computing the formula."""
    return eval(compile(f"lambda {', '.join(args)}: {formula}", f"<formula {formula}>", "eval"), NAMESPACE)  # noqa: S307


def python(formula: str, names: Mapping[str, str] | None = None) -> str:
    """The formula as a line of generated code: numpy's functions spelled np.exp, np.log, ..., and each
    name replaced by the Python expression in ``names`` (a name not in it is kept)."""
    tree = ast.parse(formula, mode="eval")
    names = names or {}

    class Rewrite(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            node.args = [self.visit(a) for a in node.args]
            if isinstance(node.func, ast.Name) and node.func.id in NUMPY_FUNCTIONS:
                node.func = ast.Attribute(ast.Name("np", ast.Load()), node.func.id, ast.Load())
            return node

        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id in names:
                return ast.parse(names[node.id], mode="eval").body
            return node

    return ast.unparse(Rewrite().visit(tree))


# -- printing ----------------------------------------------------------------------------------------
_BINARY = {ast.Add: ("+", 1), ast.Sub: ("-", 1), ast.Mult: ("*", 2), ast.Div: ("/", 2), ast.MatMult: ("", 2),
           ast.Pow: ("^", 4)}
_COMPARE = {ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<=", ast.Eq: "=", ast.NotEq: "!="}
_CALLS = {"sum_n": "sum_n {0}", "sum_k": "sum_k {0}", "max_k": "max {0}", "pick": "{0}[{1}]",
          "one_hot": "one_hot({0})", "sum_pixels": "sum_{{n,i,j}} {0}", "mean_pixels": "mean_{{n,i,j}} {0}"}
_ATOM = 9


def render(formula: str, names: Mapping[str, str]) -> str:
    """The formula in the notation of docs/backprop.md, each name replaced by ``names[name]`` (a name
    not in ``names`` is printed as itself). A replacement is taken as one unit: wrap an expression in
    parentheses before passing it."""
    return _render(ast.parse(formula, mode="eval").body, names)[0]


def _render(node: ast.AST, names: Mapping[str, str]) -> tuple[str, int]:
    """(text, binding strength): a child binding less tightly than its parent gets parentheses."""
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id), _ATOM
    if isinstance(node, ast.Constant):
        value = node.value
        return (str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)), _ATOM
    if isinstance(node, ast.Attribute) and node.attr == "T":
        return _wrap(node.value, names, _ATOM) + "^T", _ATOM
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return "-" + _wrap(node.operand, names, 3), 3
    if isinstance(node, ast.BinOp):
        symbol, strength = _BINARY[type(node.op)]
        # a - (b - c), a / (b * c): the right side needs parentheses at equal strength too
        right_strength = strength + 1 if isinstance(node.op, (ast.Sub, ast.Div)) else strength
        left, right = _wrap(node.left, names, strength), _wrap(node.right, names, right_strength)
        if isinstance(node.op, ast.Pow):
            return f"{left}^{right}", strength
        return (f"{left} {right}" if not symbol else f"{left} {symbol} {right}"), strength
    if isinstance(node, ast.Compare):
        return "[" + _compare(node, names) + "]", _ATOM
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        fn = node.func.id
        if fn == "where":
            cond, a, b = node.args
            text = _compare(cond, names) if isinstance(cond, ast.Compare) else _render(cond, names)[0]
            return f"({_render(a, names)[0]} if {text} else {_render(b, names)[0]})", _ATOM
        if fn in _CALLS:
            args = [_wrap(a, names, _ATOM) for a in node.args]
            return _CALLS[fn].format(*args), (_ATOM if _CALLS[fn].endswith((")", "]")) else 2)
        return f"{fn}({', '.join(_render(a, names)[0] for a in node.args)})", _ATOM
    raise ValueError(f"cannot print {ast.unparse(node)!r} in a formula")


def _wrap(node: ast.AST, names: Mapping[str, str], strength: int) -> str:
    text, own = _render(node, names)
    return text if own >= strength else f"({text})"


def _compare(node: ast.Compare, names: Mapping[str, str]) -> str:
    parts = [_render(node.left, names)[0]]
    for op, right in zip(node.ops, node.comparators):
        parts += [_COMPARE[type(op)], _render(right, names)[0]]
    return " ".join(parts)
