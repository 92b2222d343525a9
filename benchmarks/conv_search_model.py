"""A small convolutional model for the search benchmark (``python -m rlscratch.bench mcts --model conv``):
what the batched search costs when every hidden state is an image and every expansion runs convolutions.

Shaped like EfficientZero's networks on MinAtar-sized input, with random weights and inference only:

    representation  s_0 = scale(res(relu(conv3x3(o))))                 o: 4 x 10 x 10 -> s: 16 x 10 x 10
    dynamics        s'  = scale(res(relu(conv3x3([s, a / A]) + s)))     the action as one constant plane
                    r   = linear(flatten(relu(conv1x1_4(s'))))         reward head on reduced channels
    prediction      p, v = linear(flatten(relu(conv1x1_4(s))))         policy logits and value

``res`` is rlscratch.nn.ResidualBlock (two 3x3 convolutions around a skip), ``scale`` min-max scales
each sample's state to [0, 1] (as MuZeroNet's MinMaxScale). Rewards and values come out as scalars
(no categorical supports): the heads' cost is small beside the convolutions either way. Observations
arrive flat (``obs_dim`` numbers, as the benchmark draws them) and are reshaped to images.
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn


class ConvSearchModel:
    """Implements rlscratch.muzero.mcts.SearchModel with convolutions (module docstring)."""

    def __init__(self, rng: np.random.Generator, n_actions: int = 6, in_channels: int = 4, size: int = 10,
                 channels: int = 16, head_channels: int = 4) -> None:
        self.n_actions, self.image = n_actions, (in_channels, size, size)
        self.obs_dim = in_channels * size * size
        self.stem = nn.Conv2d(in_channels, channels, 3, rng, padding=1)
        self.stem_res = nn.ResidualBlock(channels, 3, rng)
        self.dynamics_conv = nn.Conv2d(channels + 1, channels, 3, rng, padding=1)
        self.dynamics_res = nn.ResidualBlock(channels, 3, rng)
        flat = head_channels * size * size
        self.reward_conv = nn.Conv2d(channels, head_channels, 1, rng)
        self.reward_out = nn.Linear(flat, 1, rng)
        self.prediction_conv = nn.Conv2d(channels, head_channels, 1, rng)
        self.prediction_out = nn.Linear(flat, n_actions + 1, rng)

    @staticmethod
    def _scale(x: np.ndarray) -> np.ndarray:
        rows = x.reshape(len(x), -1)
        low = rows.min(axis=1)[:, None, None, None]
        return (x - low) / (rows.max(axis=1)[:, None, None, None] - low + 1e-5)

    @staticmethod
    def _head(conv: nn.Conv2d, out: nn.Linear, s: np.ndarray) -> np.ndarray:
        h = np.maximum(conv.infer(s), 0.0)
        return out.infer(h.reshape(len(h), -1))

    def _predict(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._head(self.prediction_conv, self.prediction_out, s).astype(np.float64)
        return out[:, :self.n_actions], out[:, self.n_actions]

    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), *self.image)
        s = self._scale(self.stem_res.infer(np.maximum(self.stem.infer(x), 0.0)))
        logits, value = self._predict(s)
        return s, logits, value

    def recurrent_inference(self, state: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        plane = np.broadcast_to((np.asarray(actions, dtype=np.float32) / self.n_actions)[:, None, None, None],
                                (len(state), 1, *state.shape[2:]))
        h = self.dynamics_conv.infer(np.concatenate([state, plane], axis=1))
        h += state
        s = self._scale(self.dynamics_res.infer(np.maximum(h, 0.0)))
        reward = self._head(self.reward_conv, self.reward_out, s)[:, 0].astype(np.float64)
        logits, value = self._predict(s)
        return s, reward, logits, value
