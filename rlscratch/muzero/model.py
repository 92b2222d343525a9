"""MuZero's three networks, as plain MLPs written with rlscratch.nn.

MuZero (Schrittwieser et al. 2020) never sees the environment's rules. It learns

    representation  h:  s_0 = h(o)                   observation -> hidden state
    dynamics        g:  s_{k+1}, r_{k+1} = g(s_k, a_k)   hidden state + action -> next state, reward
    prediction      f:  p_k, v_k = f(s_k)             hidden state -> policy logits, value

and plans with tree search entirely inside the hidden states. Here each is an MLP; the action enters
the dynamics as a one-hot vector concatenated to the state, rewards and values come out as logits
over a categorical support (rlscratch.muzero.support), and every hidden state is min-max scaled to
[0, 1] per sample (``MinMaxScale``), which keeps the states the dynamics produces on the same scale
as those the representation produces, however far the search unrolls.

Two ways in:

* training (``represent`` / ``dynamics`` / ``predict`` and their ``*_backward``): ``forward`` calls
  that keep what backward needs, so the dynamics can be applied K times before K backward calls
  (rlscratch.nn's per-module stacks) -- rlscratch.muzero.loss drives them;
* search (``initial_inference`` / ``recurrent_inference``): the same functions keeping nothing and
  returning scalars (rewards, values) instead of support logits -- computed by the faster code of
  rlscratch.muzero.fast, which a test compares with the training path.
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn

from .consistency import ConsistencyHeads
from .fast import FastInference, FastPrefixInference
from .support import logits_to_scalar, support_bins
from .value_prefix import ValuePrefix


class MinMaxScale(nn.Module):
    """Scale each row into [0, 1]:  y = (x - m) / d,  m = min_j x_j,  M = max_j x_j,  d = M - m + eps.

    Backward. With g = dL/dy, y_i depends on x_j directly (1/d when i = j), through m (x_j is the
    minimum: dm/dx_j = 1) and through d (dd/dx_j = +1 for the maximum, -1 for the minimum), and
    dy_i/dd = -y_i / d. Summing over i:

        dL/dx_j = g_j / d
                  + [j = argmin] (sum_i g_i y_i - sum_i g_i) / d
                  - [j = argmax]  sum_i g_i y_i / d

    (eps keeps a constant row finite: it maps to zeros.)
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def infer(self, x: np.ndarray) -> np.ndarray:
        low = x.min(axis=1, keepdims=True)
        y = x - low
        y /= x.max(axis=1, keepdims=True) - low + self.eps
        return y

    def forward(self, x: np.ndarray) -> np.ndarray:
        low_index, high_index = x.argmin(axis=1), x.argmax(axis=1)
        rows = np.arange(len(x))
        d = (x[rows, high_index] - x[rows, low_index] + self.eps)[:, None]
        y = (x - x[rows, low_index][:, None]) / d
        self._saved.append((y, d, low_index, high_index))
        return y

    def backward(self, g: np.ndarray) -> np.ndarray:
        y, d, low_index, high_index = self._saved.pop()
        rows = np.arange(len(y))
        gy = (g * y).sum(axis=1, keepdims=True)
        dx = g / d
        # two separate adds: when the row is constant, argmin and argmax can be the same entry
        dx[rows, low_index] += ((gy - g.sum(axis=1, keepdims=True)) / d)[:, 0]
        dx[rows, high_index] -= (gy / d)[:, 0]
        return dx


def _mlp(sizes: list[int], activation: str, rng: np.random.Generator, init: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, rng, init=init))
        if i < len(sizes) - 2:
            layers.append(nn.get_activation(activation))
    return layers


