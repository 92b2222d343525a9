"""Running a compiled program: states computed on demand, a tape of module calls, backward, losses.

``_Pass`` is one evaluation on one batch. It computes a state at a context on demand: it finds the block
defining it, first computes the states that block reads (iteratively, so a recurrence over 10,000 steps
needs no deep recursion), then runs the block's ops. Ops that need a gradient call their module's
``forward`` and are recorded on a *tape*; the rest call ``infer`` and keep nothing.

Backward walks the tape in reverse and calls each module's ``backward``: the tape is the exact reverse
of the forward calls, so every module's stack of saved values pops in the right order -- which makes the
same parameter at every time step (backprop through time) just work.

Losses (``=>`` and ``$``) are evaluated per context after the forward pass; their gradients are injected
into the forward graph's nodes -- a softmax against a one-hot straight into the logits, as ``p - y``
(docs/backprop.md) -- and the tape does the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rlscratch import nn
from rlscratch.nn.elementwise import as_labels, as_operand
from rlscratch.nn.module import Module

from .ir import Block, LossDef, Op, Ref
from .ops import SCALAR
from .syntax import Index, NotationError, Statement, format_statement

if TYPE_CHECKING:
    from .model import NotationModel


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

    __slots__ = ("value", "grad", "requires_grad", "logits", "pushed")

    def __init__(self, value: Any, requires_grad: bool = False) -> None:
        self.value = value
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad
        self.logits: _Node | None = None  # set when this node is softmax(logits)
        self.pushed = 0  # how many values its module's forward saved (for backward to drop unused)

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
            op.param is not None or any(n.requires_grad for n in nodes))
        stochastic = tape is not None and op.fn == "dropout" and module.training
        if requires or stochastic:
            before = len(module._saved)
            y = module.forward(*values)
            node = _Node(y, requires)
            node.pushed = len(module._saved) - before
            tape.append((op, module, inputs, node))
        else:
            try:
                node = _Node(module.infer(*values), False)
            except ValueError as err:  # one_hot with no known number of classes
                raise NotationError(str(err), *op.pos) from None
        if op.fn == "softmax" and isinstance(inputs[0], _Node):
            node.logits = inputs[0]
        return node

    def constant(self, value: float, target: Ref) -> Any:
        """``0 -> h_0``: a number bound to a state becomes a full (N, size) array when the state's size is known."""
        size = self.an.size(target) if target.kind != "tmp" else None
        if size not in (None, SCALAR):
            shape = size if isinstance(size, tuple) else (size,)
            return np.full((self.N, *shape), value, dtype=self.dtype)
        return float(value)

    # -- backward -------------------------------------------------------------------------------
    @staticmethod
    def backprop(tape: list[tuple[Op, Module, list[Any], _Node]]) -> None:
        """The chain rule: the tape in reverse, each module's backward popping its own forward's values."""
        for op, module, inputs, out in reversed(tape):
            if out.grad is None:  # nothing reached this value (an output no loss reads): its gradients are 0
                if out.pushed:
                    del module._saved[-out.pushed:]  # drop what its forward kept, as its backward would have
                continue
            grad = out.grad
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
            value, dlogits = nn.softmax_cross_entropy(pred.logits.value, as_labels(target))
            return value, [(pred.logits, dlogits)], local
        if loss.labels is not None:
            target = np.eye(pred.value.shape[-1], dtype=pred.value.dtype)[as_labels(target)]
        target = np.broadcast_to(as_operand(target), pred.value.shape)
        value, dpred = nn.mse(pred.value, target)
        return value, [(pred, dpred)], local


def _show(key: tuple[str, int | None]) -> str:
    name, ctx = key
    return name if ctx is None else name + Index("", ctx).subscript()


def format_statement_short(statement: Statement) -> str:
    text = format_statement(statement)
    return text if len(text) < 80 else text[:77] + "..."
