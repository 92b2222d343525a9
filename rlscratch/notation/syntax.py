"""The arrow notation's syntax tree and its printer.

A program is a tree of small frozen dataclasses: a ``Program`` of declarations (``Decl``), macros
(``Macro``) and statements (``Statement``: sources, arrows, an optional loss). ``format_program``
writes a tree back as canonical text, so ``parse(format_program(parse(text))) == parse(text)``.
The parser (parser.py) builds these trees; the compiler (lowering.py onwards) gives them meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rlscratch.errors import UserError


class NotationError(UserError):
    """A program that cannot be read or compiled; ``line``/``column`` point at the culprit (1-based)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.message, self.line, self.column = message, line, column
        super().__init__(f"line {line}, column {column}: {message}" if line is not None else message)


# -- the syntax tree --------------------------------------------------------------------------------
# Positions are (line, column) and never take part in equality: two programs are equal when they say
# the same thing, wherever it was written.
def _pos() -> tuple[int, int]:
    return field(default=(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class Index:
    """The context of a state: ``h_t`` (base "t"), ``h_{t-1}`` ("t", -1), ``h_0`` ("", 0), ``A_{T+1}``."""

    base: str  # "t" (the current step), "T" (the last step) or "" (a fixed context)
    offset: int = 0

    def __str__(self) -> str:
        if not self.base:
            return str(self.offset)
        return self.base if self.offset == 0 else f"{self.base}{self.offset:+d}"

    def subscript(self) -> str:
        text = str(self)
        return f"_{text}" if re.fullmatch(r"[A-Za-z0-9]+", text) else f"_{{{text}}}"

    def at(self, t: int | None, last: int | None) -> int:
        """The concrete context this index names when the current step is ``t`` and the last is ``last``."""
        if self.base == "t":
            if t is None:
                raise ValueError("t is only defined inside a statement that runs over time")
            return t + self.offset
        if self.base == "T":
            if last is None:
                raise ValueError("T is only defined when an input is a sequence")
            return last + self.offset
        return self.offset


@dataclass(frozen=True)
class State:
    """A state reference: a name and an optional context, e.g. ``h_{t-1}``."""

    name: str
    index: Index | None = None
    pos: tuple[int, int] = _pos()

    def __str__(self) -> str:
        return self.name + (self.index.subscript() if self.index is not None else "")


@dataclass(frozen=True)
class Number:
    value: float
    text: str = field(default="", compare=False)
    pos: tuple[int, int] = _pos()

    def __str__(self) -> str:
        return self.text or repr(self.value)


@dataclass(frozen=True)
class Call:
    """A function applied inside an expression: ``log(pi_t)``, ``one_hot(y)``, ``tanh(c_t)``."""

    fn: str
    args: tuple[Expr, ...]
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class BinOp:
    op: str  # "+", "-", "*", "/"
    left: Expr
    right: Expr
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Neg:
    operand: Expr
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Pick:
    """``pi_t[a_t]``: the entry of each row chosen by an integer (an action, a label)."""

    value: Expr
    index: Expr
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Concat:
    """``X_t|h_{t-1}``: the states joined along their features."""

    parts: tuple[Expr, ...]
    pos: tuple[int, int] = _pos()


Expr = State | Number | Call | BinOp | Neg | Pick | Concat


@dataclass(frozen=True)
class FnRef:
    """A function by name inside ``--[ ]``: a parameter (``M_1``), a builtin (``relu``) or a macro."""

    name: str
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class FnCall:
    """A function with arguments: ``dense(128)``, ``dropout(0.1)``, ``clip_grad(Policy, 0.5)``."""

    name: str
    args: tuple[FnArg, ...] = ()
    kwargs: tuple[tuple[str, FnArg], ...] = ()
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class FnDecl:
    """``M_1: dense(128)`` written inline inside ``--[ ]``: names a parameter and sizes it at once."""

    name: str
    spec: FnRef | FnCall
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Compose:
    """``M_1|relu``: apply the parts left to right."""

    parts: tuple[Fn, ...]
    pos: tuple[int, int] = _pos()


Fn = FnRef | FnCall | FnDecl | Compose
FnArg = Fn | Number


@dataclass(frozen=True)
class Link:
    """One arrow of a chain: ``--[fn]-> targets``, or ``-> targets`` (fn None: a plain binding)."""

    fn: Fn | None
    targets: tuple[State, ...]
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Loss:
    """``=> target`` (regression, or cross-entropy for a softmax against a one-hot) or ``$ objective``
    (a policy-gradient objective to maximise)."""

    kind: str  # "=>" or "$"
    expr: Expr
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Statement:
    """``sources --[F]-> a --[G]-> b => target``: sources, a chain of links, an optional loss."""

    sources: tuple[Expr, ...]
    links: tuple[Link, ...] = ()
    loss: Loss | None = None
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Decl:
    """``M_1: dense(128)`` (a parameter), ``X: 784`` (a state's size), ``W_r, W_z: dense(4)``."""

    names: tuple[str, ...]
    spec: FnRef | FnCall | Number
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Macro:
    """A named block of statements used as a function: ``Enc: x_t, h_{t-1}`` ... ``return h_t``."""

    name: str
    params: tuple[State, ...]
    body: tuple[Statement, ...]
    returns: tuple[State, ...]
    pos: tuple[int, int] = _pos()


@dataclass(frozen=True)
class Program:
    items: tuple[Decl | Macro | Statement, ...]


# Functions the compiler provides (used to tell ``M_1: dense`` -- a declaration -- from a macro header
# ``Enc: x`` whose parameter happens to be a single state).
BUILTIN_FUNCTIONS = frozenset({
    "dense", "dropout", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "log_softmax", "exp", "log", "huber",
    "add", "mul", "sum", "max", "argmax", "one_hot", "nograd", "clip_grad", "adam_opt", "conv", "batch_norm",
    "max_pool", "flatten", "reshape",
})


# -- the parser -------------------------------------------------------------------------------------
def split_state_name(text: str) -> tuple[str, Index | None]:
    """``h_{t-1}`` -> ("h", t-1), ``h_t`` -> ("h", t), ``h_1`` -> ("h", 1), ``gamma`` -> ("gamma", None).

    Only ``t``, ``T`` and integers are contexts: ``log_pi`` is a name, not ``log`` at context ``pi``.
    """
    if "_{" in text:
        name, inside = text.split("_{", 1)
        return name, parse_index(inside[:-1])
    match = re.fullmatch(r"(.+)_(t|T|\d+)", text)
    if match:
        return match.group(1), parse_index(match.group(2))
    return text, None


def parse_index(text: str) -> Index:
    compact = text.replace(" ", "")
    match = re.fullmatch(r"(t|T)([+-]\d+)?", compact)
    if match:
        return Index(match.group(1), int(match.group(2) or 0))
    if re.fullmatch(r"-?\d+", compact):
        return Index("", int(compact))
    raise ValueError(f"'{text}' is not a context: write t, t-1, t+1, T, T+1 or an integer")


# -- the printer ------------------------------------------------------------------------------------
_LEVEL = {"|": 1, "+": 2, "-": 2, "*": 3, "/": 3}


def _level(expr: Expr) -> int:
    if isinstance(expr, Concat):
        return 1
    if isinstance(expr, BinOp):
        return _LEVEL[expr.op]
    if isinstance(expr, Neg):
        return 4
    return 5


def format_expr(expr: Expr) -> str:
    """Canonical text: spaces around + - * /, none around | (as in X_t|h_{t-1}), parentheses only
    where the tree needs them (operators associate to the left)."""
    if isinstance(expr, (State, Number)):
        return str(expr)
    if isinstance(expr, Call):
        return f"{expr.fn}({', '.join(format_expr(a) for a in expr.args)})"
    if isinstance(expr, Pick):
        inner = format_expr(expr.value)
        return f"{inner if _level(expr.value) >= 5 else f'({inner})'}[{format_expr(expr.index)}]"
    if isinstance(expr, Neg):
        inner = format_expr(expr.operand)
        return f"-{inner if _level(expr.operand) >= 4 else f'({inner})'}"
    if isinstance(expr, Concat):
        return "|".join(format_expr(p) if _level(p) > 1 else f"({format_expr(p)})" for p in expr.parts)
    level = _LEVEL[expr.op]
    left, right = format_expr(expr.left), format_expr(expr.right)
    if _level(expr.left) < level:
        left = f"({left})"
    if _level(expr.right) <= level:
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def format_fn(fn: Fn | Number) -> str:
    if isinstance(fn, Number):
        return str(fn)
    if isinstance(fn, FnRef):
        return fn.name
    if isinstance(fn, FnDecl):
        return f"{fn.name}: {format_fn(fn.spec)}"
    if isinstance(fn, FnCall):
        args = [format_fn(a) for a in fn.args] + [f"{k}={format_fn(v)}" for k, v in fn.kwargs]
        return f"{fn.name}({', '.join(args)})"
    return "|".join(format_fn(p) for p in fn.parts)


def format_statement(statement: Statement) -> str:
    text = ", ".join(format_expr(s) for s in statement.sources)
    for link in statement.links:
        arrow = f" --[{format_fn(link.fn)}]-> " if link.fn is not None else " -> "
        text += arrow + ", ".join(str(t) for t in link.targets)
    if statement.loss is not None:
        text += f" {statement.loss.kind} {format_expr(statement.loss.expr)}"
    return text


def format_program(program: Program) -> str:
    """The program as canonical text, one item per line (a macro's body indented by two spaces)."""
    lines: list[str] = []
    for item in program.items:
        if isinstance(item, Decl):
            lines.append(f"{', '.join(item.names)}: {format_fn(item.spec)}")
        elif isinstance(item, Macro):
            lines.append(f"{item.name}: {', '.join(str(p) for p in item.params)}")
            lines += ["  " + format_statement(s) for s in item.body]
            lines.append(f"  return {', '.join(str(r) for r in item.returns)}")
        else:
            lines.append(format_statement(item))
    return "\n".join(lines) + "\n"
