"""MuZero's three networks on images (MinAtar's 10x10 boards): EfficientZero's small conv model.

The same contract as model.MuZeroNet (rlscratch.muzero.loss trains either, the search plays either),
with hidden states that are feature maps (C, H, W) instead of vectors:

    representation  s_0 = scale(blocks(relu(norm(conv3x3(o)))))
    dynamics        x = norm(conv3x3([s_k | a_k / A]))         the action as one constant plane
                    s_{k+1} = scale(blocks(relu(x + s_k)))    (a skip around the first conv, as EfficientZero)
                    reward logits = mlp(flatten(relu(conv1x1(s_{k+1}))))        (or the value prefix's LSTM)
    prediction      p, v = mlp(flatten(relu(conv1x1(s_k))))  both heads on a few reduced channels

``blocks`` are residual blocks: two 3x3 convolutions with a skip, conv-norm-relu inside
(nn.NormResidualBlock), or without a norm (nn.ResidualBlock). ``scale`` is EfficientZero's state
normalisation: min-max per sample over all C*H*W entries (model.MinMaxScale on the flattened map).

**``norm``** (``block_norm``; after every 3x3 convolution of the representation and the dynamics, as
EfficientZero's BatchNorms):

* ``none`` (the default): no normalisation, the identity above.
* ``layer``: nn.LayerNorm2d -- each sample standardised over its own C*H*W values, then a learned
  scale and shift per channel. No statistic crosses samples, so each of the K unrolled dynamics calls
  and each batch of leaves in the search compute the same function of one sample, in training and
  in inference alike.
* ``batch``: nn.BatchNorm, as EfficientZero. In training (``represent``/``dynamics``) each call
  normalises every channel by the statistics of its own batch -- the N samples of the representation
  call, and separately the N states of each of the K unrolled dynamics calls (a state's output then
  depends on the other samples of its batch) -- and moves the running statistics towards them (so K
  updates of the dynamics' per training step). In inference (the search, acting, the target network,
  reanalysis) the running statistics replace them: a leaf's value never depends on which other leaves
  share its batch, and the search is the same whatever the number of roots. The consistency loss's
  target branch (``represent_target``) is computed as EfficientZero's, by the representation in
  training mode (batch statistics, running statistics moved) under a stop-gradient. The running
  statistics are buffers: checkpoints, ``copy_from`` (the target network) and resume carry them.

**The skip's backward.** y = relu(norm(conv([s | plane])) + s): with g = dL/dy [y > 0], dL/ds = g +
(conv's backward of norm's backward of g)[:, :C] (the action plane is data: its gradient is dropped).
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn
from rlscratch.encoders import image_layout

from .consistency import ConsistencyHeads
from .fast import FastPrefixInference
from .model import MinMaxScale
from .support import logits_to_scalar, support_bins
from .value_prefix import ValuePrefix


class FlatMinMax(nn.Module):
    """MinMaxScale over each sample's flattened feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = MinMaxScale()

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.scale.infer(x.reshape(len(x), -1)).reshape(x.shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.scale.forward(x.reshape(len(x), -1)).reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self.scale.backward(dy.reshape(len(dy), -1)).reshape(dy.shape)


def _head(channels: int, reduced: int, area: int, hidden: int, out: int, rng: np.random.Generator,
          init: str) -> nn.Sequential:
    """conv1x1 to ``reduced`` channels, relu, flatten, Linear, relu, Linear (the last one zero: heads
    start neutral, as in MuZeroNet)."""
    head = nn.Sequential(nn.Conv2d(channels, reduced, 1, rng, init=init), nn.ReLU(), nn.Flatten(),
                         nn.Linear(reduced * area, hidden, rng, init=init), nn.ReLU(),
                         nn.Linear(hidden, out, rng, init=init))
    head.layers[-1].params["W"][...] = 0.0
    return head


class ConvMuZeroNet(nn.Module):
    """Representation, dynamics and prediction as conv nets in one module (one flat parameter buffer).

    Shapes: obs (N, prod(obs_shape)) as the replay stores them (MinAtar's (H, W, C) flattened),
    states (N, C, H, W), actions (N,)."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, rng: np.random.Generator, channels: int = 32,
                 blocks: int = 1, reduced_channels: int = 8, head_hidden: int = 32, value_support: int = 10,
                 reward_support: int = 5, init: str = "he", dtype=np.float32, value_prefix_hidden: int = 0,
                 lstm_horizon: int = 5, consistency: tuple[int, int] | None = None, block_norm: str = "none",
                 ) -> None:
        super().__init__()
        self.obs_shape = tuple(obs_shape)
        self.move, image_shape = image_layout(self.obs_shape, "auto")
        self.image_shape = tuple(image_shape)
        c_in, height, width = self.image_shape
        self.n_actions, self.channels = n_actions, channels
        self.state_shape = (channels, height, width)
        self.state_dim = channels * height * width
        area = height * width
        self.value_support, self.reward_support = value_support, reward_support
        self.value_bins, self.reward_bins = support_bins(value_support), support_bins(reward_support)
        if block_norm not in nn.NORMS:
            raise ValueError(f"block_norm must be one of {', '.join(nn.NORMS)}, got {block_norm!r}")
        self.block_norm = block_norm

        def block() -> nn.Module:
            if block_norm == "none":
                return nn.ResidualBlock(channels, 3, rng, init=init)
            return nn.NormResidualBlock(channels, rng, block_norm, init=init)

        stem = nn.Conv2d(c_in, channels, 3, rng, padding=1, init=init)
        stem_norm = nn.map_norm(block_norm, channels)
        self.representation = nn.Sequential(stem, *([stem_norm] if stem_norm else []), nn.ReLU(),
                                            *[block() for _ in range(blocks)])
        self.representation.layers[0].input_grad = False   # its input is the observation
        self.dynamics_conv = nn.Conv2d(channels + 1, channels, 3, rng, padding=1, init=init)
        self.dynamics_norm = nn.map_norm(block_norm, channels)   # None without a norm
        self.dynamics_blocks = nn.Sequential(*[block() for _ in range(blocks)])
        self.reward_head = (None if value_prefix_hidden else
                            _head(channels, reduced_channels, area, head_hidden, self.reward_bins, rng, init))
        self.prediction = _head(channels, reduced_channels, area, head_hidden, n_actions + self.value_bins, rng, init)
        self.scale_initial, self.scale_next = FlatMinMax(), FlatMinMax()
        features = nn.Sequential(nn.Conv2d(channels, reduced_channels, 1, rng, init=init), nn.ReLU(), nn.Flatten())
        self.value_prefix = (ValuePrefix(reduced_channels * area, value_prefix_hidden, self.reward_bins, rng, init,
                                         lstm_horizon, features=features) if value_prefix_hidden else None)
        self.consistency = ConsistencyHeads(self.state_dim, *consistency, rng, init) if consistency else None
        self.flatten(dtype)

    def flatten(self, dtype: np.dtype | type | None = None) -> ConvMuZeroNet:
        super().flatten(dtype)
        self._fast_prefix = None   # its parameter views are stale now
        return self

    @property
    def _prefix_inference(self) -> FastPrefixInference | None:
        """The value prefix's search calls (fast.FastPrefixInference on this net's own inference;
        value_prefix.PrefixInference is their readable form), or None without a value prefix."""
        if self.value_prefix is None:
            return None
        if self._fast_prefix is None:
            self._fast_prefix = FastPrefixInference(self)
        return self._fast_prefix

    # -- pieces both paths share ------------------------------------------------------------------
    def image(self, obs: np.ndarray) -> np.ndarray:
        """Stored (flattened, channels-last) observations -> (N, C, H, W) in the network's dtype."""
        n = len(obs)
        x = np.asarray(obs, dtype=self.dtype).reshape(n, *self.obs_shape)
        return np.ascontiguousarray(x.transpose(0, *(1 + a for a in self.move))).reshape(n, *self.image_shape)

    def action_plane(self, state: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """[s | a / A]: the action as one constant plane (EfficientZero's encoding)."""
        n, c = state.shape[:2]
        x = np.empty((n, c + 1, *state.shape[2:]), dtype=np.result_type(state.dtype, self.dtype))
        x[:, :c] = state
        x[:, c] = (np.asarray(actions, dtype=self.dtype) / self.n_actions)[:, None, None]
        return x

    # -- training: forward keeps what backward needs -------------------------------------------
    def represent(self, obs: np.ndarray) -> np.ndarray:
        return self.scale_initial.forward(self.representation.forward(self.image(obs)))

    def represent_backward(self, ds: np.ndarray) -> None:
        self.representation.backward(self.scale_initial.backward(ds))

    def represent_target(self, obs: np.ndarray) -> np.ndarray:
        """s = h(o) for the consistency loss's target branch, keeping nothing (a stop-gradient). With a
        batch norm it normalises as in training, by the statistics of ``obs`` itself (moving the running
        statistics), as EfficientZero's target branch does; otherwise it is ``infer_represent``."""
        if self.block_norm != "batch":
            return self.infer_represent(obs)
        marks = [(module, len(module._saved)) for _, module in self.modules()]
        state = self.represent(obs)
        for module, length in marks:   # drop what the forward kept for a backward that never comes
            del module._saved[length:]
        return state

    def dynamics(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.dynamics_conv.forward(self.action_plane(state, actions))
        if self.dynamics_norm is not None:
            x = self.dynamics_norm.forward(x)
        y = np.maximum(x + state, 0.0)
        self._saved.append(y)
        next_state = self.scale_next.forward(self.dynamics_blocks.forward(y))
        if self.reward_head is None:
            return next_state, np.zeros((len(state), 0), dtype=self.dtype)
        return next_state, self.reward_head.forward(next_state)

    def dynamics_backward(self, d_next_state: np.ndarray, d_reward_logits: np.ndarray) -> np.ndarray:
        if self.reward_head is not None:
            d_next_state = d_next_state + self.reward_head.backward(d_reward_logits)
        y = self._saved.pop()
        g = self.dynamics_blocks.backward(self.scale_next.backward(d_next_state)) * (y > 0)
        dx = g if self.dynamics_norm is None else self.dynamics_norm.backward(g)
        return g + self.dynamics_conv.backward(dx)[:, :self.channels]

    def predict(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.prediction.forward(state)
        return out[:, :self.n_actions], out[:, self.n_actions:]

    def predict_backward(self, d_policy_logits: np.ndarray, d_value_logits: np.ndarray) -> np.ndarray:
        return self.prediction.backward(np.concatenate([d_policy_logits, d_value_logits], axis=1))

    def forward(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError("train through represent/dynamics/predict (see rlscratch.muzero.loss)")

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError("see rlscratch.muzero.loss")

    # -- search: the same functions keeping nothing ------------------------------------------------
    def infer_represent(self, obs: np.ndarray) -> np.ndarray:
        return self.scale_initial.infer(self.representation.infer(self.image(obs)))

    def infer_next_state(self, state: np.ndarray, actions: np.ndarray) -> np.ndarray:
        x = self.dynamics_conv.infer(self.action_plane(state, actions))
        if self.dynamics_norm is not None:
            x = self.dynamics_norm.infer(x)
        # in place into the conv's (or the norm's) fresh output when the dtypes agree
        y = np.add(x, state, out=x) if x.dtype == np.result_type(x, state) else x + state
        return self.scale_next.infer(self.dynamics_blocks.infer(np.maximum(y, 0.0, out=y)))

    def infer_predict(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.prediction.infer(state)
        return out[:, :self.n_actions], logits_to_scalar(out[:, self.n_actions:], self.value_support)

    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._prefix_inference is not None:
            return self._prefix_inference.initial_inference(obs)
        state = self.infer_represent(obs)
        return (state, *self.infer_predict(state))

    def recurrent_inference(self, state: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self._prefix_inference is not None:
            return self._prefix_inference.recurrent_inference(state, actions)
        next_state = self.infer_next_state(state, actions)
        reward = logits_to_scalar(self.reward_head.infer(next_state), self.reward_support)
        return (next_state, reward, *self.infer_predict(next_state))

    @property
    def recurrent_inference_one(self):
        """The one-row call of a one-root search (fast.FastPrefixInference) with a value prefix; None
        without one (the search then makes the batched call one row at a time)."""
        calls = self._prefix_inference
        return None if calls is None else calls.recurrent_inference_one

    def infer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.initial_inference(obs)
