"""Explanation: a program's data, parameter shapes, and its forward, loss and backward passes, one line
per step -- the chain rule written out (``python -m rlscratch.notation FILE``).

Every line of an op is printed from that op's definition in ops.py (nn/formula.py renders the formulas
with the program's names), so what is printed is what runs. What is decided here is only the layout:
which values take a gradient at all (``_Flow``), ``=`` for an intermediate and ``+=`` for a state that
may be read several times, and the losses' first gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rlscratch.nn.formula import render

from .analysis import Analysis
from .interaction import is_agent_program, split_agent_program
from .ir import Block, LossDef, Op, Ref
from .lowering import _paren
from .ops import BINARY, PARAM_LAYERS, SCALAR, SHAPING, OpDef, lookup
from .parser import parse
from .syntax import Program, format_program


def explain(source: str | Program, sizes: Mapping[str, int] | None = None) -> str:
    """The program, its parameters' shapes, and its forward, loss and backward passes one line per step.
    An agent program (with reset/step lines: interaction.py) starts with what its interaction lines bind."""
    agent_lines: list[str] = []
    tied: dict[str, str] = {}
    if isinstance(source, str) and is_agent_program(source):
        agent = split_agent_program(source)
        source, tied = agent.network, agent.targets
        agent_lines = ["agent (agents/notation.py does these):"] + ["  " + line for line in agent.lines] + [""]
    program = parse(source) if isinstance(source, str) else source
    an = Analysis(program, sizes=sizes, tied=tied)
    an.folded = _folded_softmaxes(an)
    lines = agent_lines + ["program:"] + ["  " + line for line in format_program(program).splitlines()]

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
        lines.append(f"  {name}: {an.params[name].kind}  {parts}")
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


def _names(op: Op, an: Analysis, definition: OpDef) -> dict[str, str]:
    """What each name in an op's formulas stands for: its inputs' and output's labels, dL/dy, the
    parameter's arrays (M_1.W) and the module's constants (the slope of leaky_relu, as a number)."""
    out = op.outputs[0]
    names = {"y": _paren(out.label), "gy": _g(out)}
    names.update((name, _paren(ref.label)) for name, ref in zip(definition.inputs, op.inputs))
    names.update((key, f"{op.param}.{key}") for key in definition.params)
    names.update((key, str(getattr(op.module, key))) for key in definition.constants if op.module is not None)
    return names


def _forward_lines(op: Op, an: Analysis) -> list[str]:
    ins = [r.label for r in op.inputs]
    out = ", ".join(r.label for r in op.outputs)
    nograd = "    (nograd: no gradient flows back)" if op.nograd else ""
    if op.param is not None:
        definition = PARAM_LAYERS[op.fn]
        spec = an.params[op.param]
        no_bias = spec.kind in ("dense", "conv") and not spec.bias
        formula = definition.forward.replace(" + b", "") if no_bias else definition.forward
        return [f"{out} = {render(formula, _names(op, an, definition))}{nograd}"]
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
        definition = SHAPING["dropout"]
        return [f"{out} = {render(definition.forward, _names(op, an, definition))},  m ~ Bernoulli(1 - p), "
                f"p = {op.module.p}"]
    if op.fn in ("max_pool", "reshape"):
        return [f"{out} = {op.text}{nograd}"]
    return [f"{out} = {op.fn}({ins[0]}){nograd}"]


def _backward_lines(op: Op, an: Analysis, wants: Callable[[Ref], bool] = lambda ref: ref.kind != "const"
                    ) -> list[str]:
    """The backward step of one op, printed from its definition's formulas (ops.py): the gradient of
    each parameter array, and of each input that takes one (``wants``)."""
    def acc(ref: Ref) -> str:
        return "=" if ref.kind == "tmp" else "+="

    if op.fn == "one_hot":
        return []
    if op.nograd or op.fn == "nograd":
        return [f"({', '.join(r.label for r in op.outputs)}: nograd, no gradient flows back through it)"]
    out = op.outputs[0]
    gy = _g(out)
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
    if op.fn == "softmax" and out.kind == "state" and out.name in an.folded:
        return [f"(softmax: no gradient reaches {out.label} itself; the loss sent it straight to "
                f"{_paren(op.inputs[0].label)}, above)"]
    definition = lookup(op.fn)
    if definition is None:
        return []
    names = _names(op, an, definition)
    lines = []
    for key in definition.params:
        if key in definition.backward and (key != "b" or an.params[op.param].bias):
            lines.append(f"dL/d{op.param}.{key} += {render(definition.backward[key], names)}")
    note = definition.note.format_map(names)
    for name, ref in zip(definition.inputs, op.inputs):
        if name in definition.backward and wants(ref):
            line = f"{_g(ref)} {acc(ref)} {render(definition.backward[name], names)}"
            if op.param is not None and ref.kind == "state" and ref.name in an.data:
                note = f"{ref.label} is data: computed only when asked for"
            if note:
                line, note = f"{line}    ({note})", ""
            lines.append(line)
    if note and lines:
        lines[-1] += f"    ({note})"
    return lines


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
