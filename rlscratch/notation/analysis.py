"""Analysis: what a lowered program means as a model, before any number is computed.

Which names are states indexed by a context (``h_t``, ``h_0``) and which are single values; which state
each block defines at which context; which names are data (read, never defined); which states are the
model's outputs (the predictions of its losses, or what nothing else reads); which data are its inputs
(needed for the outputs) and which its targets (needed only by the losses). Then the sizes (shapes.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .ir import Ref
from .lowering import Lowerer
from .shapes import Shapes
from .syntax import Index, NotationError, Program, split_state_name


class Analysis(Shapes):
    """Everything known about a program before any number is computed."""

    def __init__(self, program: Program, sizes: Mapping[str, int] | None = None,
                 outputs: Sequence[str] | None = None, output_size: int | None = None,
                 rng: np.random.Generator | None = None, tied: Mapping[str, str] | None = None) -> None:
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
        self.tied = dict(tied or {})  # target-network parameters -> the parameters they copy (same shapes)
        for copy, source in self.tied.items():
            for name in (copy, source):
                if name not in self.params:
                    raise NotationError(f"copy: {name} is not a parameter of the program")
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
