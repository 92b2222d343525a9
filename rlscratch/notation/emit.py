"""Code generation: a program written out as a standalone numpy module (``python -m rlscratch.notation
emit FILE``), its forward and backward passes line by line as the explanation prints them.

The generated module imports numpy only. It has ``PARAMETERS`` (name -> shape), ``init_params(seed)``,
``forward(params, *inputs)`` -> (outputs, cache) and ``loss_and_gradients(params, *inputs, **targets)``
-> (loss, {parameter: gradient}): enough to train it with any optimizer. Each line is written from the
op's definition in ops.py (the same formula the explanation prints and the layer runs), with the
printed line as a comment above it.

What it covers: dense layers, the activations, the elementwise functions, concatenation, macros
(written inline at each use), recurrences that run forward in time (``h_t`` from ``h_{t-1}``), and
``=>`` losses (mean squared error; softmax with cross-entropy). Anything else -- ``$`` objectives,
backward recurrences such as GAE, ``conv``/``batch_norm``/``dropout``, ``clip_grad`` -- is refused with a
one-line error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rlscratch.nn.formula import HELPERS_SOURCE, python

from .analysis import Analysis
from .explain import _backward_lines, _forward_lines
from .interaction import is_agent_program, split_agent_program
from .ir import Block, LossDef, Op, Ref
from .ops import BINARY, ELEMENTWISE, SCALAR, lookup
from .parser import parse
from .syntax import Index, NotationError

_EXTRA_HELPERS = '''

def col(x):
    """Integer data (a done flag, an action) in arithmetic: a float column (N, 1)."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "biu":
        x = x.astype(np.float32)
        return x[:, None] if x.ndim == 1 else x
    return x


