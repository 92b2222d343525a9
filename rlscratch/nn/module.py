"""The module contract every layer follows, and the flat parameter buffer.

A module owns three dictionaries:

* ``params``  -- trainable arrays (weights, biases),
* ``grads``   -- one gradient array per parameter, same shape, *accumulated* by ``backward``,
* ``buffers`` -- non-trainable state that must be saved (BatchNorm's running statistics).

and three methods:

* ``forward(*xs)``  computes the output and pushes what ``backward`` will need onto a per-module
  stack (``self._saved``). Calling ``forward`` k times and then ``backward`` k times (in reverse
  order, as the chain rule visits them) is how one module serves several time steps of an RNN or
  K unrolled steps of a MuZero dynamics net: each backward pops its own call's saved values and
  *adds* into ``grads``.
* ``backward(dy)``  pops the saved values of the most recent un-backpropagated forward call,
  accumulates parameter gradients and returns dL/dx. A layer whose input is the data itself (the
  first layer of a network) never needs dL/dx: set its ``input_grad = False`` and a layer that can
  skip that product (Linear: a third of its backward work) returns None instead.
* ``infer(*xs)``    the same function in evaluation mode, keeping nothing. Acting and tree search
  call this millions of times, so it must not grow memory.

None of the three writes into the arrays it is given, unless it is called with ``overwrite=True``
(only layers with ``can_overwrite``, and only by a caller that knows the array is its to give away:
Sequential, from the flags ``returns_fresh`` / ``returns_view`` of the layer before).

The first time anyone asks for ``flat_params`` / ``flat_grads`` (optimizers do), the root module
copies every parameter of its tree into one contiguous vector and replaces each ``params[name]`` by a
*view* into it (gradients likewise). An optimizer step, weight decay, global gradient-norm clipping
and a Polyak update of a target network are then single vectorised numpy operations.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np


class Module:
    """Base class: subclasses fill ``params``/``buffers`` in ``__init__`` and implement
    ``forward``, ``backward`` and ``infer``."""

    # False: backward may return None instead of dL/dx (the caller promises not to need it).
    input_grad: bool = True
    # Who may overwrite the arrays a layer returns (Sequential's in-place ReLU, see Sequential):
    #   returns_fresh  forward/infer and backward always return new arrays the layer keeps no reference to
    #                  (Linear, Conv2d, ReLU): the receiver may overwrite them;
    #   returns_view   they are views of the layer's input or incoming gradient (Flatten, Reshape): as free
    #                  to overwrite as that input was.
    #   can_overwrite  forward/infer/backward take ``overwrite=True``: write the result into the input itself.
    returns_fresh: bool = False
    returns_view: bool = False
    can_overwrite: bool = False
    # True from zero_grad() until the module's next backward (see zero_grad); a backward that writes
    # its gradients without adding (there are none yet) clears it. Code that writes a module's grads
    # by hand between zero_grad and backward must clear it too.
    grads_zeroed: bool = False
    _tree: list[Module] | None = None  # this module and its descendants (cached by zero_grad)

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training = True
        self._saved: list[Any] = []
        # (flat_params, flat_grads) once bound; None while unbound or bound non-contiguously
        self._flat: tuple[np.ndarray, np.ndarray] | None = None
        self._bound_by_parent = False

    # -- the contract ---------------------------------------------------------------------------
    def forward(self, *xs: np.ndarray) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:
        raise NotImplementedError

    def infer(self, *xs: np.ndarray) -> Any:
        raise NotImplementedError

    def __call__(self, *xs: np.ndarray) -> Any:
        return self.forward(*xs)

    # -- parameters -----------------------------------------------------------------------------
    def add_param(self, name: str, value: np.ndarray) -> np.ndarray:
        """Register a trainable array and its zero gradient."""
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def children(self) -> Iterator[tuple[str, Module]]:
        """Sub-modules, found among the attributes (a Module, or a list/tuple of Modules)."""
        for attr, value in vars(self).items():
            if isinstance(value, Module):
                yield attr, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{attr}.{i}", item

    def modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant once each, depth first, with dotted names."""
        seen: set[int] = set()

        def walk(name: str, module: Module) -> Iterator[tuple[str, Module]]:
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for child_name, child in module.children():
                yield from walk(f"{name}.{child_name}" if name else child_name, child)

        yield from walk(prefix, self)

    def named_params(self) -> Iterator[tuple[str, Module, str]]:
        """(qualified name, owning module, key) for every parameter, shared modules once."""
        for name, module in self.modules():
            for key in module.params:
                yield (f"{name}.{key}" if name else key), module, key

    def num_params(self) -> int:
        return sum(module.params[key].size for _, module, key in self.named_params())

    # -- the flat buffer ------------------------------------------------------------------------
    def flatten(self, dtype: np.dtype | type | None = None) -> Module:
        """Move every parameter of this tree into one contiguous vector (optionally casting it).

        Each ``params[key]`` becomes a view into ``flat_params`` and each ``grads[key]`` a view into
        ``flat_grads``. Every sub-module whose parameters form a contiguous slice gets that slice as
        its own ``flat_params``, so a sub-network (e.g. MuZero's dynamics) can still be addressed as
        one vector. Returns self.
        """
        entries = list(self.named_params())
        if dtype is None:
            dtype = entries[0][1].params[entries[0][2]].dtype if entries else np.float32
        total = sum(module.params[key].size for _, module, key in entries)
        flat_params = np.empty(total, dtype=dtype)
        flat_grads = np.zeros(total, dtype=dtype)
        offset = 0
        offsets: dict[tuple[int, str], int] = {}
        for _, module, key in entries:
            value = module.params[key]
            size = value.size
            flat_params[offset:offset + size] = value.ravel()
            module.params[key] = flat_params[offset:offset + size].reshape(value.shape)
            module.grads[key] = flat_grads[offset:offset + size].reshape(value.shape)
            offsets[(id(module), key)] = offset
            offset += size
        for _, module in self.modules():
            module._flat = None
            module._bound_by_parent = module is not self
            module._tree = None
            sub_entries = list(module.named_params())
            if module is self or not sub_entries:
                continue
            # A sub-tree gets its own slice when its parameters, in its own order, tile one range
            # of the root's buffer (true unless it shares a module first met elsewhere).
            first = expected = offsets[(id(sub_entries[0][1]), sub_entries[0][2])]
            for _, m, k in sub_entries:
                if offsets[(id(m), k)] != expected:
                    break
                expected += m.params[k].size
            else:
                module._flat = (flat_params[first:expected], flat_grads[first:expected])
        self._flat = (flat_params, flat_grads)
        self._bound_by_parent = False
        for _, module in self.modules():
            for key, value in module.buffers.items():
                if np.issubdtype(value.dtype, np.floating):
                    module.buffers[key] = value.astype(dtype)
        return self

    def _bound(self) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is None:
            if self._bound_by_parent:
                raise RuntimeError(
                    f"{type(self).__name__}'s parameters live in a parent's flat buffer but are not "
                    "contiguous there (a shared sub-module?); use the parent's flat_params")
            self.flatten()
        assert self._flat is not None
        return self._flat

    @property
    def flat_params(self) -> np.ndarray:
        """All parameters of this tree as one vector (views back the per-layer arrays)."""
        return self._bound()[0]

    @flat_params.setter
    def flat_params(self, values: np.ndarray) -> None:
        # Assignment (and `net.flat_params += x`) writes into the buffer; the views stay valid.
        np.copyto(self._bound()[0], values)

    @property
    def flat_grads(self) -> np.ndarray:
        """All parameter gradients of this tree as one vector."""
        return self._bound()[1]

    @flat_grads.setter
    def flat_grads(self, values: np.ndarray) -> None:
        np.copyto(self._bound()[1], values)
        for module in self._modules_list():
            module.grads_zeroed = False  # written by hand: the next backward adds to them

    @property
    def dtype(self) -> np.dtype:
        return self.flat_params.dtype

    def astype(self, dtype: np.dtype | type) -> Module:
        """Cast every parameter and buffer (e.g. to float64 for gradient checks). Returns self."""
        return self.flatten(dtype)

    def zero_grad(self) -> None:
        """Set every gradient of the tree to 0, and mark each module ``grads_zeroed``: until its next
        backward its gradients are known to be 0, so that backward may *store* a gradient product
        straight into ``grads`` (np.matmul(..., out=)) where it would add it -- the same numbers
        without a temporary and a pass over the weights to add it (Linear)."""
        self.flat_grads.fill(0.0)
        for module in self._modules_list():
            module.grads_zeroed = True

    def _modules_list(self) -> list[Module]:
        """``modules()`` as a list, kept until the next flatten (walking the tree costs ~30 us)."""
        if self._tree is None:
            self._tree = [module for _, module in self.modules()]
        return self._tree

    def clear_saved(self) -> None:
        """Drop values kept by forward calls that will never be backpropagated."""
        for _, module in self.modules():
            module._saved.clear()

    def saved_count(self) -> int:
        """How many forward calls across the tree still await their backward (0 after inference)."""
        return sum(len(module._saved) for _, module in self.modules())

    # -- modes, copies, state -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for _, module in self.modules():
            module.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def clone(self) -> Module:
        """An independent copy with its own flat buffer (a target network, for instance)."""
        twin = copy.deepcopy(self)
        twin.clear_saved()
        return twin.flatten(self.dtype)

    def copy_from(self, other: Module, tau: float = 1.0) -> None:
        """Hard copy (tau=1) or Polyak average (theta <- tau*theta_other + (1-tau)*theta) of the
        whole parameter vector, plus the buffers, in single operations."""
        if other.flat_params.shape != self.flat_params.shape:
            raise ValueError(f"cannot copy {other.flat_params.size} parameters into {self.flat_params.size}")
        tau = float(tau)  # a Python float keeps float32 arithmetic in float32 (an np.float64 would not)
        if tau >= 1.0:
            np.copyto(self.flat_params, other.flat_params)
        else:
            self.flat_params *= 1.0 - tau
            self.flat_params += tau * other.flat_params
        for (_, mine), (_, theirs) in zip(self.modules(), other.modules()):
            for key in mine.buffers:
                np.copyto(mine.buffers[key], theirs.buffers[key])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer by qualified name (copies)."""
        state = {name: module.params[key].copy() for name, module, key in self.named_params()}
        for name, module in self.modules():
            for key, value in module.buffers.items():
                state[f"{name}.{key}" if name else key] = value.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays in by name; the first name, shape or dtype mismatch raises ValueError."""
        targets: dict[str, np.ndarray] = {name: module.params[key] for name, module, key in self.named_params()}
        for name, module in self.modules():
            for key, value in module.buffers.items():
                targets[f"{name}.{key}" if name else key] = value
        for name, target in targets.items():
            if name not in state:
                raise ValueError(f"missing array '{name}' (the file has: {', '.join(sorted(state)) or 'nothing'})")
            value = state[name]
            if value.shape != target.shape:
                raise ValueError(f"shape mismatch for '{name}': file has {value.shape}, model has {target.shape}")
            if value.dtype != target.dtype:
                raise ValueError(f"dtype mismatch for '{name}': file has {value.dtype}, model has {target.dtype}")
        extra = sorted(set(state) - set(targets))
        if extra:
            raise ValueError(f"unexpected array '{extra[0]}' in file (the model has no such parameter)")
        for name, target in targets.items():
            np.copyto(target, state[name])

    def __repr__(self) -> str:
        lines = [type(self).__name__ + "("]
        for name, child in self.children():
            lines.append("  " + f"({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + ")" if len(lines) > 1 else type(self).__name__ + "()"
