"""Turning live objects into flat dictionaries of numpy arrays and back, for checkpoints.

A checkpoint is one ``.npz`` (no pickle). Anything with ``state_dict()``/``load_state_dict()``
(modules, optimizers, replay buffers, agents) contributes its arrays under a prefix; a numpy random
Generator is stored as its bit-generator state in JSON text; scalar counters as 0-d arrays.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def rng_state(rng: np.random.Generator) -> np.ndarray:
    return np.array(json.dumps(rng.bit_generator.state))


def set_rng_state(rng: np.random.Generator, state: np.ndarray) -> None:
    rng.bit_generator.state = json.loads(str(state))


def json_array(value: Any) -> np.ndarray:
    """Any JSON-able value as a 0-d string array (npz stores it without pickle)."""
    return np.array(json.dumps(value))


def from_json_array(array: np.ndarray) -> Any:
    return json.loads(str(array))


def pack(**components: Any) -> dict[str, np.ndarray]:
    """{name: object} -> {"name/key": array}. Objects may be state_dict-holders, Generators or scalars."""
    state: dict[str, np.ndarray] = {}
    for name, obj in components.items():
        if isinstance(obj, np.random.Generator):
            state[name] = rng_state(obj)
        elif hasattr(obj, "state_dict"):
            state.update({f"{name}/{key}": value for key, value in obj.state_dict().items()})
        else:
            state[name] = np.asarray(obj)
    return state


def sub_state(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix/``, with the prefix removed."""
    cut = len(prefix) + 1
    return {key[cut:]: value for key, value in state.items() if key.startswith(prefix + "/")}


def unpack(state: dict[str, np.ndarray], **components: Any) -> None:
    """Restore in place what ``pack`` wrote for each state_dict-holder or Generator."""
    for name, obj in components.items():
        if isinstance(obj, np.random.Generator):
            if name not in state:
                raise ValueError(f"missing '{name}' random-generator state")
            set_rng_state(obj, state[name])
        else:
            obj.load_state_dict(sub_state(state, name))