def fit(g, shape):
    """A gradient brought to its input's shape (summed over broadcast axes, copied along narrow ones)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g if g.shape == shape else np.broadcast_to(g, shape).copy()
'''


def _ident(text: str) -> str:
    return re.sub(r"\W", "_", text.replace("{", "").replace("}", "").replace("-", "m").replace("+", "p"))


@dataclass
class Slot:
    """A value in the generated code: how to read it, how to read/accumulate its gradient."""

    value: str
    grad: str
    key: str  # what "has a gradient" is tracked by
    state: bool  # a state's gradient is a zero-initialised array (dict per step); a temporary's a local
    const: bool = False
    data: bool = False


class Emitter:
    def __init__(self, an: Analysis, name: str) -> None:
        self.an, self.name = an, name
        self._check()
        self.counter = 0
        self.fwd: list[str] = []
        self.cached: set[str] = set()  # per-step temporaries stored as dicts (the cache backward reads)
        self.plain: set[str] = set()  # temporaries computed once, outside the loop over t
        self.in_loop = False
        self.in_loss = False  # a loss's own values are computed where its gradient is, not cached

    def _check(self) -> None:
        an = self.an
        for loss in an.losses:
            if loss.kind == "$":
                raise NotationError("emit writes '=>' losses only; '$' objectives are not generated yet")
        for group in an.low.groups:
            raise NotationError(f"emit does not generate {group.text} yet")
        for op in an._ops():
            definition = lookup(op.fn)
            if op.fn not in ("alias", "concat", "macro", "one_hot") and (definition is None or not definition.runnable):
                raise NotationError(f"emit does not generate '{op.fn}' yet (it runs only as the core's module)",
                                    *op.pos)
        for loss in an.losses:
            for op in loss.pred_ops + loss.target_ops:
                for ref in op.inputs:
                    if ref.kind == "state" and ref.index is not None and ref.index.base == "t" and \
                            ref.index.offset > 0 and ref.name not in an.data:
                        raise NotationError(f"emit writes losses over the steps that exist only; {ref.label} is "
                                            "past the last step at t = T (write the loss one step back)",
                                            *loss.statement.pos)
        for block in an.blocks:
            for ref in block.reads:
                if block.over_time and ref.index is not None and ref.index.base == "t" and ref.index.offset > 0 \
                        and ref.name not in an.data:
                    raise NotationError(f"emit writes recurrences forward in time only; {ref.label} looks ahead",
                                        *block.statement.pos)

    # -- slots -------------------------------------------------------------------------------------
    def state_slot(self, ref: Ref, t: str | None) -> Slot:
        an, name = self.an, _ident(ref.name)
        if ref.name in an.recurrent:
            ctx = self.context(ref.index, t)
            return Slot(f"{name}[{ctx}]", f"d{name}[{ctx}]", ref.name, True, data=ref.name in an.data)
        if ref.index is not None and ref.index.base == "":
            name = f"{name}_{ref.index.offset}"
        return Slot(name, f"d{name}", name, True, data=ref.name in an.data)

    @staticmethod
    def context(index: Index | None, t: str | None) -> str:
        if index is None or index.base == "t":
            offset = 0 if index is None else index.offset
            return t if offset == 0 else f"{t} {'+' if offset > 0 else '-'} {abs(offset)}"
        if index.base == "T":
            return "T" if index.offset == 0 else f"T {'+' if index.offset > 0 else '-'} {abs(index.offset)}"
        return str(index.offset)

    def temp(self) -> Slot:
        self.counter += 1
        name = f"v{self.counter}"
        if self.in_loop and not self.in_loss:
            self.cached.add(name)
            return Slot(f"{name}[t]", f"d{name}", name, False)
        if not self.in_loss:
            self.plain.add(name)
        return Slot(name, f"d{name}", name, False)

    # -- forward -----------------------------------------------------------------------------------
    def run_ops(self, ops: list[Op], env: dict[int, Slot], read, indent: str, tape: list) -> None:
        """Write each op's forward line; ``tape`` gets (op, input slots, output slots) for backward."""
        for op in ops:
            ins = [read(r) for r in op.inputs]
            if op.fn == "macro":
                local: dict[str, Slot] = dict(zip(op.macro.params, ins))

                def read_local(ref: Ref, local=local) -> Slot:
                    if ref.kind == "const":
                        return Slot(_const(ref.value), "", "", False, const=True)
                    return local[ref.name]

                for line in _forward_lines(op, self.an):
                    self.fwd.append(f"{indent}# {line}    (macro {op.macro.name}, written inline)")
                inner: list = []
                self.run_ops(op.macro.ops, local, read_local, indent, inner)
                tape.append(("macro", inner))
                for out, ret in zip(op.outputs, op.macro.returns):
                    if out.kind != "state":
                        env[id(out)] = local[ret]
                        continue
                    bound = self.target(out, env)  # the macro's result is the state the arrow names
                    self.fwd.append(f"{indent}{bound.value} = {local[ret].value}")
                    tape.append((Op("alias", [Ref("local", ret, label=ret)], [out]), [local[ret]], [bound]))
                continue
            outs = [self.target(r, env) for r in op.outputs]
            for line in _forward_lines(op, self.an):
                self.fwd.append(f"{indent}# {line}")
            self.fwd.append(f"{indent}{outs[0].value} = {self.forward_expr(op, ins, outs[0])}")
            tape.append((op, ins, outs))

    def target(self, ref: Ref, env: dict) -> Slot:
        if ref.kind == "state":
            slot = self.state_slot(ref, "t" if self.in_loop else None)
        else:  # a temporary, or a macro's local
            slot = self.temp()
        env[id(ref)] = slot
        if ref.kind != "state":
            env[ref.name] = slot  # (a macro's values are looked up by name: its ops are shared by every use)
        return slot

    def forward_expr(self, op: Op, ins: list[Slot], out: Slot) -> str:
        if op.fn == "alias":
            if ins[0].const:
                size = self.an.size(op.outputs[0]) if op.outputs[0].kind != "tmp" else None
                return f"np.full((N, {size}), {ins[0].value}, dtype=DTYPE)" if size not in (None, SCALAR) \
                    else ins[0].value
            return ins[0].value
        if op.fn == "concat":
            return f"np.concatenate([{', '.join(s.value for s in ins)}], axis=-1)"
        if op.fn == "one_hot":
            return f"np.eye({op.module.classes}, dtype=DTYPE)[np.asarray({ins[0].value}).astype(np.int64)]"
        definition = lookup(op.fn)
        names = self.names(op, definition, ins, out)
        return python(definition.forward, names)

    def names(self, op: Op, definition, ins: list[Slot], out: Slot | None) -> dict[str, str]:
        names = {}
        for name, slot in zip(definition.inputs, ins):
            names[name] = f"col({slot.value})" if slot.data and name not in ("i",) and op.param is None else slot.value
        if out is not None:
            names["y"], names["gy"] = out.value, out.grad
        for key in definition.params:
            names[key] = _ident(f"{op.param}.{key}")
        for key in definition.constants:
            names[key] = repr(getattr(op.module, key))
        return names

    # -- backward ----------------------------------------------------------------------------------
    def backward(self, tape: list, indent: str, lines: list[str], assigned: set[str], live: set[str]) -> None:
        """The tape in reverse: each op's gradient lines, for the ops whose output takes a gradient."""
        for entry in reversed(tape):
            if entry[0] == "macro":
                self.backward(entry[1], indent, lines, assigned, live)
                continue
            op, ins, outs = entry
            if op.nograd or op.fn in ("one_hot", "nograd") or outs[0].key not in live:
                continue
            for line in _backward_lines(op, self.an):
                lines.append(f"{indent}# {line}")
            if op.fn == "concat":  # each part gets back its own columns
                start = 0
                for ref, slot in zip(op.inputs, ins):
                    width = self.an.size(ref)
                    if not isinstance(width, int) or width == SCALAR:
                        raise NotationError(f"emit: the size of {ref.label} in a concatenation is unknown", *op.pos)
                    self.accumulate(slot, f"{outs[0].grad}[:, {start}:{start + width}]", indent, lines, assigned,
                                    live)
                    start += width
                continue
            if op.fn == "alias":
                self.accumulate(ins[0], outs[0].grad, indent, lines, assigned, live)
                continue
            definition = lookup(op.fn)
            names = self.names(op, definition, ins, outs[0])
            for key in definition.params:
                if key in definition.backward and (key != "b" or self.an.params[op.param].bias):
                    lines.append(f"{indent}d{_ident(op.param + '.' + key)} += "
                                 f"{python(definition.backward[key], names)}")
            for name, slot in zip(definition.inputs, ins):
                if name in definition.backward:
                    expr = python(definition.backward[name], names)
                    if op.fn in BINARY or op.fn in ELEMENTWISE:  # these broadcast: sum back to the input's shape
                        expr = f"fit({expr}, np.shape({slot.value}))"
                    self.accumulate(slot, expr, indent, lines, assigned, live)

    @staticmethod
    def accumulate(slot: Slot, expr: str, indent: str, lines: list[str], assigned: set[str], live: set[str]) -> None:
        if slot.const or slot.data:
            return
        live.add(slot.key)
        if slot.state:
            lines.append(f"{indent}{slot.grad} += {expr}")
        elif slot.grad in assigned:
            lines.append(f"{indent}{slot.grad} = {slot.grad} + {expr}")
        else:
            assigned.add(slot.grad)
            lines.append(f"{indent}{slot.grad} = {expr}")


