"""The compiled model: a program as a Module, and the entry points that build one.

``compile_program`` parses, analyses and sizes a program and returns a ``NotationModel``: a Module like
any other (flat parameter buffer, ``state_dict`` names ``M_1.W``, ``clone``, ``astype``). Its forward runs
a ``_Pass`` (run.py) that records a tape; ``backward`` or ``backward_loss`` walks it back.
``network_from_notation`` builds an agent's network from a config's ``model.notation``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlscratch import nn
from rlscratch.nn.module import Module

from .analysis import Analysis
from .ir import Group, Ref
from .parser import parse
from .run import _Missing, _Node, _Pass
from .syntax import NotationError, Program


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
        # read off the bound flat buffer: counting the parameters walks every module (a hot path in RL updates)
        if self._flat is not None:
            return self._flat[0].dtype if self._flat[0].size else np.dtype(np.float32)
        return self.flat_params.dtype if self.num_params() else np.dtype(np.float32)

    def _start(self, xs: Sequence[Any], record: bool) -> _Pass:
        if len(xs) != len(self.inputs):
            raise NotationError(f"the model takes {len(self.inputs)} input(s) ({', '.join(self.inputs)}), "
                                f"got {len(xs)}")
        run = _Pass(self, record)
        run.load(dict(zip(self.inputs, xs)))
        return run

    def _outputs(self, run: _Pass, only: Sequence[str] | None = None) -> list[_Node | list[_Node]]:
        outs: list[_Node | list[_Node]] = []

        def pick(node: _Node) -> _Node:
            return node.logits if self.logits_outputs and node.logits is not None else node

        for (name, index, over_time), label in zip(self.analysis.outputs, self.outputs):
            if only is not None and label not in only:
                continue
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

    def infer(self, *xs: np.ndarray, only: Sequence[str] | None = None) -> Any:
        """The outputs, keeping nothing; ``only`` (names from ``model.outputs``) computes just those."""
        run = self._start(xs, record=False)
        return self._result(self._outputs(run, only))

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

    def forward_backward_loss(self, *xs: np.ndarray, targets: Mapping[str, Any] | None = None) -> float:
        """``forward`` then ``backward_loss`` in one call, with the targets known from the start: T is then the
        shortest of *all* the sequences (observations O_1..O_{T+1}, rewards r_1..r_T), so no output is computed
        at t = T + 1 only to be left out of every loss. What an RL agent's update calls."""
        run = self._start(xs, record=True)
        self._load_targets(run, targets)
        self._outputs(run)
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
                    outputs: Sequence[str] | None = None, init: str = "he", dtype: Any = np.float32,
                    tied: Mapping[str, str] | None = None) -> NotationModel:
    """Compile a program (text or parsed) into a trainable NotationModel.

    ``sizes`` gives the feature sizes of data not declared in the program ({"X": 784}); ``outputs``
    overrides which states the model returns; ``init`` is the default initialiser of dense layers;
    ``tied`` maps a target network's parameters to those they copy ({"T_1": "Q_1"}): the same shapes.
    """
    program = parse(source) if isinstance(source, str) else source
    analysis = Analysis(program, sizes=sizes, outputs=outputs, rng=rng, tied=tied)
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
