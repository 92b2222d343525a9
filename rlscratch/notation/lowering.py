"""Lowering: the syntax tree -> ops over refs (ir.py), no numbers yet.

Every function application becomes an ``Op`` reading and writing ``Ref``s; the ops of each arrow form a
``Block`` defining its target state(s); each macro is lowered once into a ``MacroDef`` and called by a
"macro" op; each loss (``=>``, ``$``) becomes a ``LossDef``. Parameters (``M_1: dense(128)``,
``C_1: conv(16, 3)``, ``B_1: batch_norm``, or a capitalised name nobody declared) become ``ParamSpec``
records in order of first use, which is the order they are created and initialised in. The modules of
parameter-free functions are made here, one per use (ops.py says which module each function is).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from rlscratch import nn
from rlscratch.nn.elementwise import ArgMax, OneHot
from rlscratch.nn.module import Module

from .ir import Block, Group, LossDef, MacroDef, Op, ParamSpec, Ref
from .ops import KNOWN_FUNCTIONS, PARAM_LAYERS, UNARY, make_module
from .syntax import (
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
)


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
        if spec.name in PARAM_LAYERS:
            self.params[name] = _param_spec(name, spec, pos)
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
            op.fused = make_module("log_softmax")
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
            return self.emit(ops, expr.op, [a, b], label, make_module(expr.op), expr.pos, nograd)
        if isinstance(expr, Neg):
            a = self.expr(expr.operand, ops, nograd)
            if a.kind == "const":
                return Ref("const", value=-a.value, label=label)
            return self.emit(ops, "neg", [a], label, make_module("neg"), expr.pos, nograd)
        if isinstance(expr, Concat):
            parts = [self.expr(p, ops, nograd) for p in expr.parts]
            return self.emit(ops, "concat", parts, label, nn.Concat(), expr.pos, nograd)
        if isinstance(expr, Pick):
            value, index = self.expr(expr.value, ops, nograd), self.expr(expr.index, ops, nograd)
            return self.emit(ops, "pick", [value, index], label, make_module("pick"), expr.pos, nograd)
        # a call: a builtin on one argument, or a parameter/macro written as a function
        args = [self.expr(a, ops, nograd) for a in expr.args]
        if expr.fn == "one_hot":
            self._one_arg(expr.fn, args, expr.pos)
            return self.emit(ops, "one_hot", args, label, OneHot(), expr.pos, nograd=True)
        if expr.fn == "argmax":  # an index (Double DQN's action): no gradient
            self._one_arg(expr.fn, args, expr.pos)
            return self.emit(ops, "argmax", args, label, ArgMax(), expr.pos, nograd=True)
        if expr.fn == "nograd":
            self._one_arg(expr.fn, args, expr.pos)
            return self.emit(ops, "nograd", args, label, make_module("nograd"), expr.pos, nograd=True)
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
            return [self.emit(ops, name, refs, f"{name}({refs[0].label})", make_module(name), pos, nograd)]
        if name in ("one_hot", "nograd"):
            self._one_arg(name, refs, pos)
            module = OneHot() if name == "one_hot" else make_module("nograd")
            return [self.emit(ops, name, refs, f"{name}({refs[0].label})", module, pos, nograd=True)]
        if name in ("add", "mul"):
            if len(refs) < 2:
                raise NotationError(f"{name} combines two or more states: a, b --[{name}]-> c", *pos)
            out = refs[0]
            for ref in refs[1:]:
                symbol = "+" if name == "add" else "*"
                label = f"{_paren(out.label)} {symbol} {_paren(ref.label)}"
                out = self.emit(ops, symbol, [out, ref], label, make_module(symbol), pos, nograd)
            return [out]
        if name == "flatten":
            self._one_arg(name, refs, pos)
            return [self.emit(ops, name, refs, f"flatten({refs[0].label})", make_module(name), pos, nograd)]
        if name in PARAM_LAYERS:
            example = {"dense": "M_1: dense(128)", "conv": "C_1: conv(16, 3)", "batch_norm": "B_1: batch_norm"}[name]
            raise NotationError(f"name the parameter and give its size: --[{example}]-> (or a line '{example}')", *pos)
        if name in KNOWN_FUNCTIONS:
            raise NotationError(f"{name} needs arguments, e.g. {name}(...)", *pos)
        if name not in self.params:
            if not name[0].isupper():
                raise NotationError(f"unknown function '{name}'{_did_you_mean(name, KNOWN_FUNCTIONS)} (a parameter "
                                    "name starts with a capital letter, e.g. M_1, or is declared: w: dense(64))",
                                    *pos)
            self.params[name] = ParamSpec(name, pos=pos, implicit=True)
        return [self.apply_param(name, refs, ops, pos, nograd)]

    def apply_param(self, name: str, refs: list[Ref], ops: list[Op], pos: tuple[int, int], nograd: bool) -> Ref:
        if len(refs) != 1:
            raise NotationError(f"parameter {name} reads one state, got {len(refs)}; concatenate them with |: "
                                f"X_t|h_{{t-1}} --[{name}]-> h_t", *pos)
        if name not in self.param_order:
            self.param_order.append(name)
        for collector in self._collectors:
            collector.add(name)
        return self.emit(ops, self.params[name].kind, refs, f"{name}({refs[0].label})", None, pos, nograd, param=name)

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
            args = tuple(float(_option(a)) for a in fn.args)
            return [self.emit(ops, name, refs, f"{name}({refs[0].label})", make_module(name, args), pos, nograd)]
        if name in ("max_pool", "reshape"):
            return [self.apply_shaping(fn, refs, ops, nograd)]
        if name in PARAM_LAYERS:
            given = {"dense": "M_1", "conv": "C_1", "batch_norm": "B_1"}[name]
            raise NotationError(f"name the parameter: --[{given}: {format_fn(fn)}]-> (or a line '{given}: "
                                f"{format_fn(fn)}')", *pos)
        if name in self.params or name in self.macro_asts or name in UNARY:
            raise NotationError(f"{name} takes no arguments here: write --[{name}]->", *pos)
        raise NotationError(f"unknown function '{name}'{_did_you_mean(name, KNOWN_FUNCTIONS | set(self.macro_asts))}",
                            *pos)

    def apply_shaping(self, fn: FnCall, refs: list[Ref], ops: list[Op], nograd: bool) -> Ref:
        """``max_pool(k)`` / ``max_pool(k, stride=s)`` over (C, H, W) images; ``reshape(1, 28, 28)``."""
        name, pos = fn.name, fn.pos
        self._one_arg(name, refs, pos)
        numbers = [_option(a) for a in fn.args]
        kwargs = {k: _option(v) for k, v in fn.kwargs}
        if not numbers or not all(isinstance(n, int) and n >= 1 for n in numbers) or \
                set(kwargs) - ({"stride"} if name == "max_pool" else set()):
            usage = "max_pool(k) or max_pool(k, stride=s)" if name == "max_pool" else "reshape(C, H, W)"
            raise NotationError(f"{name} takes positive whole numbers: {usage}", *pos)
        if name == "max_pool":
            options = {"kernel": numbers[0], "stride": int(kwargs.get("stride", numbers[0]))}
            module = nn.MaxPool2d(options["kernel"], options["stride"])
        else:
            options = {"shape": tuple(numbers)}
            module = nn.Reshape(*numbers)
        label = f"{format_fn(fn)}({refs[0].label})"
        return self.emit(ops, name, refs, label, module, pos, nograd, options=options)

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


_PARAM_OPTIONS = {"dense": {"init", "gain", "bias"}, "conv": {"stride", "padding", "init", "bias"},
                  "batch_norm": {"momentum", "eps"}}
_PARAM_USAGE = {"dense": "dense(n_out, init=..., gain=..., bias=...)",
                "conv": "conv(channels, kernel, stride=1, padding=0, init=..., bias=...)",
                "batch_norm": "batch_norm or batch_norm(momentum=0.1, eps=1e-5)"}


def _param_spec(name: str, spec: FnRef | FnCall, pos: tuple[int, int]) -> ParamSpec:
    """``M_1: dense(128)``, ``C_1: conv(16, 3, padding=1)``, ``B_1: batch_norm`` -> its ParamSpec."""
    kind = spec.name
    args = [_option(a) for a in spec.args] if isinstance(spec, FnCall) else []
    kwargs = {k: _option(v) for k, v in spec.kwargs} if isinstance(spec, FnCall) else {}
    unknown = set(kwargs) - _PARAM_OPTIONS[kind]
    counts = {"dense": (0, 1), "conv": (2, 2), "batch_norm": (0, 0)}[kind]
    whole = [a for a in args if isinstance(a, int) and not isinstance(a, bool) and a >= 1]
    if unknown or not counts[0] <= len(args) <= counts[1] or len(whole) != len(args):
        what = f"not '{sorted(unknown)[0]}='" if unknown else "sizes are positive whole numbers"
        raise NotationError(f"{kind} takes {_PARAM_USAGE[kind]}; {what}", *pos)
    result = ParamSpec(name, kind=kind, pos=pos, init=kwargs.get("init"), gain=kwargs.get("gain"),
                       bias=bool(kwargs.get("bias", True)))
    if kind == "dense" and args:
        result.n_out = args[0]
    elif kind == "conv":
        result.n_out = args[0]
        result.options = {"kernel": args[1], "stride": int(kwargs.get("stride", 1)),
                          "padding": int(kwargs.get("padding", 0))}
    elif kind == "batch_norm":
        result.bias = False
        result.options = {"momentum": float(kwargs.get("momentum", 0.1)), "eps": float(kwargs.get("eps", 1e-5))}
    return result