def _const(value: float) -> str:
    return repr(float(value))


def emit(source: str, sizes: Mapping[str, int] | None = None, name: str = "model") -> str:
    """The program as the source text of a standalone numpy module (of an agent program: its network and
    losses; the interaction lines stay comments)."""
    if is_agent_program(source):
        agent = split_agent_program(source)
        if agent.targets:
            raise NotationError("emit: copy(...) target networks are not supported in generated code yet")
        source = agent.network
    an = Analysis(parse(source), sizes=sizes)
    an.finish(np.random.default_rng(0), "he", np.float32)  # every size known (and one_hot's classes)
    return _Writer(an, source, name).module()


def _producer(an: Analysis, ref: Ref) -> Op | None:
    """The op whose output is a state (to find the logits of a softmax output)."""
    if ref.producer is not None:
        return ref.producer
    entry = an.defs.get(ref.name, {})
    block = entry.get("step") or next((b for _, b in entry.get("fixed", [])), None)
    return next((op for op in (block.ops if block else []) for r in op.outputs
                 if r.kind == "state" and r.name == ref.name), None)


class _Writer:
    """Lays the module out: ``forward`` (the blocks before the loop over t, the loop, the blocks after
    it) and ``loss_and_gradients`` (the losses and the backward pass, in the reverse order)."""

    def __init__(self, an: Analysis, source: str, name: str) -> None:
        self.an, self.source, self.name = an, source, name
        self.em = Emitter(an, name)
        self.env: dict = {}

    def read(self, t: str | None):
        def read(ref: Ref) -> Slot:
            if ref.kind == "const":
                return Slot(_const(ref.value), "", "", False, const=True)
            if ref.kind == "state":
                return self.em.state_slot(ref, t)
            return self.env[id(ref)] if id(ref) in self.env else self.env[ref.name]
        return read

    def module(self) -> str:
        an, em = self.an, self.em
        timed = [b for b in an.blocks if b.over_time]
        before = [b for b in an.blocks if not b.over_time and not self.reads_time(b)]
        after = [b for b in an.blocks if not b.over_time and b not in before]
        self.tapes: dict[str, list] = {"before": [], "loop": [], "after": []}
        for block in before:
            em.run_ops(block.ops, self.env, self.read(None), "    ", self.tapes["before"])
        if timed:
            em.fwd += ["    def step(t):", '        """One step of the recurrence: every value of step t."""']
            em.in_loop = True
            for block in self.loop_order(timed):
                em.run_ops(block.ops, self.env, self.read("t"), "        ", self.tapes["loop"])
            em.in_loop = False
            em.fwd += self.forward_loop()
        for block in after:
            em.run_ops(block.ops, self.env, self.read(None), "    ", self.tapes["after"])
        live: set[str] = set()
        for _ in range(4):  # a step's gradient comes from later steps too: grow the live set until it settles
            size = len(live)
            backward = self.backward(live)
            if len(live) == size:
                break
        return "\n".join(self.header() + self.forward_function() + self.loss_function(backward))

    def forgettable(self) -> list[str]:
        """The per-step states checkpointing may drop (not data, not outputs: those are always kept)."""
        outputs = {name for name, _, _ in self.an.outputs}
        return sorted(_ident(n) for n in self.an.recurrent - set(self.an.data) - outputs)

    def forward_loop(self) -> list[str]:
        temps = ", ".join(sorted(self.em.cached)) + ("," if len(self.em.cached) == 1 else "")
        states = ", ".join(self.forgettable()) + ("," if len(self.forgettable()) == 1 else "")
        lags = [-r.index.offset for b in self.an.blocks if b.over_time for r in b.reads
                if r.index is not None and r.index.base == "t" and r.name not in self.an.data]
        return ["", "    def forget(t, kept):",
                '        """Checkpointing: drop the values of step t, and its states unless t is a kept step."""',
                f"        for values in ({temps}):",
                "            values.pop(t, None)",
                f"        for values in ({states}):" if states else "        for values in ():",
                "            if not kept:",
                "                values.pop(t, None)",
                "",
                f"    if keep_every and {max(lags, default=1)} > 1:",
                "        raise ValueError('keep_every: this program reads states more than one step back')",
                "    for t in range(1, T + 1):",
                "        step(t)",
                "        if keep_every:  # keep every keep_every-th state and the last; backward recomputes the rest",
                "            forget(t, kept=True)",
                "            forget(t - 1, kept=(t - 1) % keep_every == 0)"]

    def reads_time(self, block: Block) -> bool:
        return any(r.name in self.an.recurrent and r.name not in self.an.data for r in block.reads)

    def loop_order(self, blocks: list[Block]) -> list[Block]:
        """The blocks of one step in an order where each reads only what this step has already written."""
        done: list[Block] = []
        defined = {t.name: b for b in blocks for t in b.targets}
        while len(done) < len(blocks):
            for block in blocks:
                needs = {defined[r.name] for r in block.reads if r.name in defined and r.index is not None
                         and r.index.base == "t" and r.index.offset == 0} - {block}
                if block not in done and needs <= set(done):
                    done.append(block)
                    break
            else:
                raise NotationError("emit: the states of one step depend on each other in a circle")
        return done

    # -- losses and backward -----------------------------------------------------------------------
    def loss(self, loss: LossDef, indent: str, out: list[str], assigned: set[str], live: set[str]) -> None:
        """One loss term: its prediction and target, its value, the gradient it starts, its own backward."""
        em = self.em
        t = "t" if loss.over_time else None
        env: dict = {}
        read = self.read(t)

        def read_env(ref: Ref) -> Slot:
            return env[id(ref)] if ref.kind in ("tmp", "local") else read(ref)

        start, em.in_loss = len(em.fwd), True
        tape: list = []
        em.run_ops(loss.target_ops, env, read_env, indent, [])
        em.run_ops(loss.pred_ops, env, read_env, indent, tape)
        em.in_loss = False
        out += em.fwd[start:]
        del em.fwd[start:]
        pred, target = read_env(loss.pred), read_env(loss.target)
        steps = "T" if loss.over_time else "1"
        producer = _producer(self.an, loss.pred) if loss.pred.kind == "state" else None
        if loss.labels is not None and producer is not None and producer.fn == "softmax":
            logits = self.read(t)(producer.inputs[0]) if producer.inputs[0].kind == "state" else \
                self.env[id(producer.inputs[0])]
            out += [f"{indent}# L += mean_n CE({loss.pred.label}, one_hot({loss.target.label})): softmax and the log "
                    "cancel, dL/dlogits = (p - one_hot(y)) / N",
                    f"{indent}logp = log_softmax({logits.value})",
                    f"{indent}labels = np.asarray({target.value}).reshape(-1).astype(np.int64)",
                    f"{indent}loss += -float(logp[np.arange(len(labels)), labels].mean()) / {steps}"]
            em.accumulate(logits, f"(np.exp(logp) - one_hot(labels, logp)) / (len(labels) * {steps})", indent,
                          out, assigned, live)
            return
        target_value = f"one_hot({target.value}, {pred.value})" if loss.labels is not None else f"col({target.value})"
        out += [f"{indent}# L += mean_n mean_k ({loss.pred.label} - target)^2    (the target is a constant)",
                f"{indent}diff = {pred.value} - {target_value}",
                f"{indent}loss += float((diff ** 2).mean()) / {steps}"]
        em.accumulate(pred, f"2 * diff / (diff.size * {steps})", indent, out, assigned, live)
        em.backward(tape, indent, out, assigned, live)

    def backward(self, live: set[str]) -> list[str]:
        em, out = self.em, []
        plain: set[str] = set()
        for loss in self.an.losses:
            if not loss.over_time:
                self.loss(loss, "    ", out, plain, live)
        em.backward(self.tapes["after"], "    ", out, plain, live)
        if self.tapes["loop"] or any(loss.over_time for loss in self.an.losses):
            body: list[str] = []
            step: set[str] = set()
            for loss in self.an.losses:
                if loss.over_time:
                    self.loss(loss, "        ", body, step, live)
            em.backward(self.tapes["loop"], "        ", body, step, live)
            out += ["    for t in range(T, 0, -1):"] + self.recompute() + body + self.release()
        em.backward(self.tapes["before"], "    ", out, plain, live)
        return out

    def recompute(self) -> list[str]:
        """Checkpointing, at the top of each backward step: recompute the segment since the last kept state."""
        if not self.em.cached:
            return []
        probe = sorted(self.em.cached)[0]
        grads = [f"                d{n}.setdefault(s, np.zeros(np.shape({n}[s]), dtype=DTYPE))"
                 for n in self.forgettable()]
        return [f"        if keep_every and t not in {probe}:  # recompute steps start+1 .. t from the kept state",
                "            start = (t - 1) // keep_every * keep_every",
                "            for s in range(start + 1, t + 1):",
                "                step(s)"] + (["            for s in range(start, t + 1):"] + grads if grads else [])

    def release(self) -> list[str]:
        """Checkpointing, at the end of each backward step: step t's values and gradients are used up."""
        if not self.em.cached:
            return []
        lines = ["        if keep_every:", "            forget(t, kept=t % keep_every == 0 or t == T)"]
        lines += [f"            d{n}.pop(t, None)" for n in self.forgettable()]
        return lines

    # -- the module ----------------------------------------------------------------------------------
    def params(self) -> dict[str, tuple]:
        return {f"{n}.{k}": s for n, shapes in self.an.param_shapes().items() for k, s in shapes.items()}

    def header(self) -> list[str]:
        out = [f'"""{self.name}: generated by python -m rlscratch.notation emit -- numpy only, every forward and',
               "backward step written out (each under the line `python -m rlscratch.notation` prints for it).", "",
               "The program:", ""]
        out += ["    " + line for line in self.source.strip().splitlines()]
        out += ["", "Use: params = init_params(); loss, grads = loss_and_gradients(params, *inputs, *targets);",
                "then any optimizer, e.g. params[k] -= lr * grads[k].", '"""', "", "import numpy as np", "",
                "DTYPE = np.float32", "", "", HELPERS_SOURCE.rstrip(), _EXTRA_HELPERS.rstrip(), "", "",
                "def _zeros(v):",
                "    if isinstance(v, dict):",
                "        return {k: np.zeros(np.shape(x), dtype=DTYPE) for k, x in v.items()}",
                "    return np.zeros(np.shape(v), dtype=DTYPE)", "", ""]
        out.append("PARAMETERS = {" + ", ".join(f"{k!r}: {tuple(v)!r}" for k, v in self.params().items()) + "}")
        out += [f"INPUTS = {self.an.inputs!r}", f"TARGETS = {self.an.targets!r}", "", "",
                "def init_params(seed=0, dtype=np.float32):",
                '    """He-normal weights (fan-in: every axis but the first), zero biases."""',
                "    rng = np.random.default_rng(seed)",
                "    return {k: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(dtype)",
                "            if k.endswith('.W') else np.zeros(s, dtype=dtype) for k, s in PARAMETERS.items()}", "", ""]
        return out

    def forward_function(self) -> list[str]:
        an, em = self.an, self.em
        sig = ", ".join(_ident(n) for n in an.inputs)
        keep = ", keep_every=None" if self.tapes["loop"] else ""
        out = [f"def forward(params, {sig}{keep}):",
               '    """The outputs, and the cache of every value computed (what backward reads). keep_every=k keeps',
               '    only every k-th state of the recurrence; backward recomputes the rest (checkpointing)."""']
        out += [f"    {_ident(k)} = params[{k!r}]" for k in self.params()]
        out.append("    T = None")
        for name in an.inputs:
            if name in an.sequences:
                ident = _ident(name)
                out += [f"    T = len({ident}) if T is None else min(T, len({ident}))",
                        f"    {ident} = {{s + 1: x for s, x in enumerate({ident})}}  # {ident}_1 .. {ident}_T"]
        if an.inputs:
            first = _ident(an.inputs[0])
            out.append(f"    N = len({first}[1])" if an.inputs[0] in an.sequences else f"    N = len({first})")
        out += [f"    {_ident(n)} = {{}}" for n in sorted(an.recurrent - set(an.data))]
        out += [f"    {c} = {{}}" for c in sorted(em.cached)]
        out += em.fwd
        outputs = []
        for name, index, over_time in an.outputs:
            outputs.append(f"np.stack([{_ident(name)}[t] for t in range(1, T + 1)])" if over_time else
                           em.state_slot(Ref("state", name, index), None).value)
        out += [f"    return ({', '.join(outputs)}{',' if len(outputs) == 1 else ''}), dict(locals())", "", ""]
        return out

    def loss_function(self, backward: list[str]) -> list[str]:
        an, em = self.an, self.em
        sig = ", ".join(_ident(n) for n in an.inputs)
        targets = ", ".join(_ident(n) for n in an.targets)
        states = {_ident(n) for n in an.recurrent - set(an.data)} | self.plain_states()
        loop = bool(self.tapes["loop"])
        keep = ", keep_every=None" if loop else ""
        out = [f"def loss_and_gradients(params, {sig}{', ' + targets if targets else ''}{keep}):",
               '    """The program\'s => losses and the gradient of each parameter: forward, then backward."""',
               f"    _, cache = forward(params, {sig}{', keep_every=keep_every' if loop else ''})"]
        out += [f"    {_ident(k)} = params[{k!r}]" for k in self.params()]
        names = sorted(states | em.cached | em.plain | {_ident(n) for n in an.inputs} | {"T", "N"}
                       | ({"step", "forget"} if loop else set()))
        out += [f"    {n} = cache[{n!r}]" for n in names]
        for name in an.targets:
            if name in an.sequences:
                ident = _ident(name)
                out.append(f"    {ident} = {{s + 1: x for s, x in enumerate({ident})}}")
        out += [f"    d{n} = _zeros({n})" for n in sorted(states)]
        out += [f"    d{_ident(k)} = np.zeros_like({_ident(k)})" for k in self.params()]
        out += ["    loss = 0.0"] + backward
        out += ["    return loss, {" + ", ".join(f"{k!r}: d{_ident(k)}" for k in self.params()) + "}", ""]
        return out

    def plain_states(self) -> set[str]:
        names = set()
        for block in self.an.blocks:
            for ref in block.targets:
                value = self.em.state_slot(ref, "t").value
                if "[" not in value:
                    names.add(value)
        return names
