"""Compile an arrow-notation program into a Module that trains.

The pipeline, each step a section of this file:

1. **Functions** the notation adds to the core: elementwise arithmetic (``+ - * /``, ``exp``, ``log``),
   picking an entry (``pi_t[a_t]``), row sums and maxima, one-hot. Each is a small ``Module`` with its
   forward and backward written out, exactly like the core's layers. Dense layers, activations,
   concatenation and dropout *are* the core's modules (``nn.Linear``, ``nn.ReLU``, ``nn.Concat``...).
2. **Lowering** turns the syntax tree into *ops*: one op per function application, reading and writing
   *refs* (a state such as ``h_{t-1}``, a macro's local, an unnamed intermediate, or a constant).
   Every arrow of a chain becomes a *block*: the ops that define its target state(s).
3. **Analysis** decides what the program means as a model: which names are states indexed by a
   context (``h_t``, ``h_0``), which are data, which states are the model's outputs, which data are its
   inputs (needed for the outputs) and which are targets (needed only by the losses). Then sizes are
   inferred, in both directions, until nothing changes; parameters are created with those sizes.
4. **Evaluation** (``_Pass``) computes a state at a context on demand: it finds the block defining
   it, first computes the states that block reads (iteratively, so a recurrence over 10,000 steps needs
   no deep recursion), then runs the block's ops. Ops that need a gradient call the module's
   ``forward`` and are recorded on a *tape*; the rest call ``infer`` and keep nothing.
5. **Backward** walks the tape in reverse and calls each module's ``backward``: because the tape is
   the exact reverse of the forward calls, every module's stack of saved values pops in the right
   order, which makes the same parameter at every time step (backprop through time) just work.
6. **Losses** (``=>`` and ``$``) are evaluated per context after the forward pass; their gradients
   are injected into the forward graph's nodes -- a softmax against a one-hot straight into the
   logits, as ``p - y`` (docs/backprop.md) -- and the tape does the rest.

``explain`` writes the same ops out as text: the forward pass, the loss and the backward pass one line
per step, for the ``python -m rlscratch.notation`` command.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlscratch import nn
from rlscratch.nn.module import Module

from .parser import (
    BinOp,
    Call,
    Compose,
    Concat,
    Decl,
    Expr,
    Fn,
    FnCall,
    FnDecl,
    FnRef,
    Index,
    Macro,
    Neg,
    NotationError,
    Number,
    Pick,
    Program,
    State,
    Statement,
    format_expr,
    format_fn,
    format_program,
    format_statement,
    parse,
    split_state_name,
)

SCALAR = 0  # the "size" of a plain number: it broadcasts against any state


# =================================================================================================
# 1. Functions beyond the core's layers
# =================================================================================================
def _operand(x: Any) -> Any:
    """Integer data (labels, done flags) entering arithmetic become a float column (N, 1), so that
    ``1 - d_t`` broadcasts against a (N, 1) value instead of making an (N, N) table."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
        x = x.astype(np.float32)
        return x[:, None] if x.ndim == 1 else x
    return x


def _shape(x: Any) -> tuple[int, ...] | None:
    """The shape to reduce a gradient to; None for a plain number, which gets no gradient."""
    return x.shape if isinstance(x, np.ndarray) else None


