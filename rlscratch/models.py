"""Networks built from a config's ``model:`` section, shared by every agent."""

from __future__ import annotations

import numpy as np

from rlscratch import nn
from rlscratch.config import ModelConfig
from rlscratch.errors import ConfigError
from rlscratch.notation import NotationError, network_from_notation


def mlp(n_in: int, n_out: int, model: ModelConfig, rng: np.random.Generator, output_gain: float | None = None,
        dtype=np.float32) -> nn.Module:
    """n_in -> hidden... -> n_out with the configured activation between layers (none after the last).

    ``output_gain`` re-initialises the last layer orthogonally with that gain -- small (0.01) for
    policy heads so the initial policy is near uniform, 1.0 for value heads (the PPO/A2C convention).
    When the config writes the network in the arrow notation (``model.notation``), that network is
    built instead: see ``build_model``.
    """
    if model.notation is not None:
        return build_model(n_in, n_out, model, rng, output_gain, dtype)
    sizes = [n_in, *model.hidden, n_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        if last and output_gain is not None:
            layers.append(nn.Linear(a, b, rng, init="orthogonal", gain=output_gain, dtype=dtype))
        else:
            layers.append(nn.Linear(a, b, rng, init=model.init, dtype=dtype))
        if not last:
            layers.append(nn.get_activation(model.activation))
    return nn.Sequential(*layers).flatten()


def build_model(n_in: int, n_out: int, model: ModelConfig, rng: np.random.Generator,
                output_gain: float | None = None, dtype=np.float32) -> nn.Module:
    """An agent's network from the ``model:`` section: the program in ``model.notation`` when there is one
    (one input of n_in features, one output of n_out; a softmax output comes back as logits, since the
    agent's loss applies it), else ``mlp``."""
    if model.notation is None:
        return mlp(n_in, n_out, model, rng, output_gain, dtype)
    try:
        return network_from_notation(model.notation, n_in, n_out, rng, init=model.init, output_gain=output_gain,
                                     dtype=dtype)
    except NotationError as err:
        raise ConfigError(f"model.notation: {err}") from None
