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
* search (``initial_inference`` / ``recurrent_inference``): ``infer`` calls that keep nothing and
  return scalars (rewards, values) instead of support logits.
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn

from .support import inverse_transform, inverse_transform_scalar, logits_to_mean, support_bins, support_moments


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
                 activation: str = "relu", init: str = "he", dtype=np.float32) -> None:
        super().__init__()
        self.obs_dim, self.n_actions, self.state_dim = obs_dim, n_actions, state_dim
        self.value_support, self.reward_support = value_support, reward_support
        self.value_bins, self.reward_bins = support_bins(value_support), support_bins(reward_support)
        hidden = list(hidden)
        self.representation = nn.Sequential(*_mlp([obs_dim, *hidden, state_dim], activation, rng, init))
        self.representation.layers[0].input_grad = False  # its input is the observation
        self.dynamics_net = nn.Sequential(
            *_mlp([state_dim + n_actions, *hidden, state_dim + self.reward_bins], activation, rng, init))
        self.prediction = nn.Sequential(
            *_mlp([state_dim, *hidden, n_actions + self.value_bins], activation, rng, init))
        self.scale_initial = MinMaxScale()
        self.scale_next = MinMaxScale()
        # Heads start at zero (uniform policy, value 0, reward 0), as in EfficientZero: the first
        # targets then pull predictions from a neutral start instead of from random logits.
        self.dynamics_net.layers[-1].params["W"][state_dim:] = 0.0
        self.prediction.layers[-1].params["W"][...] = 0.0
        self.flatten(dtype)

    def flatten(self, dtype: np.dtype | type | None = None) -> MuZeroNet:
        super().flatten(dtype)
        self._plans = None  # the parameter views the inference plans hold are stale now
        return self

    _plans: dict | None = None

    def _inference_plans(self) -> dict:
        """Per network, the (W^T, b, activation) of each layer as views of the flat buffer, plus the
        supports' moment matrices: search runs the networks thousands of times per move, and
        looking these up once per call instead of once per layer is measurably faster."""
        if self._plans is None:
            def plan(seq: nn.Sequential) -> list:
                steps: list = []
                for layer in seq.layers:
                    if isinstance(layer, nn.Linear):
                        steps.append([layer.params["W"].T, layer.params["b"], None])
                    else:
                        steps[-1][2] = "relu" if isinstance(layer, nn.ReLU) else layer
                return steps

            dynamics = plan(self.dynamics_net)
            first_t, first_b, first_act = dynamics[0]
            reward_bins, value_bins = self.reward_bins, self.value_bins
            # both heads' support means in one product: block-diagonal [1 | i] moments, columns
            # (sum_r, sum_r i, sum_v, sum_v i) of the concatenated [reward | value] exponentials
            heads = np.zeros((reward_bins + value_bins, 4), dtype=self.dtype)
            heads[:reward_bins, :2] = support_moments(self.reward_support, self.dtype)
            heads[reward_bins:, 2:] = support_moments(self.value_support, self.dtype)
            spread = np.zeros((2, reward_bins + value_bins), dtype=self.dtype)
            spread[0, :reward_bins] = spread[1, reward_bins:] = 1.0
            self._plans = {
                "representation": plan(self.representation), "prediction": plan(self.prediction),
                # [s | onehot(a)] W^T = s W_s^T + (row a of W_a^T): the one-hot product is a row lookup
                "dynamics_first": (first_t[:self.state_dim], first_t[self.state_dim:], first_b, first_act),
                "dynamics_rest": dynamics[1:],
                "value_moments": support_moments(self.value_support, self.dtype),
                "head_moments": heads, "head_spread": spread,
                "head_starts": np.array([0, reward_bins]),
            }

            def plan_one(steps: list) -> list:
                # recurrent_inference_one's layers: each also gets an output vector reused from call to
                # call and, for a ReLU, a zero vector to take the maximum with
                return [(weight_t, bias, activation, np.zeros(len(bias), self.dtype),
                         np.zeros(len(bias), self.dtype) if activation == "relu" else None)
                        for weight_t, bias, activation in steps]

            self._plans["one_dynamics"] = plan_one(dynamics)
            self._plans["one_prediction"] = plan_one(self._plans["prediction"])
            self._plans["reward_moments"] = support_moments(self.reward_support, self.dtype)
        return self._plans

    @staticmethod
    def _run(steps: list, x: np.ndarray) -> np.ndarray:
        for weight_t, bias, activation in steps:
            x = x @ weight_t
            x += bias
            if activation == "relu":
                np.maximum(x, 0.0, out=x)
            elif activation is not None:
                x = activation.infer(x)
        return x

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

    # -- search: nothing kept, scalars out -------------------------------------------------------
    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """obs -> (state s_0, policy logits, value): ``represent`` then ``predict``, keeping nothing."""
        plans = self._inference_plans()
        state = _scale(self._run(plans["representation"], np.asarray(obs, dtype=self.dtype)), self.scale_initial.eps)
        out = self._run(plans["prediction"], state)
        value = inverse_transform(logits_to_mean(out[:, self.n_actions:], plans["value_moments"]))
        return state, out[:, :self.n_actions], value

    def recurrent_inference(self, state: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(s_k, a_k) -> (state s_{k+1}, reward r_{k+1}, policy logits, value): ``dynamics`` then
        ``predict``, keeping nothing (the same function; a test compares them)."""
        plans = self._inference_plans()
        weight_state, weight_action, bias, activation = plans["dynamics_first"]
        x = state @ weight_state
        x += bias
        x += weight_action.take(actions, axis=0)
        x = self._run(plans["dynamics_rest"], _activate(x, activation))
        next_state = _scale(x[:, :self.state_dim], self.scale_next.eps)
        out = self._run(plans["prediction"], next_state)
        # both support means at once (logits_to_mean for the two heads side by side): subtract each
        # head's own maximum (one reduceat, spread back over its bins by a 0/1 product), exp, then
        # the block moments give (sum e, sum e i) per head
        logits = np.concatenate([x[:, self.state_dim:], out[:, self.n_actions:]], axis=1)
        logits -= np.maximum.reduceat(logits, plans["head_starts"], axis=1) @ plans["head_spread"]
        sums = np.exp(logits, out=logits) @ plans["head_moments"]
        scalars = inverse_transform(sums[:, 1::2] / sums[:, 0::2])     # (N, 2): reward, value
        return next_state, scalars[:, 0], out[:, :self.n_actions], scalars[:, 1]

    def recurrent_inference_one(self, state: np.ndarray, action: int, next_state_out: np.ndarray,
                                ) -> tuple[float, np.ndarray, float]:
        """``recurrent_inference`` for ONE (state, action), as a search over a single root calls it:
        state (D,) and an int in; s_{k+1} written into ``next_state_out`` (D,) (the tree's own slot
        for the new node); returns (reward, policy logits (A,), value) with Python-float scalars.

        The same maths on 1-D vectors. At batch size 1 numpy's fixed cost per call is most of the
        time, so every layer writes into a vector reused from call to call (``np.dot(..., out=)``),
        a ReLU takes the maximum with a stored zero vector (a Python 0 costs numpy a conversion),
        and the two support means end in Python floats. The logits returned live in a reused
        vector: read them before the next call."""
        plans = self._inference_plans()
        D, A = self.state_dim, self.n_actions
        weight_state, weight_action, _, _ = plans["dynamics_first"]
        (_, bias, activation, x, zeros), *rest = plans["one_dynamics"]
        # [s | onehot(a)] W^T = s W_s^T + (row a of W_a^T)
        np.dot(state, weight_state, out=x)
        x += bias
        x += weight_action[action]
        x = self._run_one(rest, _activate_one(x, activation, zeros))
        # MinMaxScale, the operations of _scale, into the tree's slot
        state_part = x[:D]
        low = np.minimum.reduce(state_part)
        span = np.maximum.reduce(state_part) - low
        span += self.scale_next.eps
        next_state = np.subtract(state_part, low, out=next_state_out)
        next_state /= span
        out = self._run_one(plans["one_prediction"], next_state)
        reward = _support_mean_one(x[D:], plans["reward_moments"])
        value = _support_mean_one(out[A:], plans["value_moments"])
        return inverse_transform_scalar(reward), out[:A], inverse_transform_scalar(value)

    @staticmethod
    def _run_one(steps: list, x: np.ndarray) -> np.ndarray:
        for weight_t, bias, activation, out, zeros in steps:
            x = np.dot(x, weight_t, out=out)
            x += bias
            x = _activate_one(x, activation, zeros)
        return x


def _activate_one(x: np.ndarray, activation, zeros: np.ndarray | None) -> np.ndarray:
    if zeros is not None:   # ReLU
        return np.maximum(x, zeros, out=x)
    return x if activation is None else activation.infer(x[None])[0]


def _support_mean_one(logits: np.ndarray, moments: np.ndarray) -> float:
    """``logits_to_mean`` for one vector of support logits, as a Python float."""
    e = logits - np.maximum.reduce(logits)
    total, weighted = np.dot(np.exp(e, out=e), moments).tolist()
    return weighted / total


def _activate(x: np.ndarray, activation) -> np.ndarray:
    if activation is None:
        return x
    if activation == "relu":
        return np.maximum(x, 0.0, out=x)
    return activation.infer(x)


def _scale(x: np.ndarray, eps: float) -> np.ndarray:
    """MinMaxScale.infer with fewer temporaries (and direct ufunc reductions: ndarray.min/max pass
    through a Python wrapper that costs as much as the reduction on one row)."""
    low = np.minimum.reduce(x, axis=1, keepdims=True)
    span = np.maximum.reduce(x, axis=1, keepdims=True)
    span -= low
    span += eps
    y = x - low
    y /= span
    return y
