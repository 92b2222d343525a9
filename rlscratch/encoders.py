"""What sits between an environment's observation and an agent's MLP head: the observation input
(layout and dtype, handled once, here) and the optional conv encoder of ``model.encoder``.

    model:
      encoder: minatar                      # a preset: one 3x3x16 conv + dense 128 (MinAtar paper)
      encoder: nature                       # the Atari DQN stack: 8x8/4 x32, 4x4/2 x64, 3x3/1 x64, dense 512
      encoder: {type: conv, channels: [16, 32], kernel: 3, stride: [1, 2], padding: 1, dense: [128]}
      hidden: []                            # the MLP head after the encoder (as without an encoder)

Observations, by space:

* ``Box`` of floats, any shape, no encoder: flattened (the agents did this before encoders existed).
* ``Box`` of bool or integers (uint8 images): converted to float32 once, uint8 scaled by 1/255 (the
  image convention; bool is already 0/1), then flattened -- or, with an encoder, kept as an image.
* Images for an encoder: (H, W, C) channels-last (MinAtar's layout, and gymnasium's for pixels) is
  moved to (C, H, W); a frame stack (K, H, W, C), as ``gymnasium.wrappers.FrameStackObservation``
  makes of it, becomes (K*C, H, W). Which axis holds the channels is guessed from the shape
  (channels-last when the last axis is no longer than the height) unless ``encoder.layout`` says
  ``hwc`` or ``chw``.
* ``Discrete(n)``: one-hot vectors of length n (an index fed as one number would tell the network
  that state 7 is "more" than state 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from rlscratch import nn
from rlscratch.config import from_dict
from rlscratch.errors import ConfigError


@dataclass
class EncoderConfig:
    """``model.encoder`` written out: conv layers (each with the activation after it), flatten, then
    ``dense`` layers (each with the activation). kernel/stride/padding: one value for every conv layer
    or one per layer."""

    type: str = "conv"
    channels: list[int] = field(default_factory=lambda: [16])
    kernel: int | list[int] = 3
    stride: int | list[int] = 1
    padding: int | list[int] = 0
    dense: list[int] = field(default_factory=list)
    activation: str = "relu"
    layout: str = "auto"  # auto | hwc | chw: where the observation keeps its channels


PRESETS: dict[str, dict] = {
    # Young & Tian (2019), MinAtar: one 3x3 conv with 16 channels, stride 1, no padding, then dense 128.
    "minatar": {"channels": [16], "kernel": 3, "stride": 1, "padding": 0, "dense": [128]},
    # Mnih et al. (2015), Nature DQN, on 84x84 frame stacks.
    "nature": {"channels": [32, 64, 64], "kernel": [8, 4, 3], "stride": [4, 2, 1], "padding": 0, "dense": [512]},
}


def encoder_config(spec: str | dict | None) -> EncoderConfig | None:
    """``model.encoder`` (a preset name, a mapping, or a mapping naming a preset in ``type`` with
    overrides) validated into an EncoderConfig; None for no encoder."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"model.encoder: expected a preset name ({', '.join(PRESETS)}) or a mapping, got {spec!r}")
    spec = dict(spec)
    kind = spec.get("type", "conv")
    if kind in PRESETS:
        spec = {**PRESETS[kind], **spec, "type": "conv"}
    elif kind != "conv":
        raise ConfigError(f"model.encoder.type: unknown encoder '{kind}' (conv, or a preset: {', '.join(PRESETS)})")
    config = from_dict(EncoderConfig, spec, "model.encoder")
    if config.layout not in ("auto", "hwc", "chw"):
        raise ConfigError(f"model.encoder.layout: expected auto, hwc or chw, got {config.layout!r}")
    if not config.channels:
        raise ConfigError("model.encoder.channels: give at least one conv layer's channel count")
    for name in ("kernel", "stride", "padding"):
        value = getattr(config, name)
        if isinstance(value, list) and len(value) != len(config.channels):
            raise ConfigError(f"model.encoder.{name}: {len(value)} values for {len(config.channels)} conv layers "
                              "(give one value, or one per layer)")
    return config


def _per_layer(value: int | list[int], n: int) -> list[int]:
    return list(value) if isinstance(value, list) else [value] * n


