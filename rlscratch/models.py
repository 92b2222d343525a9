"""Networks built from a config's ``model:`` section, shared by every agent."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from rlscratch import nn
from rlscratch.config import ModelConfig
from rlscratch.encoders import ObservationInput, conv_encoder, encoder_config
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


def network(observation_space: gym.Space | int, n_out: int, model: ModelConfig, rng: np.random.Generator,
            output_gain: float | None = None, dtype=np.float32) -> nn.Module:
    """An agent's network for observations from ``observation_space``: the observation input (dtype,
    layout, one-hot; rlscratch.encoders), ``model.encoder`` if any, then ``mlp``'s head.

    For a Box of floats and no encoder this is exactly ``mlp(obs_dim, ...)`` (the same layers and
    parameters as before encoders existed); so is an ``int`` (a number of float features). The first
    layer with parameters skips dL/dinput."""
    if isinstance(observation_space, (int, np.integer)):
        return mlp(int(observation_space), n_out, model, rng, output_gain, dtype)
    encoder = encoder_config(model.encoder)
    floats = isinstance(observation_space, gym.spaces.Box) and np.issubdtype(observation_space.dtype, np.floating)
    if encoder is None and floats:
        return mlp(int(np.prod(observation_space.shape)), n_out, model, rng, output_gain, dtype)
    if encoder is not None and model.notation is not None:
        raise ConfigError("model: give either model.notation or model.encoder, not both")
    obs_input = ObservationInput(observation_space, image=encoder is not None,
                                 layout=encoder.layout if encoder else "auto", dtype=dtype)
    layers: list[nn.Module] = [obs_input]
    width = obs_input.out_shape[0]
    if encoder is not None:
        encoder_layers, width = conv_encoder(obs_input.out_shape, encoder, rng, model.init, dtype)
        layers += encoder_layers
    head = mlp(width, n_out, model, rng, output_gain, dtype)
    layers += head.layers if isinstance(head, nn.Sequential) else [head]
    next(layer for layer in layers if layer.num_params()).input_grad = False  # its input is data
    return nn.Sequential(*layers).flatten()
