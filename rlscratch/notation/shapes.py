"""Shapes: every value's size, inferred in both directions until nothing changes; then the parameters.

A size is a number of features (a state is (N, features)), an image shape (C, H, W) for the values
between ``reshape`` and ``flatten`` of a CNN, or SCALAR for a plain number. A dense layer reads its input
size from its input and gives its declared size to its output; activations keep the size; a
concatenation adds sizes; ``x + y`` with x of K features has K features; a convolution maps (C, H, W) to
(channels, H', W'); a macro's arguments and returns take the sizes at the call. When everything that can
be known is known, ``finish`` creates the parameters (in order of first use, so the random draws match
``nn.Sequential`` of the same layers) and raises naming the fix when a size is still missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from rlscratch import nn
from rlscratch.nn.elementwise import OneHot
from rlscratch.nn.module import Module

from .ir import Op, ParamSpec, Ref
from .ops import BINARY, SCALAR, UNARY
from .syntax import Index, NotationError

Size = int | tuple[int, ...]


def _as_tuple(size: Size) -> tuple[int, ...]:
    return size if isinstance(size, tuple) else (size,)


def _make_param(spec: ParamSpec, rng: np.random.Generator, init: str, dtype: Any) -> Module:
    """The module of a sized parameter: nn.Linear, nn.Conv2d or nn.BatchNorm."""
    if spec.kind == "conv":
        return nn.Conv2d(spec.n_in, spec.n_out, spec.options["kernel"], rng, stride=spec.options["stride"],
                         padding=spec.options["padding"], init=spec.init or init, bias=bool(spec.bias), dtype=dtype)
    if spec.kind == "batch_norm":
        return nn.BatchNorm(spec.n_in, momentum=spec.options["momentum"], eps=spec.options["eps"], dtype=dtype)
    return nn.Linear(spec.n_in, spec.n_out, rng, init=spec.init or init, gain=spec.gain, bias=bool(spec.bias),
                     dtype=dtype)


class Shapes:
    """Size inference, mixed into Analysis (which provides blocks, macros, losses, params, recurrent,
    context_free and low)."""

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
            for copy, source in getattr(self, "tied", {}).items():  # a target network: shaped like its source
                changed |= self._tie(self.params[copy], self.params[source])
            if not changed:
                return

    @staticmethod
    def _tie(a: ParamSpec, b: ParamSpec) -> bool:
        changed = False
        for field in ("n_in", "n_out"):
            x, y = getattr(a, field), getattr(b, field)
            if x is None and y is not None:
                setattr(a, field, y)
                changed = True
            elif y is None and x is not None:
                setattr(b, field, x)
                changed = True
            elif x != y:
                raise NotationError(f"{a.name} is a copy of {b.name} but has {field} {x}, not {y}", *a.pos)
        return changed

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
        if op.fn in ("conv", "batch_norm", "max_pool", "flatten", "reshape"):
            return self._infer_image_op(op)
        if op.fn == "dense":
            spec = self.params[op.param]
            changed = False
            n_in = self.size(ins[0])
            if isinstance(n_in, tuple):
                raise NotationError(f"{op.param} is a dense layer and reads {ins[0].label}, shaped {n_in}: flatten it "
                                    f"first, --[flatten|{op.param}]->", *pos)
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
        if op.fn in ("sum", "max", "pick", "argmax"):
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
            if any(isinstance(s, tuple) for s in sizes + [total]):
                raise NotationError("| joins feature vectors; flatten images first (--[flatten]->)", *pos)
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

    def _infer_image_op(self, op: Op) -> bool:
        """conv, batch_norm, max_pool, flatten, reshape: sizes that may be image shapes (C, H, W)."""
        x, out, pos = op.inputs[0], op.outputs[0], op.pos
        size = self.size(x)
        if op.fn == "reshape":
            shape = op.options["shape"]
            if size is not None and math.prod(_as_tuple(size)) != math.prod(shape):
                raise NotationError(f"cannot reshape {x.label} ({size} values) to {shape}", *pos)
            return self._set(self.key(out), shape if len(shape) > 1 else shape[0], pos)
        if op.fn == "batch_norm":
            spec = self.params[op.param]
            changed = self._same(x, out, pos, f"{op.param}({x.label})")
            size = self.size(x) or self.size(out)
            if size is not None and spec.n_in is None:
                spec.n_in = spec.n_out = _as_tuple(size)[0]
                changed = True
            return changed
        if size is None:
            return False
        if op.fn == "flatten":
            return self._set(self.key(out), math.prod(_as_tuple(size)), pos)
        if not isinstance(size, tuple) or len(size) != 3:
            raise NotationError(f"{op.fn} reads images shaped (C, H, W), but {x.label} has {size} features: "
                                "reshape it first, e.g. --[reshape(1, 28, 28)]->", *pos)
        channels, height, width = size
        if op.fn == "max_pool":
            k, s = op.options["kernel"], op.options["stride"]
            return self._set(self.key(out), (channels, (height - k) // s + 1, (width - k) // s + 1), pos)
        spec = self.params[op.param]  # conv
        if spec.n_in is not None and spec.n_in != channels:
            raise NotationError(f"{op.param} reads {x.label} with {channels} channels here but {spec.n_in} "
                                "elsewhere (a parameter has one shape)", *pos)
        changed = spec.n_in is None
        spec.n_in = channels
        k, s, p = spec.options["kernel"], spec.options["stride"], spec.options["padding"]
        h_out, w_out = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
        if h_out < 1 or w_out < 1:
            raise NotationError(f"{op.param}: a {k}x{k} kernel does not fit {x.label}, shaped {size}", *pos)
        return self._set(self.key(out), (spec.n_out, h_out, w_out), pos, f"the output of {op.param}") or changed

    def param_shapes(self) -> dict[str, dict[str, tuple]]:
        """Each parameter's arrays and their shapes ("?" where a size is not known yet)."""
        shapes = {}
        for name in self.low.param_order:
            spec = self.params[name]
            n_out = spec.n_out if spec.n_out is not None else "?"
            n_in = spec.n_in if spec.n_in is not None else "?"
            if spec.kind == "batch_norm":
                shapes[name] = {"gamma": (n_in,), "beta": (n_in,)}
                continue
            shape = {"W": (n_out, n_in) + ((spec.options["kernel"],) * 2 if spec.kind == "conv" else ())}
            if spec.bias:
                shape["b"] = (n_out,)
            shapes[name] = shape
        return shapes

    def finish(self, rng: np.random.Generator, init: str, dtype: Any) -> None:
        """Create every parameter (in order of first use, so the random draws match nn.Sequential's)
        and size every one_hot; raise if a size could not be inferred."""
        for name in self.low.param_order:
            spec = self.params[name]
            if spec.kind == "batch_norm" and spec.n_in is None:
                raise NotationError(f"cannot infer the size of {name}: declare the size of the data, e.g. 'X: 784'",
                                    *spec.pos)
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
                spec.module = _make_param(spec, rng, init, dtype)
            except (ValueError, TypeError) as err:
                raise NotationError(f"{name}: {err}", *spec.pos) from None
        for op in self._ops():
            if op.param is not None:
                op.module = self.params[op.param].module
            elif op.fn == "one_hot" and isinstance(op.module, OneHot) and op.module.classes is None:
                op.module.classes = self.size(op.outputs[0])