# -- the observation input ------------------------------------------------------------------------
class ObservationInput(nn.Module):
    """Raw observations -> the float array the network reads (see the module docstring). It accepts
    the batch as the env gave it, (N, *obs_shape), or flattened, (N, prod(obs_shape)), as replay
    buffers store it. It has no parameters and no gradient: backward returns None.

    image: keep an image (C, H, W) for a conv encoder (else flatten). Set when an encoder follows."""

    def __init__(self, space: gym.Space, image: bool = False, layout: str = "auto", dtype=np.float32) -> None:
        super().__init__()
        self.input_grad = False
        self.dtype_out = np.dtype(dtype)
        if isinstance(space, gym.spaces.Discrete):
            if image:
                raise ConfigError("model.encoder: a conv encoder needs image observations, the env's are Discrete; "
                                  "remove model.encoder")
            self.n, self.start = int(space.n), int(space.start)
            self.obs_shape: tuple[int, ...] = ()
            return
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"env: observation space {type(space).__name__} is not supported (Box and Discrete "
                              "are); wrap the env in gymnasium.wrappers.FlattenObservation")
        self.n = 0
        self.obs_shape = tuple(space.shape)
        self.scale = 1.0 / 255.0 if space.dtype == np.uint8 else None
        self.image = image
        self.move = None  # axes permutation to (C, H, W) order before the reshape
        if image:
            self.move, self.image_shape = image_layout(self.obs_shape, layout)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """One observation's shape as the next layer sees it."""
        if self.n:
            return (self.n,)
        return self.image_shape if self.image else (math.prod(self.obs_shape),)

    def infer(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        n = len(obs)
        if self.n:
            index = obs.reshape(n).astype(np.int64) - self.start
            one_hot = np.zeros((n, self.n), dtype=self.dtype_out)
            one_hot[np.arange(n), index] = 1.0
            return one_hot
        x = obs.reshape(n, *self.obs_shape)
        if self.image:
            x = x.transpose(0, *(1 + a for a in self.move)).reshape(n, *self.image_shape)
        else:
            x = x.reshape(n, -1)
        # the one conversion: bool/uint8 -> float, in the network's dtype (a copy only when needed)
        x = np.ascontiguousarray(x, dtype=self.dtype_out)
        if self.scale is not None:
            x *= self.dtype_out.type(self.scale)
        return x

    def forward(self, obs: np.ndarray) -> np.ndarray:
        return self.infer(obs)

    def backward(self, dy: np.ndarray | None) -> None:
        return None  # observations are data


def image_layout(shape: tuple[int, ...], layout: str = "auto") -> tuple[tuple[int, ...], tuple[int, int, int]]:
    """(axes permutation to channels-first order, the (C, H, W) the encoder sees) for an image
    observation shape: (H, W, C) or (C, H, W), or a frame stack (K, H, W, C) / (K, C, H, W)."""
    if len(shape) not in (3, 4):
        raise ConfigError(f"model.encoder: a conv encoder needs image observations (H, W, C), (C, H, W) or a frame "
                          f"stack of them; the env's have shape {shape}. Remove model.encoder")
    image = shape[-3:]
    channels_last = layout == "hwc" or (layout == "auto" and image[2] <= image[0])
    lead = tuple(range(len(shape) - 3))  # the frame-stack axis, if any
    if channels_last:
        k = len(lead)
        move = (*lead, k + 2, k, k + 1)
        c, h, w = image[2], image[0], image[1]
    else:
        move = tuple(range(len(shape)))
        c, h, w = image
    stack = shape[0] if lead else 1
    return move, (stack * c, h, w)


# -- the encoder ----------------------------------------------------------------------------------
def conv_encoder(in_shape: tuple[int, int, int], config: EncoderConfig, rng: np.random.Generator, init: str = "he",
                 dtype=np.float32) -> tuple[list[nn.Module], int]:
    """The encoder's layers for (C, H, W) inputs and the width of the features they output."""
    n = len(config.channels)
    kernels, strides, paddings = (_per_layer(v, n) for v in (config.kernel, config.stride, config.padding))
    layers: list[nn.Module] = []
    c, h, w = in_shape
    for i, (out, k, s, p) in enumerate(zip(config.channels, kernels, strides, paddings)):
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if h < 1 or w < 1:
            raise ConfigError(f"model.encoder: conv layer {i} (kernel {k}, stride {s}, padding {p}) leaves no pixels "
                              f"of the {in_shape[1]}x{in_shape[2]} observation; use smaller kernels or strides")
        layers += [nn.Conv2d(c, out, k, rng, stride=s, padding=p, init=init, dtype=dtype),
                   nn.get_activation(config.activation)]
        c = out
    layers.append(nn.Flatten())
    width = c * h * w
    for units in config.dense:
        layers += [nn.Linear(width, units, rng, init=init, dtype=dtype), nn.get_activation(config.activation)]
        width = units
    return layers, width