class MuZeroNet(nn.Module):
    """Representation, dynamics and prediction MLPs in one module (one flat parameter buffer, so one
    optimizer, weight decay over everything, and ``clone()`` for a target network).

    Shapes: obs (N, obs_dim), states (N, state_dim), actions (N,) integers,
    policy logits (N, A), value/reward logits (N, 2 S_v + 1) / (N, 2 S_r + 1).
    """

    def __init__(self, obs_dim: int, n_actions: int, rng: np.random.Generator, state_dim: int = 32,
                 hidden: list[int] | tuple[int, ...] = (64,), value_support: int = 10, reward_support: int = 5,
                 activation: str = "relu", init: str = "he", dtype=np.float32, value_prefix_hidden: int = 0,
                 lstm_horizon: int = 5, consistency: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.obs_dim, self.n_actions, self.state_dim = obs_dim, n_actions, state_dim
        self.value_support, self.reward_support = value_support, reward_support
        self.value_bins, self.reward_bins = support_bins(value_support), support_bins(reward_support)
        hidden = list(hidden)
        self.representation = nn.Sequential(*_mlp([obs_dim, *hidden, state_dim], activation, rng, init))
        self.representation.layers[0].input_grad = False  # its input is the observation
        # with a value prefix the rewards come from the LSTM over the next states (value_prefix.py)
        reward_out = 0 if value_prefix_hidden else self.reward_bins
        self.dynamics_net = nn.Sequential(
            *_mlp([state_dim + n_actions, *hidden, state_dim + reward_out], activation, rng, init))
        self.prediction = nn.Sequential(
            *_mlp([state_dim, *hidden, n_actions + self.value_bins], activation, rng, init))
        self.scale_initial = MinMaxScale()
        self.scale_next = MinMaxScale()
        # Heads start at zero (uniform policy, value 0, reward 0), as in EfficientZero: the first
        # targets then pull predictions from a neutral start instead of from random logits.
        self.dynamics_net.layers[-1].params["W"][state_dim:] = 0.0
        self.prediction.layers[-1].params["W"][...] = 0.0
        # EfficientZero's parts, each optional (built after MuZero's, so all-off draws the same weights)
        self.value_prefix = (ValuePrefix(state_dim, value_prefix_hidden, self.reward_bins, rng, init, lstm_horizon)
                             if value_prefix_hidden else None)
        self.consistency = ConsistencyHeads(state_dim, *consistency, rng, init) if consistency else None
        self.flatten(dtype)

    def flatten(self, dtype: np.dtype | type | None = None) -> MuZeroNet:
        super().flatten(dtype)
        self._fast = None  # the parameter views the fast inference holds are stale now
        return self

    # -- training: forward keeps what backward needs -------------------------------------------
    def represent(self, obs: np.ndarray) -> np.ndarray:
        """s_0 = scale(h(o))."""
        return self.scale_initial.forward(self.representation.forward(obs))

    def represent_backward(self, ds: np.ndarray) -> None:
        self.representation.backward(self.scale_initial.backward(ds))

    def one_hot(self, actions: np.ndarray) -> np.ndarray:
        return np.eye(self.n_actions, dtype=self.dtype)[actions]

    def dynamics(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """s_{k+1}, reward logits = g([s_k | onehot(a_k)]), the state min-max scaled."""
        out = self.dynamics_net.forward(np.concatenate([state, self.one_hot(actions)], axis=1))
        return self.scale_next.forward(out[:, :self.state_dim]), out[:, self.state_dim:]

    def dynamics_backward(self, d_next_state: np.ndarray, d_reward_logits: np.ndarray) -> np.ndarray:
        """Backward through one dynamics call (the most recent one not yet backpropagated);
        returns dL/ds_k (the action's one-hot gets a gradient too, but it is data)."""
        d_out = np.concatenate([self.scale_next.backward(d_next_state), d_reward_logits], axis=1)
        return self.dynamics_net.backward(d_out)[:, :self.state_dim]

    def predict(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """policy logits, value logits = f(s_k)."""
        out = self.prediction.forward(state)
        return out[:, :self.n_actions], out[:, self.n_actions:]

    def predict_backward(self, d_policy_logits: np.ndarray, d_value_logits: np.ndarray) -> np.ndarray:
        return self.prediction.backward(np.concatenate([d_policy_logits, d_value_logits], axis=1))

    def forward(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError("train through represent/dynamics/predict (see rlscratch.muzero.loss)")

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError("see rlscratch.muzero.loss")

    def infer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.initial_inference(obs)

    # the same functions keeping nothing, readable (the value prefix's search calls use them)
    def infer_represent(self, obs: np.ndarray) -> np.ndarray:
        return self.scale_initial.infer(self.representation.infer(np.asarray(obs, dtype=self.dtype)))

    def infer_next_state(self, state: np.ndarray, actions: np.ndarray) -> np.ndarray:
        out = self.dynamics_net.infer(np.concatenate([state, self.one_hot(actions)], axis=1))
        return self.scale_next.infer(out[:, :self.state_dim])

    def infer_predict(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """policy logits, value (a scalar)."""
        out = self.prediction.infer(state)
        return out[:, :self.n_actions], logits_to_scalar(out[:, self.n_actions:], self.value_support)

    # -- search: nothing kept, scalars out -------------------------------------------------------
    # The search calls these thousands of times per move; they run the same maths as represent /
    # dynamics / predict through the faster code of rlscratch.muzero.fast (tests compare them).
    _fast: FastInference | FastPrefixInference | None = None

    def _inference(self) -> FastInference | FastPrefixInference:
        if self._fast is None:
            # a value prefix changes what a node's state holds (value_prefix.py): its calls run on the
            # same fast plans (value_prefix.PrefixInference is their readable form, tested equal)
            fast = FastInference(self)
            self._fast = FastPrefixInference(self, fast) if self.value_prefix is not None else fast
        return self._fast

    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """obs -> (state s_0, policy logits, value): ``represent`` then ``predict``, keeping nothing."""
        return self._inference().initial_inference(obs)

    def recurrent_inference(self, state: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(s_k, a_k) -> (state s_{k+1}, reward r_{k+1}, policy logits, value): ``dynamics`` then
        ``predict``, keeping nothing."""
        return self._inference().recurrent_inference(state, actions)

    def recurrent_inference_one(self, state: np.ndarray, action: int, next_state_out: np.ndarray,
                                 ) -> tuple[float, np.ndarray, float]:
        """``recurrent_inference`` for ONE (state (D,), action), as a search over a single root calls
        it: s_{k+1} written into ``next_state_out``; returns (reward, policy logits (A,), value)."""
        return self._inference().recurrent_inference_one(state, action, next_state_out)