def _reduce(grad: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray | None:
    """Sum a gradient over the axes its operand was broadcast along ((N, 1) against (N, K): sum over k)."""
    if shape is None:
        return None
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _labels(x: Any) -> np.ndarray:
    """Integer labels (N,) from labels or a float column of whole numbers."""
    array = np.asarray(x)
    return array.reshape(array.shape[0]).astype(np.int64)


class Add(Module):
    """y = a + b.   Backward: dL/da = dL/dy,  dL/db = dL/dy  (each summed over its broadcast axes)."""

    def infer(self, a: Any, b: Any) -> Any:
        return _operand(a) + _operand(b)

    def forward(self, a: Any, b: Any) -> Any:
        a, b = _operand(a), _operand(b)
        self._saved.append((_shape(a), _shape(b)))
        return a + b

    def backward(self, dy: np.ndarray) -> tuple:
        sa, sb = self._saved.pop()
        return _reduce(dy, sa), _reduce(dy, sb)


class Sub(Module):
    """y = a - b.   Backward: dL/da = dL/dy,  dL/db = -dL/dy."""

    def infer(self, a: Any, b: Any) -> Any:
        return _operand(a) - _operand(b)

    def forward(self, a: Any, b: Any) -> Any:
        a, b = _operand(a), _operand(b)
        self._saved.append((_shape(a), _shape(b)))
        return a - b

    def backward(self, dy: np.ndarray) -> tuple:
        sa, sb = self._saved.pop()
        return _reduce(dy, sa), (None if sb is None else _reduce(-dy, sb))


class Mul(Module):
    """y = a * b (elementwise).   Backward: dL/da = dL/dy * b,  dL/db = dL/dy * a."""

    def infer(self, a: Any, b: Any) -> Any:
        return _operand(a) * _operand(b)

    def forward(self, a: Any, b: Any) -> Any:
        a, b = _operand(a), _operand(b)
        self._saved.append((a, b))
        return a * b

    def backward(self, dy: np.ndarray) -> tuple:
        a, b = self._saved.pop()
        da = None if _shape(a) is None else _reduce(dy * b, a.shape)
        db = None if _shape(b) is None else _reduce(dy * a, b.shape)
        return da, db


class Div(Module):
    """y = a / b.   Backward: dL/da = dL/dy / b,  dL/db = -dL/dy * a / b^2 = -dL/dy * y / b."""

    def infer(self, a: Any, b: Any) -> Any:
        return _operand(a) / _operand(b)

    def forward(self, a: Any, b: Any) -> Any:
        a, b = _operand(a), _operand(b)
        y = a / b
        self._saved.append((a, b, y))
        return y

    def backward(self, dy: np.ndarray) -> tuple:
        a, b, y = self._saved.pop()
        da = None if _shape(a) is None else _reduce(dy / b, a.shape)
        db = None if _shape(b) is None else _reduce(-dy * y / b, b.shape)
        return da, db


class Negate(Module):
    """y = -x.   Backward: dL/dx = -dL/dy."""

    def infer(self, x: Any) -> Any:
        return -_operand(x)

    def forward(self, x: Any) -> Any:
        self._saved.append(None)
        return self.infer(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self._saved.pop()
        return -dy


class Exp(Module):
    """y = e^x.   Backward: dL/dx = dL/dy * y."""

    def infer(self, x: Any) -> Any:
        return np.exp(_operand(x))

    def forward(self, x: Any) -> Any:
        y = self.infer(x)
        self._saved.append(y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self._saved.pop()


class Log(Module):
    """y = log x.   Backward: dL/dx = dL/dy / x.

    Applied to a softmax output, the compiler computes log_softmax of the logits instead (the same
    number, but no log(0) and a gradient that goes straight to the logits)."""

    def infer(self, x: Any) -> Any:
        return np.log(_operand(x))

    def forward(self, x: Any) -> Any:
        x = _operand(x)
        self._saved.append(x)
        return np.log(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy / self._saved.pop()


class Identity(Module):
    """y = x (``nograd(x)`` in an expression: the value passes, the gradient does not)."""

    def infer(self, x: Any) -> Any:
        return x

    def forward(self, x: Any) -> Any:
        self._saved.append(None)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self._saved.pop()
        return dy


class PickEntry(Module):
    """y_n = x_n[i_n] for integer i (N,):  ``pi_t[a_t]``, the probability of the action taken.
    Backward: dL/dx_n = one_hot(i_n) * dL/dy_n  (only the picked entry receives gradient)."""

    def infer(self, x: np.ndarray, index: Any) -> np.ndarray:
        index = _labels(index)
        return x[np.arange(len(index)), index][:, None]

    def forward(self, x: np.ndarray, index: Any) -> np.ndarray:
        index = _labels(index)
        self._saved.append((x.shape, x.dtype, index))
        return x[np.arange(len(index)), index][:, None]

    def backward(self, dy: np.ndarray) -> tuple:
        shape, dtype, index = self._saved.pop()
        dx = np.zeros(shape, dtype=np.result_type(dtype, dy.dtype))
        dx[np.arange(len(index)), index] = dy[:, 0]
        return dx, None


class RowMax(Module):
    """y_n = max_k x_nk  (e.g. max(Q_{t+1}) in a Q-learning target).
    Backward: dL/dx_nk = dL/dy_n if k is the (first) argmax, else 0."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        return x.max(axis=-1, keepdims=True)

    def forward(self, x: np.ndarray) -> np.ndarray:
        arg = x.argmax(axis=-1)
        self._saved.append((x.shape, arg))
        return np.take_along_axis(x, arg[:, None], axis=-1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        shape, arg = self._saved.pop()
        dx = np.zeros(shape, dtype=dy.dtype)
        dx[np.arange(shape[0]), arg] = dy[:, 0]
        return dx


class RowSum(Module):
    """y_n = sum_k x_nk.   Backward: dL/dx_nk = dL/dy_n  (copied to every k)."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        return x.sum(axis=-1, keepdims=True)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._saved.append(x.shape)
        return self.infer(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return np.broadcast_to(dy, self._saved.pop()).copy()


class OneHot(Module):
    """y_n = e_{i_n}, the unit vector of label i_n. Labels are data: there is no gradient to take."""

    def __init__(self) -> None:
        super().__init__()
        self.classes: int | None = None  # set by size inference (or by the loss, from the prediction)

    def infer(self, labels: Any, classes: int | None = None) -> np.ndarray:
        classes = classes or self.classes
        if classes is None:
            raise NotationError("one_hot: the number of classes is unknown (compare it with a prediction)")
        return np.eye(classes, dtype=np.float32)[_labels(labels)]

    forward = infer


BINARY = {"+": Add, "-": Sub, "*": Mul, "/": Div}
ACTIVATIONS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "log_softmax")
UNARY = {**{name: None for name in ACTIVATIONS}, "exp": Exp, "log": Log, "sum": RowSum, "max": RowMax}
NOT_YET = {
    "conv": "the core in this tree has no Conv2d module yet",
    "batch_norm": "the core in this tree has no BatchNorm module yet",
}
KNOWN_FUNCTIONS = (set(UNARY) | {"dense", "dropout", "add", "mul", "one_hot", "nograd", "clip_grad", "adam_opt"}
                   | set(NOT_YET))


def _unary_module(name: str, args: Sequence[float] = ()) -> Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(*args)
    if name == "elu":
        return nn.ELU(*args)
    if name in ACTIVATIONS:
        return nn.get_activation(name)
    return UNARY[name]()


# =================================================================================================
# 2. Lowering: syntax tree -> ops over refs
# =================================================================================================
@dataclass(eq=False)
class Ref:
    """What an op reads or writes. ``kind``: "state" (a state of the program, resolved against the
    current context at run time), "local" (a state inside a macro), "tmp" (an unnamed intermediate
    such as ``M_1(X)``) or "const" (a number). ``label`` is how the printer writes it."""

    kind: str
    name: str = ""
    index: Index | None = None
    value: float = 0.0
    label: str = ""
    scope: str | None = None  # the macro a local or tmp belongs to
    producer: Op | None = field(default=None, repr=False)
    pos: tuple[int, int] = (0, 0)  # where a state was written


@dataclass(eq=False)
class Op:
    fn: str  # "dense", "relu", "+", "concat", "pick", "macro", "alias", ...
    inputs: list[Ref]
    outputs: list[Ref]
    module: Module | None = None
    param: str | None = None  # dense: the parameter's name
    macro: MacroDef | None = None
    nograd: bool = False  # computed with infer: no gradient flows back through it
    pos: tuple[int, int] = (0, 0)
    scope: str | None = None
    text: str = ""  # the expression it computes, as written (for the printer)
    fused: Module | None = None  # log: the LogSoftmax used when its input is a softmax output


@dataclass(eq=False)
class Block:
    """The ops of one arrow (or binding) of the main program, and the state(s) it defines."""

    ops: list[Op]
    targets: list[Ref]
    over_time: bool
    statement: Statement
    reads: list[Ref] = field(default_factory=list)


@dataclass(eq=False)
class MacroDef:
    name: str
    params: list[str]  # the written forms of its arguments, e.g. ["x_t", "h_{t-1}"]
    ops: list[Op]
    returns: list[str]
    param_names: set[str]  # parameters used inside (for clip_grad / adam_opt groups)
    pos: tuple[int, int]


@dataclass(eq=False)
class LossDef:
    kind: str  # "=>" or "$"
    over_time: bool
    statement: Statement
    pred_ops: list[Op]  # "=>": the prediction (when it is an expression); "$": the objective E
    pred: Ref
    target_ops: list[Op] = field(default_factory=list)
    target: Ref | None = None
    labels: Ref | None = None  # "=> one_hot(labels)"
    leaf: Ref | None = None  # "$": the state whose log-probability is weighted


@dataclass(eq=False)
class ParamSpec:
    """A named parameter (a dense layer): sizes and initialiser, then its Linear module."""

    name: str
    n_out: int | None = None
    n_in: int | None = None
    init: str | None = None
    gain: float | None = None
    bias: bool = True
    pos: tuple[int, int] = (0, 0)
    module: nn.Linear | None = None
    implicit: bool = False  # used without a declaration (a capitalised name): a dense layer, sized by inference


@dataclass(eq=False)
class Group:
    """``clip_grad(F, c)`` or ``adam_opt(F, lr=...)``: what to do with the parameters inside F."""

    kind: str  # "clip" or "adam"
    params: list[str]
    options: dict[str, Any]
    text: str


def _mentions_t(statement: Statement) -> bool:
    """Does a statement run over time, i.e. does any state in it carry an index built on t?"""
    found = False

    def visit(node: Any) -> None:
        nonlocal found
        if isinstance(node, State):
            found = found or (node.index is not None and node.index.base == "t")
        elif isinstance(node, (BinOp,)):
            visit(node.left)
            visit(node.right)
        elif isinstance(node, (Neg,)):
            visit(node.operand)
        elif isinstance(node, Pick):
            visit(node.value)
            visit(node.index)
        elif isinstance(node, Concat):
            for part in node.parts:
                visit(part)
        elif isinstance(node, Call):
            for arg in node.args:
                visit(arg)

    for source in statement.sources:
        visit(source)
    for link in statement.links:
        for target in link.targets:
            visit(target)
    if statement.loss is not None:
        visit(statement.loss.expr)
    return found


def _log_inside_picks(expr: Expr) -> Expr:
    """Rewrite log(x[i]) as log(x)[i] (the same number): then a log applied to a softmax output can be
    computed as log_softmax of its logits."""
    if isinstance(expr, Call) and expr.fn == "log" and len(expr.args) == 1 and isinstance(expr.args[0], Pick):
        pick = expr.args[0]
        return Pick(_log_inside_picks(Call("log", (pick.value,), expr.pos)), pick.index, pick.pos)
    if isinstance(expr, BinOp):
        return BinOp(expr.op, _log_inside_picks(expr.left), _log_inside_picks(expr.right), expr.pos)
    if isinstance(expr, Neg):
        return Neg(_log_inside_picks(expr.operand), expr.pos)
    if isinstance(expr, Call):
        return Call(expr.fn, tuple(_log_inside_picks(a) for a in expr.args), expr.pos)
    if isinstance(expr, Pick):
        return Pick(_log_inside_picks(expr.value), expr.index, expr.pos)
    return expr


def _option(value: Any) -> Any:
    """A keyword argument's value: a number, true/false, or a bare name (init=xavier)."""
    if isinstance(value, Number):
        return int(value.value) if value.value.is_integer() and "." not in value.text else value.value
    if isinstance(value, FnRef):
        return {"true": True, "false": False}.get(value.name, value.name)
    return format_fn(value)


_ATOM = re.compile(r"-?[0-9.]+(e-?[0-9]+)?|[A-Za-z][A-Za-z0-9_]*(_\{[^}]*\})?(\.[A-Za-z0-9_]+)?")
_CALL = re.compile(r"[A-Za-z][A-Za-z0-9_]*(_\{[^}]*\})?\(")


def _paren(label: str) -> str:
    """Wrap a label that is an expression, so ``dL/d(r_t * b_t)`` and ``(a + b) W^T`` read right; a name
    (``h_{t-1}``) or a call (``relu(M_1(X))``) needs no parentheses."""
    if _ATOM.fullmatch(label):
        return label
    match = _CALL.match(label)
    if match and label.endswith(")"):
        depth = 0
        for i in range(match.end() - 1, len(label)):
            depth += {"(": 1, ")": -1}.get(label[i], 0)
            if depth == 0:
                if i == len(label) - 1:
                    return label
                break
    return f"({label})"


class Lowerer:
    """Turns a Program into blocks, macros, losses, parameters and groups (no numbers yet)."""

    def __init__(self, program: Program, rng: np.random.Generator | None) -> None:
        self.rng = rng
        self.params: dict[str, ParamSpec] = {}
        self.param_order: list[str] = []  # order of first use: creation order, hence initialisation order
        self.aliases: dict[str, FnRef | FnCall] = {}  # D: dropout(0.5) -- a name for a configured function
        self.state_sizes: dict[str, tuple[int, tuple[int, int]]] = {}
        self.macro_asts: dict[str, Macro] = {}
        self.macros: dict[str, MacroDef] = {}
        self.blocks: list[Block] = []
        self.losses: list[LossDef] = []
        self.groups: list[Group] = []
        self.modules: list[Module] = []  # every op's module, for train()/eval() and the saved stacks
        self._collectors: list[set[str]] = []
        self._lowering: list[str] = []  # macros being lowered (to catch a macro that calls itself)
        self._locals: set[str] | None = None  # inside a macro: the locals defined so far
        self._scope: str | None = None
        self._tmp_count = 0

        for item in program.items:
            if isinstance(item, Decl):
                self.declare(item)
            elif isinstance(item, Macro):
                if item.name in self.macro_asts:
                    raise NotationError(f"macro '{item.name}' is defined twice", *item.pos)
                self.macro_asts[item.name] = item
        for item in program.items:
            if isinstance(item, Statement):
                self.lower_statement(item)
        for name in self.macro_asts:  # a macro never used is still checked (and printed)
            self.macro(name, self.macro_asts[name].pos)

    # -- declarations ---------------------------------------------------------------------------
    def declare(self, decl: Decl) -> None:
        for name in decl.names:
            if isinstance(decl.spec, Number):
                if not decl.spec.value.is_integer() or decl.spec.value < 1:
                    raise NotationError(f"the size of {name} must be a positive integer", *decl.spec.pos)
                self.state_sizes[name] = (int(decl.spec.value), decl.pos)
            else:
                self.declare_fn(name, decl.spec, decl.pos)

    def declare_fn(self, name: str, spec: FnRef | FnCall, pos: tuple[int, int]) -> None:
        if name in self.params or name in self.aliases:
            raise NotationError(f"'{name}' is declared twice", *pos)
        if spec.name == "dense":
            args = spec.args if isinstance(spec, FnCall) else ()
            kwargs = dict(spec.kwargs) if isinstance(spec, FnCall) else {}
            unknown = set(kwargs) - {"init", "gain", "bias"}
            if unknown:
                raise NotationError(f"dense takes a size and init=, gain=, bias=; not '{sorted(unknown)[0]}='", *pos)
            n_out = None
            if args:
                if not (isinstance(args[0], Number) and args[0].value.is_integer() and args[0].value >= 1):
                    raise NotationError(f"dense(n): n must be a positive integer, got {format_fn(args[0])}", *pos)
                n_out = int(args[0].value)
            self.params[name] = ParamSpec(name, n_out=n_out, pos=pos,
                                          init=_option(kwargs["init"]) if "init" in kwargs else None,
                                          gain=_option(kwargs["gain"]) if "gain" in kwargs else None,
                                          bias=_option(kwargs["bias"]) if "bias" in kwargs else True)
        elif spec.name in NOT_YET:
            raise NotationError(f"{spec.name} does not compile yet: {NOT_YET[spec.name]}", *pos)
        elif spec.name in KNOWN_FUNCTIONS:
            self.aliases[name] = spec
        else:
            raise NotationError(f"unknown function '{spec.name}' in the declaration of {name}"
                                f"{_did_you_mean(spec.name, KNOWN_FUNCTIONS)}", *pos)

    # -- refs -----------------------------------------------------------------------------------
    def tmp(self, label: str) -> Ref:
        self._tmp_count += 1
        return Ref("tmp", name=f"~{self._tmp_count}", label=label, scope=self._scope)

    def emit(self, ops: list[Op], fn: str, inputs: list[Ref], label: str, module: Module | None = None,
             pos: tuple[int, int] = (0, 0), nograd: bool = False, **extra: Any) -> Ref:
        out = self.tmp(label)
        op = Op(fn, inputs, [out], module=module, nograd=nograd, pos=pos, scope=self._scope, text=label, **extra)
        out.producer = op
        if module is not None:
            self.modules.append(module)
        if fn == "log":
            op.fused = nn.LogSoftmax()
            self.modules.append(op.fused)
        ops.append(op)
        return out

    def bind(self, value: Ref, target: Ref, ops: list[Op], pos: tuple[int, int]) -> None:
        """Make ``target`` the state a link defines: rename the op's output, or alias a state/constant."""
        producer = value.producer
        if value.kind == "tmp" and producer is not None and producer in ops and value in producer.outputs:
            producer.outputs[producer.outputs.index(value)] = target
            target.producer = producer
            value.producer = None
        else:
            op = Op("alias", [value], [target], pos=pos, scope=self._scope)
            target.producer = op
            ops.append(op)

    def state_ref(self, state: State) -> Ref:
        if self._locals is None:
            return Ref("state", state.name, state.index, label=str(state), pos=state.pos)
        key = str(state)
        if key not in self._locals:
            raise NotationError(f"macro '{self._scope}' reads {key}, which is neither one of its arguments nor "
                                "defined above it in the macro", *state.pos)
        return Ref("local", key, label=key, scope=self._scope)

    # -- expressions ----------------------------------------------------------------------------
    def expr(self, expr: Expr, ops: list[Op], nograd: bool = False) -> Ref:
        if isinstance(expr, State):
            return self.state_ref(expr)
        if isinstance(expr, Number):
            return Ref("const", value=expr.value, label=str(expr))
        label = format_expr(expr)
        if isinstance(expr, BinOp):
            a, b = self.expr(expr.left, ops, nograd), self.expr(expr.right, ops, nograd)
            if a.kind == b.kind == "const":  # fold 1 - 0.5 at compile time
                value = {"+": a.value + b.value, "-": a.value - b.value, "*": a.value * b.value,
                         "/": a.value / b.value if b.value else math.inf}[expr.op]
                return Ref("const", value=value, label=label)
            return self.emit(ops, expr.op, [a, b], label, BINARY[expr.op](), expr.pos, nograd)
        if isinstance(expr, Neg):
            a = self.expr(expr.operand, ops, nograd)
            if a.kind == "const":
                return Ref("const", value=-a.value, label=label)
            return self.emit(ops, "neg", [a], label, Negate(), expr.pos, nograd)
        if isinstance(expr, Concat):
            parts = [self.expr(p, ops, nograd) for p in expr.parts]
            return self.emit(ops, "concat", parts, label, nn.Concat(), expr.pos, nograd)
        if isinstance(expr, Pick):
            value, index = self.expr(expr.value, ops, nograd), self.expr(expr.index, ops, nograd)
            return self.emit(ops, "pick", [value, index], label, PickEntry(), expr.pos, nograd)
        # a call: a builtin on one argument, or a parameter/macro written as a function
        args = [self.expr(a, ops, nograd) for a in expr.args]
        if expr.fn == "one_hot":
            self._one_arg(expr.fn, args, expr.pos)
            return self.emit(ops, "one_hot", args, label, OneHot(), expr.pos, nograd=True)
        if expr.fn == "nograd":
            self._one_arg(expr.fn, args, expr.pos)
            return self.emit(ops, "nograd", args, label, Identity(), expr.pos, nograd=True)
        outs = self.apply(FnRef(expr.fn, expr.pos), args, ops, nograd)
        if len(outs) != 1:
            raise NotationError(f"{expr.fn} returns {len(outs)} states; an expression needs one", *expr.pos)
        outs[0].label = label
        return outs[0]

    @staticmethod
    def _one_arg(name: str, refs: list[Ref], pos: tuple[int, int]) -> None:
        if len(refs) != 1:
            raise NotationError(f"{name} takes one state, got {len(refs)} (join states with | to concatenate "
                                "them: X_t|h_{t-1})", *pos)

    # -- functions (inside --[ ]) ---------------------------------------------------------------
    def apply(self, fn: Fn, refs: list[Ref], ops: list[Op], nograd: bool = False) -> list[Ref]:
        if isinstance(fn, Compose):
            for part in fn.parts:
                refs = self.apply(part, refs, ops, nograd)
            return refs
        if isinstance(fn, FnDecl):
            self.declare_fn(fn.name, fn.spec, fn.pos)
            return self.apply(FnRef(fn.name, fn.pos), refs, ops, nograd)
        if isinstance(fn, FnCall):
            return self.apply_call(fn, refs, ops, nograd)
        name, pos = fn.name, fn.pos
        if name in self.macro_asts:
            return self.apply_macro(name, refs, ops, pos, nograd)
        if name in self.aliases:
            return self.apply(self.aliases[name], refs, ops, nograd)
        if name in UNARY:
            self._one_arg(name, refs, pos)
            return [self.emit(ops, name, refs, f"{name}({refs[0].label})", _unary_module(name), pos, nograd)]
        if name in ("one_hot", "nograd"):
            self._one_arg(name, refs, pos)
            module = OneHot() if name == "one_hot" else Identity()
            return [self.emit(ops, name, refs, f"{name}({refs[0].label})", module, pos, nograd=True)]
        if name in ("add", "mul"):
            if len(refs) < 2:
                raise NotationError(f"{name} combines two or more states: a, b --[{name}]-> c", *pos)
            out = refs[0]
            for ref in refs[1:]:
                symbol = "+" if name == "add" else "*"
                label = f"{_paren(out.label)} {symbol} {_paren(ref.label)}"
                out = self.emit(ops, symbol, [out, ref], label, BINARY[symbol](), pos, nograd)
            return [out]
        if name == "dense":
            raise NotationError("name the parameter and give its size: --[M_1: dense(128)]-> (or a line "
                                "'M_1: dense(128)')", *pos)
        if name in NOT_YET:
            raise NotationError(f"{name} does not compile yet: {NOT_YET[name]}", *pos)
        if name in KNOWN_FUNCTIONS:
            raise NotationError(f"{name} needs arguments, e.g. {name}(...)", *pos)
        if name not in self.params:
            if not name[0].isupper():
                raise NotationError(f"unknown function '{name}'{_did_you_mean(name, KNOWN_FUNCTIONS)} (a parameter "
                                    "name starts with a capital letter, e.g. M_1, or is declared: w: dense(64))",
                                    *pos)
            self.params[name] = ParamSpec(name, pos=pos, implicit=True)
        return [self.apply_dense(name, refs, ops, pos, nograd)]

    def apply_dense(self, name: str, refs: list[Ref], ops: list[Op], pos: tuple[int, int], nograd: bool) -> Ref:
        if len(refs) != 1:
            raise NotationError(f"parameter {name} reads one state, got {len(refs)}; concatenate them with |: "
                                f"X_t|h_{{t-1}} --[{name}]-> h_t", *pos)
        if name not in self.param_order:
            self.param_order.append(name)
        for collector in self._collectors:
            collector.add(name)
        return self.emit(ops, "dense", refs, f"{name}({refs[0].label})", None, pos, nograd, param=name)

    def apply_call(self, fn: FnCall, refs: list[Ref], ops: list[Op], nograd: bool) -> list[Ref]:
        name, pos = fn.name, fn.pos
        kwargs = {k: _option(v) for k, v in fn.kwargs}
        if name in ("nograd", "clip_grad", "adam_opt"):
            if not fn.args or isinstance(fn.args[0], Number):
                raise NotationError(f"{name} transforms a function: {name}(M_1) or {name}(M_1|relu)", *pos)
            inner = fn.args[0]
            if name == "nograd":
                return self.apply(inner, refs, ops, nograd=True)
            collector: set[str] = set()
            self._collectors.append(collector)
            try:
                outs = self.apply(inner, refs, ops, nograd)
            finally:
                self._collectors.pop()
            options: dict[str, Any] = {}
            if name == "clip_grad":
                extra = [_option(a) for a in fn.args[1:]]
                options["max_norm"] = float(kwargs.pop("max_norm", extra[0] if extra else 0.5))
            else:
                options["lr"] = float(kwargs.pop("lr", 1e-3))
            if kwargs:
                raise NotationError(f"{name} does not take '{sorted(kwargs)[0]}='", *pos)
            self.groups.append(Group("clip" if name == "clip_grad" else "adam", sorted(collector), options,
                                     format_fn(fn)))
            return outs
        if name == "dropout":
            p = _option(fn.args[0]) if fn.args else kwargs.get("p", 0.5)
            self._one_arg(name, refs, pos)
            if self.rng is None:
                rng = np.random.default_rng(0)  # analysis only (the CLI): never draws
            else:
                rng = self.rng
            try:
                module = nn.Dropout(float(p), rng)
            except ValueError as err:
                raise NotationError(str(err), *pos) from None
            return [self.emit(ops, "dropout", refs, f"dropout({refs[0].label})", module, pos, nograd, param=None)]
        if name in ("leaky_relu", "elu"):
            self._one_arg(name, refs, pos)
            args = [float(_option(a)) for a in fn.args]
            return [self.emit(ops, name, refs, f"{name}({refs[0].label})", _unary_module(name, args), pos, nograd)]
        if name == "dense":
            raise NotationError(f"name the parameter: --[M_1: {format_fn(fn)}]-> (or a line 'M_1: {format_fn(fn)}')",
                                *pos)
        if name in NOT_YET:
            raise NotationError(f"{name} does not compile yet: {NOT_YET[name]}", *pos)
        if name in self.params or name in self.macro_asts or name in UNARY:
            raise NotationError(f"{name} takes no arguments here: write --[{name}]->", *pos)
        raise NotationError(f"unknown function '{name}'{_did_you_mean(name, KNOWN_FUNCTIONS | set(self.macro_asts))}",
                            *pos)

    def apply_macro(self, name: str, refs: list[Ref], ops: list[Op], pos: tuple[int, int], nograd: bool) -> list[Ref]:
        macro = self.macro(name, pos)
        if len(refs) != len(macro.params):
            raise NotationError(f"macro {name} takes {len(macro.params)} argument(s) ({', '.join(macro.params)}), "
                                f"got {len(refs)}", *pos)
        # An argument written exactly like one of the macro's parameters binds to it (the notes write
        # `Enc: h_{t-1},x_t` and call it as `O_t,h_{t-1} --[Enc]->`); the others bind in order.
        bound: dict[str, Ref] = {}
        rest = []
        for ref in refs:
            if ref.label in macro.params and ref.label not in bound:
                bound[ref.label] = ref
            else:
                rest.append(ref)
        for param in macro.params:
            if param not in bound:
                bound[param] = rest.pop(0)
        inputs = [bound[p] for p in macro.params]
        for collector in self._collectors:
            collector.update(macro.param_names)
        outs = [self.tmp(f"{name}({', '.join(r.label for r in inputs)})" + (f"[{i}]" if len(macro.returns) > 1 else ""))
                for i in range(len(macro.returns))]
        op = Op("macro", inputs, outs, macro=macro, nograd=nograd, pos=pos, scope=self._scope)
        for out in outs:
            out.producer = op
        ops.append(op)
        return outs

    def macro(self, name: str, pos: tuple[int, int]) -> MacroDef:
        if name in self.macros:
            return self.macros[name]
        if name in self._lowering:
            raise NotationError(f"macro {name} uses itself (through {' -> '.join(self._lowering)})", *pos)
        ast = self.macro_asts[name]
        saved = (self._locals, self._scope, self._collectors)
        self._lowering.append(name)
        self._locals, self._scope, self._collectors = {str(p) for p in ast.params}, name, [set()]
        try:
            ops: list[Op] = []
            for statement in ast.body:
                if statement.loss is not None:
                    raise NotationError(f"macro {name} cannot hold a loss: attach => or $ where the macro is used",
                                        *statement.loss.pos)
                refs = [self.expr(s, ops) for s in statement.sources]
                for link in statement.links:
                    outs = self.apply(link.fn, refs, ops) if link.fn is not None else refs
                    self._check_count(link, outs)
                    targets = []
                    for out, target in zip(outs, link.targets):
                        key = str(target)
                        if key in self._locals:
                            raise NotationError(f"{key} is defined twice in macro {name} (states never change: "
                                                "give the new value a new name)", *target.pos)
                        ref = Ref("local", key, label=key, scope=name)
                        self.bind(out, ref, ops, link.pos)
                        self._locals.add(key)
                        targets.append(Ref("local", key, label=key, scope=name))
                    refs = targets
            for ret in ast.returns:
                if str(ret) not in self._locals:
                    raise NotationError(f"macro {name} returns {ret}, which it never defines", *ret.pos)
            params_used = self._collectors[0]
            macro = MacroDef(name, [str(p) for p in ast.params], ops, [str(r) for r in ast.returns], params_used,
                             ast.pos)
        finally:
            self._locals, self._scope, self._collectors = saved
            self._lowering.pop()
        for collector in self._collectors:
            collector.update(macro.param_names)
        self.macros[name] = macro
        return macro

    @staticmethod
    def _check_count(link: Any, outs: list[Ref]) -> None:
        if len(outs) != len(link.targets):
            what = format_fn(link.fn) if link.fn is not None else "the arrow"
            raise NotationError(f"{what} gives {len(outs)} value(s) but {len(link.targets)} state(s) are named after "
                                "the arrow", *link.pos)

    # -- statements -----------------------------------------------------------------------------
    def lower_statement(self, statement: Statement) -> None:
        over_time = _mentions_t(statement)
        ops: list[Op] = []
        refs = [self.expr(s, ops) for s in statement.sources]
        for link in statement.links:
            outs = self.apply(link.fn, refs, ops) if link.fn is not None else refs
            self._check_count(link, outs)
            targets = []
            for out, target in zip(outs, link.targets):
                # In a statement that runs over time an unindexed target is per step: p means p_t.
                index = target.index if target.index is not None or not over_time else Index("t")
                if index is not None and index.base == "t" and index.offset != 0:
                    raise NotationError(f"define {target.name}_t and read {target} from it: a statement defines "
                                        "the state at the current step", *target.pos)
                ref = Ref("state", target.name, index, label=str(target))
                self.bind(out, ref, ops, link.pos)
                targets.append(ref)
            self.blocks.append(Block(ops, targets, over_time, statement))
            ops = []
            refs = [Ref("state", t.name, t.index, label=t.label) for t in targets]
        if statement.loss is not None:
            self.lower_loss(statement, refs, ops, over_time)

    def lower_loss(self, statement: Statement, refs: list[Ref], ops: list[Op], over_time: bool) -> None:
        loss = statement.loss
        assert loss is not None
        if len(refs) != 1:
            raise NotationError(f"a loss needs one prediction, got {len(refs)}", *loss.pos)
        pred = refs[0]
        if loss.kind == "$":
            if pred.kind != "state":
                raise NotationError("'$' follows the state whose log-probability it weights, e.g. "
                                    "pi_t $ A_t * log(pi_t[a_t])", *loss.pos)
            obj_ops: list[Op] = []
            objective = self.expr(_log_inside_picks(loss.expr), obj_ops)
            self.losses.append(LossDef("$", over_time, statement, obj_ops, objective, leaf=pred))
            return
        target_ops: list[Op] = []
        labels = None
        if isinstance(loss.expr, Call) and loss.expr.fn == "one_hot" and len(loss.expr.args) == 1:
            labels = self.expr(loss.expr.args[0], target_ops)
            target = labels
        else:
            target = self.expr(loss.expr, target_ops)
        self.losses.append(LossDef("=>", over_time, statement, ops, pred, target_ops, target, labels))


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=1)
    return f" -- did you mean '{close[0]}'?" if close else ""


# =================================================================================================
# 3. Analysis: states, data, outputs, inputs, sizes
# =================================================================================================
class Analysis:
    """Everything known about a program before any number is computed."""

    def __init__(self, program: Program, sizes: Mapping[str, int] | None = None,
                 outputs: Sequence[str] | None = None, output_size: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.program = program
        low = self.low = Lowerer(program, rng)
        self.blocks, self.losses, self.macros, self.params = low.blocks, low.losses, low.macros, low.params

        # Which names are states indexed by a context, which are single values?
        main_refs = [r for r in self._main_refs()]
        self.indexed = {r.name for r in main_refs if r.index is not None}
        self.context_free = {r.name for r in main_refs} - self.indexed
        # Definitions: name -> {"step": block or None, "fixed": [(Index or None, block)]}
        self.defs: dict[str, dict[str, Any]] = {}
        for block in self.blocks:
            for target in block.targets:
                entry = self.defs.setdefault(target.name, {"step": None, "fixed": []})
                line = block.statement.pos[0]
                if target.index is not None and target.index.base == "t":
                    if entry["step"] is not None:
                        raise NotationError(f"{target.name}_t is defined twice (lines {entry['step'].statement.pos[0]} "
                                            f"and {line})", *block.statement.pos)
                    entry["step"] = block
                else:
                    for index, other in entry["fixed"]:
                        if index == target.index:
                            raise NotationError(f"{target.label} is defined twice (lines {other.statement.pos[0]} and "
                                                f"{line}): states never change, give the new value a new name",
                                                *block.statement.pos)
                    entry["fixed"].append((target.index, block))
        for block in self.blocks:
            block.reads = [r for op in block.ops for r in op.inputs if r.kind == "state"]
        first: dict[str, tuple[int, int]] = {}
        for ref in main_refs:
            if ref.name not in self.defs:
                first[ref.name] = min(first.get(ref.name, ref.pos), ref.pos)
        self.data = sorted(first, key=first.__getitem__)  # free names, in order of first appearance
        self.sequences = {name for name in self.data if name in self.indexed}
        # The states of a recurrence (h_0, h_t, h_{t-1}) and of a sequence share one size; the states of a
        # layered net (h_1, h_2) are separate values and may differ.
        self.recurrent = self.sequences | {name for name, entry in self.defs.items() if entry["step"] is not None}

        self.outputs = self._outputs(outputs)
        self.folded: set[str] = set()  # for the printer: see _folded_softmaxes
        needed = self._closure([name for name, _, _ in self.outputs])
        self.inputs = [name for name in self.data if name in needed]
        self.targets = [name for name in self.data if name not in needed]

        # sizes: declared, given, then inferred in both directions until nothing changes
        self.sizes: dict[Any, int] = {}
        self.size_pos: dict[Any, tuple[int, int]] = {}
        for name, (size, pos) in low.state_sizes.items():
            self._set(self.key(Ref("state", *split_state_name(name))), size, pos)
        for name, size in (sizes or {}).items():
            self._set(self.key(Ref("state", *split_state_name(name))), int(size), (0, 0))
        if output_size is not None:
            for name, index, _ in self.outputs:
                self._set(self.key(Ref("state", name, index)), int(output_size), (0, 0))
        self._infer_sizes()

    # -- structure ------------------------------------------------------------------------------
    def _main_refs(self) -> Iterable[Ref]:
        for block in self.blocks:
            for op in block.ops:
                yield from (r for r in op.inputs if r.kind == "state")
            yield from block.targets
        for loss in self.losses:
            for op in loss.pred_ops + loss.target_ops:
                yield from (r for r in op.inputs if r.kind == "state")
            for ref in (loss.pred, loss.target, loss.labels, loss.leaf):
                if ref is not None and ref.kind == "state":
                    yield ref

    def _outputs(self, requested: Sequence[str] | None) -> list[tuple[str, Index | None, bool]]:
        """(name, index, over_time) of each output. Explicit, else the predictions of the losses, else the
        states nothing else reads (a recurrence reading h_{t-1} does not count as a reader of h_t)."""
        chosen: list[tuple[str, Index | None]] = []
        if requested:
            for text in requested:
                name, index = split_state_name(text)
                if name not in self.defs:
                    raise NotationError(f"output {text} is not a state the program defines "
                                        f"(it defines: {', '.join(self.defs) or 'nothing'})")
                chosen.append((name, index))
        elif self.losses:
            for loss in self.losses:
                refs = [loss.leaf] if loss.kind == "$" else (
                    [loss.pred] if loss.pred.kind == "state" else
                    [r for op in loss.pred_ops for r in op.inputs if r.kind == "state"])
                chosen += [(r.name, r.index) for r in refs if r is not None and r.name in self.defs]
        else:
            reads = [r for block in self.blocks for r in block.reads]
            for block in self.blocks:
                for target in block.targets:
                    if target.index is not None and target.index.base == "t":
                        read = any(r.name == target.name and (r.index is None or r.index.offset == 0 or
                                                              r.index.base != "t") for r in reads)
                    else:
                        read = any(r.name == target.name and (r.index == target.index or
                                                              (r.index is not None and r.index.base == "t"))
                                   for r in reads)
                    if not read:
                        chosen.append((target.name, target.index))
        result: list[tuple[str, Index | None, bool]] = []
        for name, index in chosen:
            over_time = self.defs.get(name, {}).get("step") is not None and (index is None or index.base == "t")
            entry = (name, None if over_time else index, over_time)
            if entry not in result:
                result.append(entry)
        if not result:
            raise NotationError("the program has no output: every state it defines is read by another statement")
        return result

    def _closure(self, names: list[str]) -> set[str]:
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            entry = self.defs.get(name)
            if entry is None:
                continue
            blocks = [entry["step"]] if entry["step"] is not None else []
            blocks += [block for _, block in entry["fixed"]]
            for block in blocks:
                todo += [r.name for r in block.reads]
        return seen

    # -- sizes ----------------------------------------------------------------------------------
    def key(self, ref: Ref) -> Any:
        if ref.kind == "state":
            if ref.name in self.recurrent or ref.name in self.context_free:
                return ("state", ref.name)
            return ("state", ref.name, str(ref.index if ref.index is not None else Index("", 0)))
        if ref.kind == "local":
            return ("local", ref.scope, ref.name)
        if ref.kind == "tmp":
            return ("tmp", ref.name)
        return None

    def size(self, ref: Ref) -> int | None:
        if ref.kind == "const":
            return SCALAR
        return self.sizes.get(self.key(ref))

    def _set(self, key: Any, size: int | None, pos: tuple[int, int], what: str = "") -> bool:
        if key is None or size is None:
            return False
        current = self.sizes.get(key)
        if current is None:
            self.sizes[key] = size
            self.size_pos[key] = pos
            return True
        if current != size:
            name = {"state": lambda: key[1] + (f"_{{{key[2]}}}" if len(key) > 2 else ""),
                    "local": lambda: key[2]}.get(key[0], lambda: what or "a value")()
            raise NotationError(f"size mismatch: {name} has {current} features elsewhere but {size} here"
                                f"{' (' + what + ')' if what and key[0] != 'tmp' else ''}", *pos)
        return False

    def _ops(self) -> Iterable[Op]:
        for block in self.blocks:
            yield from block.ops
        for macro in self.macros.values():
            yield from macro.ops
        for loss in self.losses:
            yield from loss.pred_ops
            yield from loss.target_ops

    def _infer_sizes(self) -> None:
        for _ in range(1000):
            changed = False
            for op in self._ops():
                changed |= self._infer_op(op)
            for loss in self.losses:
                if loss.kind == "=>" and loss.labels is None and loss.target is not None:
                    changed |= self._same(loss.pred, loss.target, loss.statement.pos, "prediction and target")
            if not changed:
                return

    def _same(self, a: Ref, b: Ref, pos: tuple[int, int], what: str) -> bool:
        sa, sb = self.size(a), self.size(b)
        if sa == SCALAR or sb == SCALAR:
            return False
        if sa is not None and sb is None:
            return self._set(self.key(b), sa, pos, what)
        if sb is not None and sa is None:
            return self._set(self.key(a), sb, pos, what)
        if sa is not None and sb is not None and sa != sb:
            raise NotationError(f"size mismatch: {a.label} has {sa} features, {b.label} has {sb} ({what})", *pos)
        return False

    def _infer_op(self, op: Op) -> bool:
        ins, out, pos = op.inputs, op.outputs[0], op.pos
        if op.fn == "dense":
            spec = self.params[op.param]
            changed = False
            n_in = self.size(ins[0])
            if n_in is not None and n_in != SCALAR:
                if spec.n_in is None:
                    spec.n_in, changed = n_in, True
                elif spec.n_in != n_in:
                    raise NotationError(f"{op.param} reads {ins[0].label} with {n_in} features here but {spec.n_in} "
                                        "features elsewhere (a parameter has one shape)", *pos)
            if spec.n_out is None and self.size(out) not in (None, SCALAR):
                spec.n_out, changed = self.size(out), True
            changed |= self._set(self.key(out), spec.n_out, pos, f"the output of {op.param}")
            return changed
        if op.fn in UNARY and op.fn not in ("sum", "max") or op.fn in ("neg", "dropout", "nograd", "alias"):
            if op.fn == "alias" and ins[0].kind == "const":
                return False
            return self._same(ins[0], out, pos, f"{op.fn}({ins[0].label})")
        if op.fn in ("sum", "max", "pick"):
            return self._set(self.key(out), 1, pos)
        if op.fn == "one_hot":
            size = self.size(out)
            if size is not None and isinstance(op.module, OneHot):
                op.module.classes = size
            return False
        if op.fn in BINARY:
            return self._infer_binary(op)
        if op.fn == "concat":
            sizes = [self.size(r) for r in ins]
            total = self.size(out)
            if all(s is not None for s in sizes):
                return self._set(self.key(out), sum(sizes), pos, "a concatenation")
            unknown = [i for i, s in enumerate(sizes) if s is None]
            if total is not None and len(unknown) == 1:
                rest = total - sum(s for s in sizes if s is not None)
                return self._set(self.key(ins[unknown[0]]), rest, pos)
            return False
        if op.fn == "macro":
            changed = False
            macro = op.macro
            for ref, param in zip(ins, macro.params):
                changed |= self._same(ref, Ref("local", param, scope=macro.name), pos, f"argument {param} of "
                                      f"{macro.name}")
            for ref, ret in zip(op.outputs, macro.returns):
                changed |= self._same(ref, Ref("local", ret, scope=macro.name), pos, f"{ret} returned by {macro.name}")
            return changed
        return False

    def _infer_binary(self, op: Op) -> bool:
        a, b = op.inputs
        out = op.outputs[0]
        sa, sb = self.size(a), self.size(b)
        # one_hot(i) * x: i has as many classes as x has features
        for one, s_other in ((a, sb), (b, sa)):
            if one.kind == "tmp" and one.producer is not None and one.producer.fn == "one_hot" and \
                    self.size(one) is None and s_other not in (None, SCALAR, 1):
                return self._set(self.key(one), s_other, op.pos)
        if sa is None or sb is None:
            # With K > 1 features on one side, the other can only be K, 1 or a number: the result has K.
            wide = [s for s in (sa, sb) if s not in (None, SCALAR, 1)]
            return self._set(self.key(out), wide[0], op.pos) if wide else False
        if sa == SCALAR or sa == 1 and sb != SCALAR:
            result = sb
        elif sb == SCALAR or sb == 1 or sa == sb:
            result = sa
        else:
            raise NotationError(f"cannot combine {a.label} ({sa} features) with {b.label} ({sb} features) by "
                                f"'{op.fn}'", *op.pos)
        if result == SCALAR:
            return False
        return self._set(self.key(out), result, op.pos)

    def param_shapes(self) -> dict[str, dict[str, tuple]]:
        shapes = {}
        for name in self.low.param_order:
            spec = self.params[name]
            shape = {"W": (spec.n_out if spec.n_out is not None else "?", spec.n_in if spec.n_in is not None else "?")}
            if spec.bias:
                shape["b"] = (spec.n_out if spec.n_out is not None else "?",)
            shapes[name] = shape
        return shapes

    def finish(self, rng: np.random.Generator, init: str, dtype: Any) -> None:
        """Create every parameter (in order of first use, so the random draws match nn.Sequential's)
        and size every one_hot; raise if a size could not be inferred."""
        for name in self.low.param_order:
            spec = self.params[name]
            if spec.n_out is None:
                guess = f" ({name} is neither declared nor a macro, so it is taken for a dense layer)" \
                    if spec.implicit else ""
                raise NotationError(f"cannot infer the output size of {name}: declare it, e.g. '{name}: dense(64)'"
                                    f"{guess}", *spec.pos)
            if spec.n_in is None:
                reads = sorted({op.inputs[0].label for op in self._ops() if op.param == name})
                raise NotationError(f"cannot infer the input size of {name} (it reads {', '.join(reads)}): declare the "
                                    f"size of the data, e.g. 'X: 784'", *spec.pos)
            try:
                spec.module = nn.Linear(spec.n_in, spec.n_out, rng, init=spec.init or init, gain=spec.gain,
                                        bias=bool(spec.bias), dtype=dtype)
            except (ValueError, TypeError) as err:
                raise NotationError(f"{name}: {err}", *spec.pos) from None
        for op in self._ops():
            if op.fn == "dense":
                op.module = self.params[op.param].module
            elif op.fn == "one_hot" and isinstance(op.module, OneHot) and op.module.classes is None:
                op.module.classes = self.size(op.outputs[0])


# =================================================================================================
# 4-6. Evaluation, backward, losses
# =================================================================================================
class _Missing(Exception):
    """A state that does not exist at the context asked for (X_0 when a sequence runs from X_1)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.needed_by: tuple[str, int | None] | None = None  # the state that asked for it

    def explain(self) -> str:
        if self.needed_by is None:
            return f"it needs {self.what}"
        name, ctx = self.needed_by
        text = f"{_show(self.needed_by)} needs {self.what}"
        if ctx is not None and ctx <= 0:
            text += f"; a recurrence needs a starting state, e.g. '0 -> {name}_0'"
        return text


class _Node:
    """One value in one pass: a state at a context, or an intermediate."""

    __slots__ = ("value", "grad", "requires_grad", "logits")

    def __init__(self, value: Any, requires_grad: bool = False) -> None:
        self.value = value
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad
        self.logits: _Node | None = None  # set when this node is softmax(logits)

    def add_grad(self, grad: np.ndarray) -> None:
        # Never in place: a gradient array may be shared (Add hands the same dL/dy to both inputs).
        self.grad = grad if self.grad is None else self.grad + grad


class _Pass:
    """One evaluation of the program on one batch: the values of states by (name, context), and the
    tape of the module calls that need a backward pass."""

    def __init__(self, model: NotationModel, record: bool) -> None:
        self.model = model
        self.an = model.analysis
        self.data: dict[str, np.ndarray] = {}
        # (op, module, input nodes, output node) of every forward call a gradient must go back through
        self.tape: list[tuple[Op, Module, list[Any], _Node]] | None = [] if record else None
        self.memo: dict[tuple[str, int | None], _Node] = {}  # (name, context) -> value; context None: no index
        self.dtype = model.dtype
        self.T: int | None = None  # the number of steps: the length of the shortest sequence given
        self.N = 0  # the batch size

    # -- data -----------------------------------------------------------------------------------
    def load(self, values: dict[str, Any]) -> None:
        """Check and store data arrays: float data as the model's dtype, a (N,) vector as a (N, 1) column;
        integer data (labels, actions) unchanged."""
        for name, value in values.items():
            array = np.asarray(value)
            sequence = name in self.an.sequences
            if array.dtype.kind == "f":
                array = array.astype(self.dtype, copy=False)
                if array.ndim == (2 if sequence else 1):
                    array = array[..., None]
            if sequence:
                if array.ndim < 2:
                    raise NotationError(f"{name} is a sequence ({name}_t): give it shaped (T, N, ...), "
                                        f"got {array.shape}")
                # T is the length of the shortest sequence given so far: observations O_1..O_{T+1} (with the
                # one to bootstrap from) and rewards r_1..r_T make the losses run over t = 1..T.
                self.T = array.shape[0] if self.T is None else min(self.T, array.shape[0])
            self.data[name] = array
            if not self.N and array.ndim:
                self.N = array.shape[1] if sequence and array.ndim > 1 else array.shape[0]

    def data_node(self, name: str, ctx: int | None) -> _Node:
        if name not in self.data:
            kind = "input" if name in self.an.inputs else "target"
            raise NotationError(f"missing {kind} '{name}'")
        array = self.data[name]
        if ctx is not None and name in self.an.sequences:
            if not 1 <= ctx <= array.shape[0]:
                raise _Missing(f"{_show((name, ctx))} (the sequence {name} runs from {name}_1 to "
                               f"{name}_{array.shape[0]})")
            array = array[ctx - 1]
        needs_grad = (self.tape is not None and self.model.input_grad and name in self.an.inputs
                      and array.dtype.kind == "f")
        return _Node(array, needs_grad)

    # -- states on demand -----------------------------------------------------------------------
    def key(self, ref: Ref, t: int | None) -> tuple[str, int | None]:
        if ref.name in self.an.context_free:
            return ref.name, None
        if ref.index is None:
            return ref.name, t if t is not None else 0
        try:
            return ref.name, ref.index.at(t, self.T)
        except ValueError as err:
            raise NotationError(f"{ref.label}: {err}") from None

    def definition(self, key: tuple[str, int | None]) -> tuple[Block, int | None] | None:
        """The block defining a state at a context, and the step t to run it at (None: data)."""
        name, ctx = key
        entry = self.an.defs.get(name)
        if entry is None:
            return None
        for index, block in entry["fixed"]:
            if index is None:  # an unindexed definition: the single value, or context 0 of a family
                if ctx is None or ctx == 0:
                    return block, None
            elif ctx is not None and not (index.base == "T" and self.T is None) and index.at(None, self.T) == ctx:
                return block, None
        step = entry["step"]
        if step is not None and ctx is not None:
            bound = (self.T or 0) + 64
            if not -bound <= ctx <= 2 * bound:
                raise _Missing(f"{_show(key)} (the recurrence for {name} never reaches a fixed starting state; "
                               f"bind one, e.g. '0 -> {name}_0')")
            return step, ctx
        raise _Missing(_show(key))

    def get(self, key: tuple[str, int | None]) -> _Node:
        """The node of a state at a context, computing what it needs first (an explicit stack, no recursion)."""
        if key in self.memo:
            return self.memo[key]
        stack, waiting = [key], set()
        while stack:
            current = stack[-1]
            if current in self.memo:
                stack.pop()
                continue
            name, ctx = current
            if name in self.an.data:
                self.memo[current] = self.data_node(name, ctx)
                stack.pop()
                continue
            found = self.definition(current)
            assert found is not None
            block, t = found
            missing = [k for k in dict.fromkeys(self.key(r, t) for r in block.reads) if k not in self.memo]
            for k in missing:
                if k[0] in self.an.data:  # data first: a step outside a sequence ends the search here
                    try:
                        self.memo[k] = self.data_node(*k)
                    except _Missing as err:
                        err.needed_by = current
                        raise
            missing = [k for k in missing if k not in self.memo]
            if missing:
                for k in missing:
                    if k in waiting:
                        raise NotationError(f"{_show(k)} depends on itself (through {_show(current)}): a state "
                                            "can only read earlier contexts of itself, e.g. h_{t-1}")
                waiting.add(current)
                stack += missing
                continue
            waiting.discard(current)
            self.run_block(block, t)
            stack.pop()
            if current not in self.memo:  # defined at this context by a concrete-index target of the block
                raise _Missing(_show(current))
        return self.memo[key]

    def run_block(self, block: Block, t: int | None) -> None:
        env: dict[str, Any] = {}

        def read(ref: Ref) -> Any:
            if ref.kind == "state":
                return self.memo[self.key(ref, t)]
            if ref.kind == "const":
                return ref.value
            return env[ref.name]

        def write(ref: Ref, node: Any) -> None:
            if ref.kind == "state":
                self.memo[self.key(ref, t)] = node
            else:
                env[ref.name] = node

        self.run_ops(block.ops, read, write, nograd=False)

    # -- ops ------------------------------------------------------------------------------------
    def run_ops(self, ops: list[Op], read, write, nograd: bool, tape: Any = "main") -> None:
        for op in ops:
            inputs = [read(r) for r in op.inputs]
            if op.fn == "macro":
                outs = self.run_macro(op, inputs, nograd or op.nograd, tape)
                for ref, node in zip(op.outputs, outs):
                    write(ref, node)
                continue
            write(op.outputs[0], self.apply(op, inputs, nograd or op.nograd, tape))

    def run_macro(self, op: Op, inputs: list[Any], nograd: bool, tape: Any) -> list[Any]:
        macro = op.macro
        env = dict(zip(macro.params, inputs))

        def read(ref: Ref) -> Any:
            return ref.value if ref.kind == "const" else env[ref.name]

        def write(ref: Ref, node: Any) -> None:
            env[ref.name] = node

        self.run_ops(macro.ops, read, write, nograd, tape)
        return [env[name] for name in macro.returns]

    def apply(self, op: Op, inputs: list[Any], nograd: bool, tape: Any = "main") -> Any:
        """Run one op: ``forward`` (recorded) when a gradient must flow through it, else ``infer``."""
        tape = self.tape if tape == "main" else tape
        if op.fn == "alias":
            x = inputs[0]
            if isinstance(x, _Node):
                return x
            return _Node(self.constant(x, op.outputs[0]))
        nodes = [x for x in inputs if isinstance(x, _Node)]
        module = op.module
        if op.fused is not None and nodes and nodes[0].logits is not None:
            # log(softmax(z)) = log_softmax(z): computed from the logits, gradient straight to them
            inputs, nodes = [nodes[0].logits], [nodes[0].logits]
            module = op.fused
        values = [x.value if isinstance(x, _Node) else x for x in inputs]
        differentiable = op.fn not in ("one_hot",) and not nograd
        requires = tape is not None and differentiable and (
            op.fn == "dense" or any(n.requires_grad for n in nodes))
        stochastic = tape is not None and op.fn == "dropout" and module.training
        if requires or stochastic:
            y = module.forward(*values)
            node = _Node(y, requires)
            tape.append((op, module, inputs, node))
        else:
            node = _Node(module.infer(*values), False)
        if op.fn == "softmax" and isinstance(inputs[0], _Node):
            node.logits = inputs[0]
        return node

    def constant(self, value: float, target: Ref) -> Any:
        """``0 -> h_0``: a number bound to a state becomes a full (N, size) array when the state's size is known."""
        size = self.an.size(target) if target.kind != "tmp" else None
        if size not in (None, SCALAR):
            return np.full((self.N, size), value, dtype=self.dtype)
        return float(value)

    # -- backward -------------------------------------------------------------------------------
    @staticmethod
    def backprop(tape: list[tuple[Op, Module, list[Any], _Node]]) -> None:
        """The chain rule: the tape in reverse, each module's backward popping its own forward's values."""
        for op, module, inputs, out in reversed(tape):
            grad = out.grad if out.grad is not None else np.zeros_like(out.value)
            if op.fn == "dense":
                # Linear skips dL/dX (a third of its work) when nothing upstream needs it -- data, say.
                module.input_grad = isinstance(inputs[0], _Node) and inputs[0].requires_grad
            grads = module.backward(grad)
            if not isinstance(grads, tuple):
                grads = (grads,)
            for x, g in zip(inputs, grads):
                if isinstance(x, _Node) and x.requires_grad and g is not None:
                    x.add_grad(g)

    # -- losses ---------------------------------------------------------------------------------
    def losses(self, backprop: bool) -> float:
        """Every loss term at every context where it exists, each loss averaged over its terms; the gradients
        go into the forward graph's nodes (ready for ``backprop`` of the main tape)."""
        main_tape, self.tape = self.tape, None  # what the losses compute on demand is a constant
        total = 0.0
        try:
            for loss in self.an.losses:
                contexts = range(1, (self.T or 0) + 1) if loss.over_time else [None]
                terms = []
                for t in contexts:
                    try:
                        terms.append(self.loss_term(loss, t, backprop))
                    except _Missing:
                        if not loss.over_time:
                            raise
                if not terms:
                    line = format_statement_short(loss.statement)
                    raise NotationError(f"no term of the loss in '{line}' exists for t = 1..{self.T}: every step "
                                        "reads a state outside the sequence", *loss.statement.pos)
                scale = 1.0 / len(terms)
                # last term first: its ops were the last to run forward, so their saved values are on top
                for value, grads, tape in reversed(terms):
                    total += scale * value
                    if not backprop:
                        continue
                    for node, grad in grads:
                        node.add_grad(grad * scale)
                    if tape:
                        self.backprop(tape)
        finally:
            self.tape = main_tape
        return total

    def loss_term(self, loss: LossDef, t: int | None, backprop: bool
                  ) -> tuple[float, list[tuple[_Node, np.ndarray]], list | None]:
        local: list | None = [] if backprop else None  # the tape of the loss's own ops (None: infer)
        if loss.kind == "$":
            leaf_key = self.key(loss.leaf, t)
            self.get(leaf_key)  # the weighted state must exist at this step (else _Missing: the term is left out)

            def read_obj(ref: Ref) -> Any:
                if ref.kind == "state":
                    key = self.key(ref, t)
                    node = self.get(key)
                    # only the weighted state carries gradient; every other state is a constant weight
                    return node if key == leaf_key else _Node(node.value)
                if ref.kind == "const":
                    return ref.value
                return env[ref.name]

            env: dict[str, Any] = {}
            self.run_ops(loss.pred_ops, read_obj, lambda ref, node: env.__setitem__(ref.name, node), False, local)
            objective = read_obj(loss.pred)
            if not isinstance(objective, _Node) or not isinstance(objective.value, np.ndarray):
                raise NotationError("the objective after '$' must depend on the data", *loss.statement.pos)
            value = objective.value
            n = value.shape[0]
            # maximise J = mean over the batch of the objective summed over its features: L = -J
            grad = np.full_like(value, -1.0 / n)
            return -float(value.sum()) / n, [(objective, grad)], local

        env = {}

        def read(ref: Ref) -> Any:
            if ref.kind == "state":
                return self.get(self.key(ref, t))
            if ref.kind == "const":
                return ref.value
            return env[ref.name]

        def write(ref: Ref, node: Any) -> None:
            env[ref.name] = node

        self.run_ops(loss.target_ops, read, write, nograd=True, tape=None)
        target = read(loss.target)
        target = target.value if isinstance(target, _Node) else target
        self.run_ops(loss.pred_ops, read, write, nograd=False, tape=local)
        pred = read(loss.pred)
        if loss.labels is not None and pred.logits is not None:
            # softmax + cross-entropy: the gradient on the logits is (p - one_hot(y)) / N
            value, dlogits = nn.softmax_cross_entropy(pred.logits.value, _labels(target))
            return value, [(pred.logits, dlogits)], local
        if loss.labels is not None:
            target = np.eye(pred.value.shape[-1], dtype=pred.value.dtype)[_labels(target)]
        target = np.broadcast_to(_operand(target), pred.value.shape)
        value, dpred = nn.mse(pred.value, target)
        return value, [(pred, dpred)], local


def _show(key: tuple[str, int | None]) -> str:
    name, ctx = key
    return name if ctx is None else name + Index("", ctx).subscript()


def format_statement_short(statement: Statement) -> str:
    text = format_statement(statement)
    return text if len(text) < 80 else text[:77] + "..."


# =================================================================================================
# The model
# =================================================================================================
class NotationModel(Module):
    """A program compiled into a Module.

    * ``forward(*inputs)`` -> the outputs (one array, or a tuple). ``inputs`` are the data the outputs
      need, in order of first appearance (``model.inputs``); a state indexed by t is a sequence shaped
      (T, N, ...) in and out. ``backward(d_outputs)`` -> d_inputs, accumulating parameter gradients.
    * ``backward_loss(targets)`` instead of ``backward``: evaluate the losses the program attaches
      (``=>``, ``$``) on the last forward pass against the ``targets`` (a dict of the remaining data,
      ``model.targets``), backpropagate them and return the loss.
    * ``loss(*inputs, targets=...)`` the same loss, computed with ``infer`` (nothing kept).
    * ``infer(*inputs)`` the outputs, keeping nothing.

    Parameters are ``nn.Linear`` modules named as in the program (``M_1.W``, ``M_1.b`` in a state dict),
    in one flat buffer like every other network.
    """

    def __init__(self, analysis: Analysis, rng: np.random.Generator, init: str = "he", dtype: Any = np.float32,
                 source: str = "") -> None:
        super().__init__()
        analysis.finish(rng, init, dtype)
        self.analysis = analysis
        self.source = source
        self.inputs = list(analysis.inputs)
        self.targets = list(analysis.targets)
        self.outputs = [name + ("_t" if over_time else (index.subscript() if index is not None else ""))
                        for name, index, over_time in analysis.outputs]
        self.groups = analysis.low.groups
        self._params = [(name, analysis.params[name].module) for name in analysis.low.param_order]
        self._ops = list(analysis.low.modules)
        # True (set by network_from_notation): an output computed by a softmax is returned as its logits
        self.logits_outputs = False
        self.flatten(dtype)

    # parameters appear under their names in the program (M_1.W), the other modules after them
    def children(self):
        yield from self._params
        for i, module in enumerate(self._ops):
            yield f"op{i}", module

    @property
    def dtype(self) -> np.dtype:
        return self.flat_params.dtype if self.num_params() else np.dtype(np.float32)

    def _start(self, xs: Sequence[Any], record: bool) -> _Pass:
        if len(xs) != len(self.inputs):
            raise NotationError(f"the model takes {len(self.inputs)} input(s) ({', '.join(self.inputs)}), "
                                f"got {len(xs)}")
        run = _Pass(self, record)
        run.load(dict(zip(self.inputs, xs)))
        return run

    def _outputs(self, run: _Pass) -> list[_Node | list[_Node]]:
        outs: list[_Node | list[_Node]] = []

        def pick(node: _Node) -> _Node:
            return node.logits if self.logits_outputs and node.logits is not None else node

        for name, index, over_time in self.analysis.outputs:
            try:
                if over_time:
                    if run.T is None:
                        raise NotationError(f"output {name}_t runs over time, but no input is a sequence")
                    outs.append([pick(run.get((name, t))) for t in range(1, run.T + 1)])
                else:
                    outs.append(pick(run.get(run.key(Ref("state", name, index, label=name), None))))
            except _Missing as missing:
                raise NotationError(f"cannot compute output {name}: {missing.explain()}") from None
        return outs

    @staticmethod
    def _value(out: _Node | list[_Node]) -> np.ndarray:
        if isinstance(out, list):
            return np.stack([np.broadcast_to(n.value, out[0].value.shape) for n in out])
        return out.value

    def _result(self, outs: list) -> Any:
        values = tuple(self._value(o) for o in outs)
        return values[0] if len(values) == 1 else values

    def forward(self, *xs: np.ndarray) -> Any:
        run = self._start(xs, record=True)
        outs = self._outputs(run)
        self._saved.append((run, outs))
        return self._result(outs)

    def infer(self, *xs: np.ndarray) -> Any:
        run = self._start(xs, record=False)
        return self._result(self._outputs(run))

    def backward(self, dy: Any) -> Any:
        run, outs = self._saved.pop()
        dys = dy if isinstance(dy, tuple) else (dy,)
        for out, d in zip(outs, dys):
            if d is None:
                continue
            if isinstance(out, list):
                for t, node in enumerate(out):
                    node.add_grad(d[t])
            else:
                out.add_grad(d)
        return self._finish_backward(run)

    def backward_loss(self, targets: Mapping[str, Any] | None = None) -> float:
        """The losses attached with => and $ on the last forward pass, backpropagated; returns the loss."""
        run, _ = self._saved.pop()
        self._load_targets(run, targets)
        loss = run.losses(backprop=True)
        self._finish_backward(run)
        return loss

    def loss(self, *xs: np.ndarray, targets: Mapping[str, Any] | None = None) -> float:
        """The loss on a batch, computed with infer (for evaluation, and for gradient checks)."""
        run = self._start(xs, record=False)
        self._outputs(run)
        self._load_targets(run, targets)
        return run.losses(backprop=False)

    def _load_targets(self, run: _Pass, targets: Mapping[str, Any] | None) -> None:
        if not self.analysis.losses:
            raise NotationError("the program attaches no loss (=> or $)")
        targets = dict(targets or {})
        unknown = set(targets) - set(self.targets)
        if unknown:
            raise NotationError(f"'{sorted(unknown)[0]}' is not a target of this program (targets: "
                                f"{', '.join(self.targets) or 'none'})")
        run.load(targets)

    def _finish_backward(self, run: _Pass) -> Any:
        assert run.tape is not None
        run.backprop(run.tape)
        for group in self.groups:
            if group.kind == "clip":
                self._clip(group)
        if not self.input_grad:
            return None
        grads = []
        for name in self.inputs:
            x = run.data[name]
            if name in self.analysis.sequences:
                g = np.zeros(x.shape, dtype=x.dtype if x.dtype.kind == "f" else self.dtype)
                for t in range(1, x.shape[0] + 1):
                    node = run.memo.get((name, t))
                    if node is not None and node.grad is not None:
                        g[t - 1] = node.grad
            else:
                node = run.memo.get((name, None))
                g = node.grad if node is not None and node.grad is not None else np.zeros_like(x, dtype=self.dtype)
            grads.append(g)
        return grads[0] if len(grads) == 1 else tuple(grads)

    def _clip(self, group: Group) -> None:
        """clip_grad(F, c): the gradient of F's parameters scaled down to norm c at most."""
        grads = [g for name in group.params for g in self.analysis.params[name].module.grads.values()]
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
        if norm > group.options["max_norm"]:
            for g in grads:
                g *= group.options["max_norm"] / (norm + 1e-12)

    def make_optimizer(self, lr: float = 1e-3) -> Any:
        """Adam over every parameter, except that ``adam_opt(F, lr=...)`` gives F's parameters their own
        Adam with that learning rate (each parameter is a contiguous slice of the flat buffer)."""
        marked = {name: group for group in self.groups if group.kind == "adam" for name in group.params}
        if not marked:
            return nn.Adam(self, lr=lr)
        return _PerParameter({name: nn.Adam(module, lr=marked[name].options["lr"] if name in marked else lr)
                              for name, module in self._params})

    def __repr__(self) -> str:
        return f"NotationModel(inputs={self.inputs}, outputs={self.outputs}, targets={self.targets})"


class _PerParameter:
    """Several optimizers stepping together, one per parameter (for adam_opt)."""

    def __init__(self, optimizers: dict[str, Any]) -> None:
        self.optimizers = optimizers

    def step(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"{name}/{k}": v for name, opt in self.optimizers.items() for k, v in opt.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + "/")})


# =================================================================================================
# Entry points
# =================================================================================================
def compile_program(source: str | Program, rng: np.random.Generator, *, sizes: Mapping[str, int] | None = None,
                    outputs: Sequence[str] | None = None, init: str = "he", dtype: Any = np.float32) -> NotationModel:
    """Compile a program (text or parsed) into a trainable NotationModel.

    ``sizes`` gives the feature sizes of data not declared in the program ({"X": 784}); ``outputs``
    overrides which states the model returns; ``init`` is the default initialiser of dense layers.
    """
    program = parse(source) if isinstance(source, str) else source
    analysis = Analysis(program, sizes=sizes, outputs=outputs, rng=rng)
    return NotationModel(analysis, rng, init=init, dtype=dtype, source=source if isinstance(source, str) else "")


def network_from_notation(text: str, n_in: int, n_out: int, rng: np.random.Generator, init: str = "he",
                          output_gain: float | None = None, dtype: Any = np.float32) -> NotationModel:
    """The network an agent trains, from a config's ``model.notation``: one input of ``n_in`` features,
    one output of ``n_out``.

    An agent brings its own loss, so the network ends where the loss begins: an output computed by a
    softmax is returned as its *logits* (an agent's softmax_cross_entropy or log_softmax takes logits --
    the program's ``softmax => one_hot(y)`` is exactly that loss). ``output_gain`` re-initialises the
    output's dense layer orthogonally with that gain, as ``models.mlp`` does.
    """
    program = parse(text)
    probe = Analysis(program)  # which data is the input, which state the output
    if len(probe.inputs) != 1 or len(probe.outputs) != 1:
        raise NotationError(f"an agent's network has one input and one output; this program has inputs "
                            f"{probe.inputs or 'none'} and outputs {[o[0] for o in probe.outputs]}")
    if probe.outputs[0][2] or probe.inputs[0] in probe.sequences:
        raise NotationError("an agent's network maps one observation to one output; states indexed by t are not "
                            "supported there yet")
    analysis = Analysis(program, sizes={probe.inputs[0]: n_in}, output_size=n_out, rng=rng)
    if output_gain is not None:
        last = _output_dense(analysis, analysis.outputs[0][0])
        if last is not None:  # initialised like mlp's last layer (and in the same order)
            analysis.params[last].init, analysis.params[last].gain = "orthogonal", output_gain
    model = NotationModel(analysis, rng, init=init, dtype=dtype, source=text)
    model.input_grad = False  # an agent never needs the gradient with respect to its observations
    model.logits_outputs = True
    return model


def _output_dense(an: Analysis, name: str) -> str | None:
    """The parameter of the dense layer whose output (or whose output's softmax) is the state ``name``."""
    for block in an.blocks:
        if any(r.name == name for r in block.targets):
            for op in reversed(block.ops):
                if op.fn == "dense":
                    return op.param
    return None


def explain(source: str | Program, sizes: Mapping[str, int] | None = None) -> str:
    """The program, its parameters' shapes, and its forward, loss and backward passes one line per step."""
    program = parse(source) if isinstance(source, str) else source
    an = Analysis(program, sizes=sizes)
    an.folded = _folded_softmaxes(an)
    lines = ["program:"] + ["  " + line for line in format_program(program).splitlines()]

    def size_of(ref: Ref) -> str:
        size = an.size(ref)
        return "?" if size is None else ("scalar" if size == SCALAR else str(size))

    lines += ["", "data:"]
    for name in an.data:
        role = "input" if name in an.inputs else "target"
        seq = f" (a sequence: {name}_1 .. {name}_T)" if name in an.sequences else ""
        lines.append(f"  {name}: {role}, {size_of(Ref('state', name))} features{seq}")
    lines.append("  outputs: " + ", ".join(n + ("_t" if ot else "") for n, _, ot in an.outputs))
    lines += ["", "parameters:"]
    shapes = an.param_shapes()
    if not shapes:
        lines.append("  (none)")
    for name, shape in shapes.items():
        parts = ", ".join(f"{name}.{key} {_fmt_shape(s)}" for key, s in shape.items())
        lines.append(f"  {name}: dense  {parts}")
    for group in an.low.groups:
        what = (f"gradient of {', '.join(group.params)} clipped to norm {group.options['max_norm']}"
                if group.kind == "clip" else f"{', '.join(group.params)} updated by Adam, lr {group.options['lr']}")
        lines.append(f"  {group.text}: {what}")

    over_time = any(b.over_time for b in an.blocks)
    lines += ["", "forward" + (" (every line runs at each step t = 1..T, in the order the states need)"
                               if over_time else "") + ":"]
    for block in an.blocks:
        for op in block.ops:
            lines += ["  " + line for line in _forward_lines(op, an)]
    for loss in an.losses:
        lines += ["", "loss" + (" (averaged over t = 1..T and the batch)" if loss.over_time else
                                " (averaged over the batch)") + ":"]
        lines += ["  " + line for line in _loss_lines(loss, an)]
    lines += ["", "backward" + (" (t = T..1: a state read at several steps, like h_{t-1}, adds up the gradient "
                                "from each; parameter gradients add up over all steps)" if over_time else "")
              + ":", "  every dL/d... starts at 0; += adds one use's contribution"]
    flow = _Flow(an)
    for loss in an.losses:
        lines += ["  " + line for line in _loss_backward_lines(loss, an, flow)]
    for block in reversed(an.blocks):
        if flow.block_live(block):
            for op in reversed(block.ops):
                lines += ["  " + line for line in _backward_lines(op, an, flow.wants)]
    for macro in an.macros.values():
        lines += ["", f"macro {macro.name}({', '.join(macro.params)}) -> {', '.join(macro.returns)}:",
                  "  forward:"]
        for op in macro.ops:
            lines += ["    " + line for line in _forward_lines(op, an)]
        lines.append("  backward:")
        for op in reversed(macro.ops):
            lines += ["    " + line for line in _backward_lines(op, an)]
    return "\n".join(lines) + "\n"


def _folded_softmaxes(an: Analysis) -> set[str]:
    """Softmax outputs whose whole gradient the loss sends to their logits (a fused cross-entropy, or
    log(pi) in a policy-gradient objective) because nothing else reads them."""
    read = {r.name for block in an.blocks for r in block.reads}
    folded = set()
    for loss in an.losses:
        if loss.kind == "=>" and loss.labels is not None and loss.pred.kind == "state":
            folded.add(loss.pred.name)
        elif loss.kind == "$":
            uses = [op for op in loss.pred_ops for r in op.inputs if r.kind == "state" and r.name == loss.leaf.name]
            if uses and all(op.fn == "log" for op in uses):
                folded.add(loss.leaf.name)
    return folded - read


def _fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _g(ref: Ref) -> str:
    return f"dL/d{_paren(ref.label)}"


def _forward_lines(op: Op, an: Analysis) -> list[str]:
    ins = [r.label for r in op.inputs]
    out = ", ".join(r.label for r in op.outputs)
    nograd = "    (nograd: no gradient flows back)" if op.nograd else ""
    if op.fn == "dense":
        bias = f" + {op.param}.b" if an.params[op.param].bias else ""
        return [f"{out} = {_paren(ins[0])} {op.param}.W^T{bias}{nograd}"]
    if op.fn in BINARY or op.fn in ("concat", "pick", "neg"):
        if op.outputs[0].kind == "tmp":
            return []  # an intermediate of an expression: the line that uses it shows it
        return [f"{out} = {op.text}{nograd}"]
    if op.fn == "alias":
        return [f"{out} = {ins[0]}"]
    if op.outputs[0].kind == "tmp" and op.fn not in ("macro", "dropout"):
        return []  # relu(M_1(X)) = relu(M_1(X)) would say nothing: the line that uses it shows it
    if op.fn == "macro":
        return [f"{out} = {op.macro.name}({', '.join(ins)}){nograd}"]
    if op.fn == "dropout":
        return [f"{out} = {_paren(ins[0])} * m / (1 - p),  m ~ Bernoulli(1 - p), p = {op.module.p}"]
    return [f"{out} = {op.fn}({ins[0]}){nograd}"]


_BACKWARD = {
    "relu": "{gx} = {gy} * [{y} > 0]",
    "sigmoid": "{gx} = {gy} * {y} * (1 - {y})",
    "tanh": "{gx} = {gy} * (1 - {y}^2)",
    "softmax": "{gx} = {y} * ({gy} - sum_k {gy}_k {y}_k)",
    "log_softmax": "{gx} = {gy} - exp({y}) * sum_k {gy}_k",
    "elu": "{gx} = {gy} * (1 if {x} > 0 else {y} + alpha)",
    "leaky_relu": "{gx} = {gy} * (1 if {x} > 0 else slope)",
    "exp": "{gx} = {gy} * {y}",
    "log": "{gx} = {gy} / {x}    (for a softmax output x = softmax(z): dL/dz = {gy} - x * sum_k {gy}_k)",
    "sum": "{gx} = {gy}    (copied to every feature)",
    "max": "{gx} = [{x} = max {x}] * {gy}",
    "neg": "{gx} = -{gy}",
    "dropout": "{gx} = {gy} * m / (1 - p)",
    "nograd": "",
    "one_hot": "",
}


def _backward_lines(op: Op, an: Analysis, wants: Callable[[Ref], bool] = lambda ref: ref.kind != "const"
                    ) -> list[str]:
    """The backward step of one op: the gradient of each input that takes one (``wants``)."""
    def acc(ref: Ref) -> str:
        return "=" if ref.kind == "tmp" else "+="

    if op.fn == "one_hot":
        return []
    if op.nograd or op.fn == "nograd":
        return [f"({', '.join(r.label for r in op.outputs)}: nograd, no gradient flows back through it)"]
    out = op.outputs[0]
    gy, y = _g(out), _paren(out.label)
    if op.fn == "dense":
        x = op.inputs[0]
        lines = [f"dL/d{op.param}.W += {gy}^T {_paren(x.label)}"]
        if an.params[op.param].bias:
            lines.append(f"dL/d{op.param}.b += sum_n {gy}")
        if wants(x):
            data = x.kind == "state" and x.name in an.data
            note = f"    ({x.label} is data: computed only when asked for)" if data else ""
            lines.append(f"{_g(x)} {acc(x)} {gy} {op.param}.W{note}")
        return lines
    if op.fn == "alias":
        return [f"{_g(op.inputs[0])} {acc(op.inputs[0])} {gy}"] if wants(op.inputs[0]) else []
    if op.fn == "macro":
        outs = ", ".join(_g(r) for r in op.outputs)
        ins = [r for r in op.inputs if wants(r)]
        return [f"{', '.join(_g(r) for r in ins) or '(parameters only)'} += backward of {op.macro.name} (below), "
                f"given {outs}"]
    if op.fn == "concat":
        # each part gets back its own columns of the gradient (sizes written n_part where unknown)
        lines, start = [], "0"
        for ref in op.inputs:
            size = an.size(ref)
            width = str(size) if size not in (None, SCALAR) else f"n_{ref.label}"
            end = str(int(start) + int(width)) if start.isdigit() and width.isdigit() else f"{start}+{width}"
            if wants(ref):
                lines.append(f"{_g(ref)} {acc(ref)} {gy}[:, {start}:{end}]")
            start = end
        return lines
    if op.fn == "pick":
        x, i = op.inputs
        return [f"{_g(x)} {acc(x)} one_hot({i.label}) * {gy}"] if wants(x) else []
    if op.fn in BINARY:
        a, b = op.inputs
        pa, pb = _paren(a.label), _paren(b.label)
        rules = {"+": (gy, gy), "-": (gy, f"-{gy}"), "*": (f"{gy} * {pb}", f"{gy} * {pa}"),
                 "/": (f"{gy} / {pb}", f"-{gy} * {pa} / {pb}^2")}[op.fn]
        return [f"{_g(ref)} {acc(ref)} {rule}" for ref, rule in zip((a, b), rules) if wants(ref)]
    if op.fn == "softmax" and out.kind == "state" and out.name in an.folded:
        return [f"(softmax: no gradient reaches {out.label} itself; the loss sent it straight to "
                f"{_paren(op.inputs[0].label)}, above)"]
    template = _BACKWARD.get(op.fn)
    x = op.inputs[0]
    if not template or not wants(x):
        return []
    line = template.format(gx=_g(x), gy=gy, y=y, x=_paren(x.label))
    return [line.replace(f"{_g(x)} =", f"{_g(x)} {acc(x)}", 1)]


class _Flow:
    """Which values take a gradient, for the printer: a value does when it depends on a parameter or an
    input (not a constant like gamma, not a target like r_t) and, for a state, when a loss or an output
    can be reached from it (A_t, a constant weight after $, takes none)."""

    def __init__(self, an: Analysis) -> None:
        self.an = an
        self.diff: set[str] = set(an.inputs)  # state names and tmp names that depend on parameters or inputs
        changed = True
        while changed:
            changed = False
            for block in an.blocks:
                for op in block.ops:
                    changed |= self._forward(op)
        for loss in an.losses:
            for op in loss.pred_ops:
                self._forward(op)
        self.live: set[str] = set()
        for loss in an.losses:
            self.live |= {loss.leaf.name} if loss.kind == "$" else (
                {loss.pred.name} | {r.name for op in loss.pred_ops for r in op.inputs if r.kind == "state"})
        if not an.losses:
            self.live |= {name for name, _, _ in an.outputs}
        changed = True
        while changed:
            changed = False
            for block in an.blocks:
                if any(t.name in self.live for t in block.targets):
                    for op in block.ops:
                        for ref in op.inputs:
                            if ref.kind == "state" and ref.name not in self.live and not op.nograd:
                                self.live.add(ref.name)
                                changed = True

    def _forward(self, op: Op) -> bool:
        if op.nograd or op.fn in ("one_hot", "nograd"):
            return False
        if op.fn == "dense" or op.fn == "macro" and op.macro.param_names or \
                any(r.kind == "local" or r.name in self.diff for r in op.inputs if r.kind != "const"):
            new = {r.name for r in op.outputs} - self.diff
            self.diff |= new
            return bool(new)
        return False

    def wants(self, ref: Ref) -> bool:
        if ref.kind == "const":
            return False
        if ref.kind == "local":
            return True
        if ref.kind == "tmp":
            return ref.name in self.diff
        return ref.name in self.diff and ref.name in self.live

    def block_live(self, block: Block) -> bool:
        return any(self.wants(t) for t in block.targets)


def _loss_lines(loss: LossDef, an: Analysis) -> list[str]:
    lines = []
    for op in loss.target_ops + loss.pred_ops:
        lines += _forward_lines(op, an)
    if loss.kind == "$":
        return lines + [f"L -= mean_n sum_k {_paren(loss.pred.label)}    (the objective is maximised; only "
                        f"{loss.leaf.label} carries gradient, every other state in it is a constant weight)"]
    p, target = loss.pred.label, (loss.target.label if loss.target is not None else "")
    if loss.labels is not None:
        logits = _softmax_input(loss.pred, an)
        if logits is not None:
            return lines + [f"L += mean_n CE({p}, one_hot({target})) = -mean_n log {p}[{target}]    "
                            f"({p} = softmax({logits.label}): softmax + cross-entropy, fused)"]
        target = f"one_hot({target})"
    return lines + [f"L += mean_n mean_k ({p} - {_paren(target)})^2    (mean squared error; the target is a "
                    "constant: no gradient flows into it)"]


def _softmax_input(pred: Ref, an: Analysis) -> Ref | None:
    producer = pred.producer
    if producer is None and pred.kind == "state":
        entry = an.defs.get(pred.name, {})
        block = entry.get("step") or next((b for _, b in entry.get("fixed", [])), None)
        producer = next((op for op in (block.ops if block else []) for r in op.outputs
                         if r.kind == "state" and r.name == pred.name), None)
    return producer.inputs[0] if producer is not None and producer.fn == "softmax" else None


def _loss_backward_lines(loss: LossDef, an: Analysis, flow: _Flow) -> list[str]:
    p = loss.pred
    steps = " T" if loss.over_time else ""  # a loss over time is averaged over its T steps too
    per = "(N T)" if loss.over_time else "N"
    if loss.kind == "$":
        def wants(ref: Ref) -> bool:  # only the weighted state takes gradient; the weights are constants
            return ref.name == loss.leaf.name if ref.kind == "state" else flow.wants(ref)

        lines = [f"{_g(p)} = -1 / {per}    (each sample's objective, summed over features, averaged)"]
        for op in reversed(loss.pred_ops):
            if op.fn == "log" and op.inputs[0].kind == "state" and op.inputs[0].name == loss.leaf.name:
                x, gy = op.inputs[0], _g(op.outputs[0])
                logits = _softmax_input(x, an)
                if logits is not None:
                    lines.append(f"{_g(logits)} += {gy} - {x.label} * sum_k {gy}_k    (log {x.label} = "
                                 f"log_softmax({logits.label}): straight to the logits)")
                    continue
            lines += _backward_lines(op, an, wants)
        return lines
    target = loss.target.label if loss.target is not None else ""
    if loss.labels is not None:
        logits = _softmax_input(p, an)
        if logits is not None:
            return [f"{_g(logits)} += ({p.label} - one_hot({target})) / {per}    (softmax and the log cancel: "
                    "docs/backprop.md)"]
        target = f"one_hot({target})"
    lines = [f"{_g(p)} += 2 ({p.label} - {_paren(target)}) / (N K{steps})"]
    for op in reversed(loss.pred_ops):
        lines += _backward_lines(op, an, flow.wants)
    return lines
