"""The compiler's intermediate form: what lowering (lowering.py) makes of a syntax tree.

A program becomes *ops* over *refs*. A ``Ref`` is a value an op reads or writes: a state of the
program (``h_{t-1}``, resolved against the current step when the program runs), a macro's local, an
unnamed intermediate (``M_1(X)``) or a constant. An ``Op`` is one function application. The ops of one
arrow form a ``Block`` (the definition of the state(s) it names); a macro's ops form a ``MacroDef``; a
loss's ops form a ``LossDef``. Parameters are ``ParamSpec`` records, sized later (shapes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlscratch.nn.module import Module

from .syntax import Index, Statement


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
    options: dict[str, Any] = field(default_factory=dict)  # reshape: the shape; max_pool: the window


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
    """A named parameter: a dense layer (n_in -> n_out features), a convolution (n_in -> n_out channels,
    ``options``: kernel, stride, padding) or a batch normalisation (n_in = n_out channels or features).
    Sizes and initialiser first; the module once every size is known (Analysis.finish)."""

    name: str
    kind: str = "dense"  # "dense", "conv" or "batch_norm"
    n_out: int | None = None
    n_in: int | None = None
    init: str | None = None
    gain: float | None = None
    bias: bool = True
    pos: tuple[int, int] = (0, 0)
    options: dict[str, Any] = field(default_factory=dict)
    module: Module | None = None
    implicit: bool = False  # used without a declaration (a capitalised name): a dense layer, sized by inference


@dataclass(eq=False)
class Group:
    """``clip_grad(F, c)`` or ``adam_opt(F, lr=...)``: what to do with the parameters inside F."""

    kind: str  # "clip" or "adam"
    params: list[str]
    options: dict[str, Any]
    text: str

