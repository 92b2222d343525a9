"""The fast paths of MuZero's search: the same maths as the readable code, arranged for speed.

Tree search evaluates the model thousands of times per move on tiny batches, where numpy's fixed
cost per call outweighs the arithmetic. Two things here trade readability for that time, and each
is tested equal to its readable counterpart (tests/test_muzero.py):

* ``FastInference`` -- MuZeroNet's ``initial_inference`` / ``recurrent_inference`` (the training
  path's represent / dynamics / predict, keeping nothing, scalars out) from per-layer "plans" of
  parameter views, the one-hot product as a row lookup and both support means in one product; and
  ``recurrent_inference_one``, the same for ONE (state, action) on 1-D vectors with reused buffers;
* ``FastPrefixInference`` -- the value prefix's search calls (value_prefix.PrefixInference: a
  node's row [s | h | c | prefix | depth], the edge reward the prefix's increment) on those plans
  (or on a conv net's own inference), written into one preallocated row block instead of packed by
  a concatenation, the LSTM step and both support means inline; ``recurrent_inference_one`` the
  same for ONE node row, so a one-root pUCT search with a value prefix runs on the fast path too;
* ``simulate_one_root`` -- a pUCT search over ONE root (rlscratch.muzero.mcts) on Python lists,
  computing each node's scores as the descent passes it instead of rescoring the whole tree: it
  leaves exactly the tree the batched search leaves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from rlscratch import nn
from rlscratch.nn.recurrent import _sigmoid_  # the LSTM cell's own in-place sigmoid: same bits

from .support import inverse_transform, inverse_transform_scalar, logits_to_mean, support_moments
from .value_prefix import is_reset

if TYPE_CHECKING:
    from .mcts import MCTS, SearchModel
    from .model import MuZeroNet


class FastInference:
    """Per network, the (W^T, b, activation) of each layer as views of the model's flat buffer, plus
    the supports' moment matrices: looked up once, not once per layer and call. Built lazily by
    MuZeroNet and dropped whenever its parameters move to a new buffer (``flatten``)."""

    def __init__(self, net: MuZeroNet) -> None:
        self.n_actions, self.state_dim, self.dtype = net.n_actions, net.state_dim, net.dtype
        self.eps_initial, self.eps_next = net.scale_initial.eps, net.scale_next.eps

        def plan(seq) -> list:
            steps: list = []
            for layer in seq.layers:
                if isinstance(layer, nn.Linear):
                    steps.append([layer.params["W"].T, layer.params["b"], None])
                else:
                    steps[-1][2] = "relu" if isinstance(layer, nn.ReLU) else layer
            return steps

        dynamics = plan(net.dynamics_net)
        first_t, first_b, first_act = dynamics[0]
        reward_bins, value_bins = net.reward_bins, net.value_bins
        # both heads' support means in one product: block-diagonal [1 | i] moments, columns
        # (sum_r, sum_r i, sum_v, sum_v i) of the concatenated [reward | value] exponentials
        heads = np.zeros((reward_bins + value_bins, 4), dtype=net.dtype)
        heads[:reward_bins, :2] = support_moments(net.reward_support, net.dtype)
        heads[reward_bins:, 2:] = support_moments(net.value_support, net.dtype)
        spread = np.zeros((2, reward_bins + value_bins), dtype=net.dtype)
        spread[0, :reward_bins] = spread[1, reward_bins:] = 1.0
        plans = {
            "representation": plan(net.representation), "prediction": plan(net.prediction),
            # [s | onehot(a)] W^T = s W_s^T + (row a of W_a^T): the one-hot product is a row lookup
            "dynamics_first": (first_t[:net.state_dim], first_t[net.state_dim:], first_b, first_act),
            "dynamics_rest": dynamics[1:],
            "value_moments": support_moments(net.value_support, net.dtype),
            "head_moments": heads, "head_spread": spread,
            "head_starts": np.array([0, reward_bins]),
        }

        def plan_one(steps: list) -> list:
            # recurrent_inference_one's layers: each also gets an output vector reused from call to
            # call and, for a ReLU, a zero vector to take the maximum with
            return [(weight_t, bias, activation, np.zeros(len(bias), net.dtype),
                     np.zeros(len(bias), net.dtype) if activation == "relu" else None)
                    for weight_t, bias, activation in steps]

        plans["one_dynamics"] = plan_one(dynamics)
        plans["one_prediction"] = plan_one(plans["prediction"])
        plans["reward_moments"] = support_moments(net.reward_support, net.dtype)
        self.plans = plans

    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """obs -> (state s_0, policy logits, value): ``represent`` then ``predict``, keeping nothing."""
        plans = self.plans
        state = _scale(_run(plans["representation"], np.asarray(obs, dtype=self.dtype)), self.eps_initial)
        out = _run(plans["prediction"], state)
        value = inverse_transform(logits_to_mean(out[:, self.n_actions:], plans["value_moments"]))
        return state, out[:, :self.n_actions], value

    def recurrent_inference(self, state: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(s_k, a_k) -> (state s_{k+1}, reward r_{k+1}, policy logits, value): ``dynamics`` then
        ``predict``, keeping nothing (the same function; a test compares them)."""
        plans = self.plans
        weight_state, weight_action, bias, activation = plans["dynamics_first"]
        x = state @ weight_state
        x += bias
        x += weight_action.take(actions, axis=0)
        x = _run(plans["dynamics_rest"], _activate(x, activation))
        next_state = _scale(x[:, :self.state_dim], self.eps_next)
        out = _run(plans["prediction"], next_state)
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
        plans = self.plans
        D, A = self.state_dim, self.n_actions
        weight_state, weight_action, _, _ = plans["dynamics_first"]
        (_, bias, activation, x, zeros), *rest = plans["one_dynamics"]
        # [s | onehot(a)] W^T = s W_s^T + (row a of W_a^T)
        np.dot(state, weight_state, out=x)
        x += bias
        x += weight_action[action]
        x = _run_one(rest, _activate_one(x, activation, zeros))
        # MinMaxScale, the operations of _scale, into the tree's slot
        state_part = x[:D]
        low = np.minimum.reduce(state_part)
        span = np.maximum.reduce(state_part) - low
        span += self.eps_next
        next_state = np.subtract(state_part, low, out=next_state_out)
        next_state /= span
        out = _run_one(plans["one_prediction"], next_state)
        reward = _support_mean_one(x[D:], plans["reward_moments"])
        value = _support_mean_one(out[A:], plans["value_moments"])
        return inverse_transform_scalar(reward), out[:A], inverse_transform_scalar(value)


    def next_state(self, state: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """s_{k+1} alone (a value-prefix network's dynamics has no reward head)."""
        weight_state, weight_action, bias, activation = self.plans["dynamics_first"]
        x = state @ weight_state
        x += bias
        x += weight_action.take(actions, axis=0)
        return _scale(_run(self.plans["dynamics_rest"], _activate(x, activation)), self.eps_next)

    def predict(self, state: np.ndarray) -> np.ndarray:
        """The prediction net's raw output [policy logits | value logits]."""
        return _run(self.plans["prediction"], state)


class FastPrefixInference:
    """value_prefix.PrefixInference's ``initial_inference`` / ``recurrent_inference`` (the same maths,
    tested equal: tests/test_muzero_fast.py), plus ``recurrent_inference_one`` for one-root searches.

    A node's row is [s (flattened) | h | c | prefix | depth], as there. The MLP network's represent /
    dynamics / predict run on FastInference's plans; a conv network's on its own ``infer_*`` (the
    conv core's fast paths). What is saved over the readable path: the new rows are written into one
    preallocated block (no concatenation, no dtype copy), the LSTM step and the head are inlined on
    views of the parameters, and the support moments of the prefix's and the value's means are built
    once (logits_to_scalar builds them on every call). Built lazily by the network and dropped
    whenever its parameters move to a new buffer (``flatten``)."""

    def __init__(self, net, fast: FastInference | None = None) -> None:
        prefix = net.value_prefix
        self.net, self.fast, self.features = net, fast, prefix.features
        self.shape = tuple(getattr(net, "state_shape", (net.state_dim,)))
        self.D, self.H, self.horizon = int(np.prod(self.shape)), prefix.hidden, prefix.horizon
        self.A, self.dtype = net.n_actions, net.dtype
        lstm = prefix.lstm.params
        self.lstm_x_t, self.lstm_h_t, self.lstm_b = lstm["W_x"].T, lstm["W_h"].T, lstm["b"]
        self.head_t, self.head_b = prefix.head.params["W"].T, prefix.head.params["b"]
        self.reward_moments = support_moments(net.reward_support, net.dtype)
        self.value_moments = support_moments(net.value_support, net.dtype)
        self.row = self.D + 2 * self.H + 2

    # -- the network's pieces, fast (MLP plans) or its own (conv) ---------------------------------------
    def _represent(self, obs: np.ndarray) -> np.ndarray:
        if self.fast is None:
            return self.net.infer_represent(obs).reshape(len(obs), -1)
        return _scale(_run(self.fast.plans["representation"], np.asarray(obs, dtype=self.dtype)), self.fast.eps_initial)

    def _next_state(self, state: np.ndarray, actions: np.ndarray) -> np.ndarray:
        if self.fast is None:
            return self.net.infer_next_state(state.reshape(len(state), *self.shape), actions).reshape(len(state), -1)
        return self.fast.next_state(state, actions)

    def _predict(self, state: np.ndarray) -> np.ndarray:
        if self.fast is None:
            return self.net.prediction.infer(state.reshape(len(state), *self.shape))
        return self.fast.predict(state)

    def _lstm(self, state: np.ndarray, h: np.ndarray, c: np.ndarray, out: np.ndarray) -> np.ndarray:
        """nn.LSTMCell's step (the same operations, in the same order) writing h', c' into the row
        block ``out`` [h | c]; returns the prefix head's logits."""
        H = self.H
        x = state if self.features is None else self.features.infer(state.reshape(len(state), *self.shape))
        gates = x @ self.lstm_x_t
        gates += h @ self.lstm_h_t
        gates += self.lstm_b
        _sigmoid_(gates[:, :2 * H])
        np.tanh(gates[:, 2 * H:3 * H], out=gates[:, 2 * H:3 * H])
        _sigmoid_(gates[:, 3 * H:])
        c_new = np.multiply(gates[:, H:2 * H], c, out=out[:, H:])
        c_new += gates[:, :H] * gates[:, 2 * H:3 * H]
        h_new = np.multiply(gates[:, 3 * H:], np.tanh(c_new), out=out[:, :H])
        logits = np.maximum(h_new, 0.0) @ self.head_t
        logits += self.head_b
        return logits

    # -- the search's calls --------------------------------------------------------------------------
    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state = self._represent(obs)
        node = np.zeros((len(state), self.row), dtype=self.dtype)
        node[:, :self.D] = state
        out = self._predict(state)
        value = inverse_transform(logits_to_mean(out[:, self.A:], self.value_moments))
        return node, out[:, :self.A], value

    def recurrent_inference(self, node: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        D, H = self.D, self.H
        new = np.empty((len(node), self.row), dtype=self.dtype)
        state = new[:, :D]
        state[...] = self._next_state(node[:, :D], actions)
        prefix_logits = self._lstm(state, node[:, D:D + H], node[:, D + H:D + 2 * H], new[:, D:D + 2 * H])
        out = self._predict(state)
        prefix = inverse_transform(logits_to_mean(prefix_logits, self.reward_moments))
        depth = np.rint(node[:, -1]).astype(np.int64)
        # the edge reward: the prefix's increment, or the prefix itself below a reset (value_prefix.py)
        reward = prefix - np.where(is_reset(depth, self.horizon), 0.0, node[:, -2])
        new[:, -2] = prefix
        new[:, -1] = depth + 1
        new[is_reset(depth + 1, self.horizon), D:D + 2 * H] = 0.0
        value = inverse_transform(logits_to_mean(out[:, self.A:], self.value_moments))
        return new, reward, out[:, :self.A], value

    def recurrent_inference_one(self, node: np.ndarray, action: int, next_node_out: np.ndarray,
                                ) -> tuple[float, np.ndarray, float]:
        """``recurrent_inference`` for ONE node row (the one-root search's call): the new row written
        into ``next_node_out`` (the tree's slot); returns (edge reward, policy logits (A,), value)."""
        new, reward, logits, value = self.recurrent_inference(node[None], np.array([action]))
        next_node_out[...] = new[0]
        return float(reward[0]), logits[0].astype(np.float64), float(value[0])


def _run(steps: list, x: np.ndarray) -> np.ndarray:
    for weight_t, bias, activation in steps:
        x = x @ weight_t
        x += bias
        if activation == "relu":
            np.maximum(x, 0.0, out=x)
        elif activation is not None:
            x = activation.infer(x)
    return x


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


def simulate_one_root(search: MCTS, model: SearchModel) -> None:
    """All simulations of a pUCT search over ONE root, on Python numbers.

    The same select / expand / backup as the batched steps, but with a single tree every numpy
    call would cost more than the arithmetic it does. So the tree's statistics are copied into
    preallocated Python lists indexed exactly like the arrays (node i, edge i * A + a), the
    simulations run on those, and the lists are written back into the arrays at the end. The
    descent computes each node's pUCT scores as it passes (no rescoring of the whole tree), and
    the backup walks the path leaf to root with G_k = r_{k+1} + gamma G_{k+1}, G_d = v. The
    conventions (``q_normalization``, ``unvisited_q``, ``tree_bounds``) are the batched search's:
    ``mcts.puct_scores`` and ``MCTS._backup``."""
    config, A, unexpanded = search.config, search.n_actions, search.unexpanded
    gamma, delta = config.discount, config.value_delta
    visits = search.visits[0].astype(np.int64).tolist()
    value_sum, reward, raw_value = search.value_sum[0].tolist(), search.reward[0].tolist(), search.raw_value[0].tolist()
    depth_of, in_edge = search.depth[0].tolist(), search.in_edge[0].tolist()
    children, prior = search.children[0].reshape(-1).tolist(), search.prior[0].reshape(-1).tolist()
    edge_visits, edge_q = [0] * len(children), [0.0] * len(children)
    tie = search.tie_noise[0].reshape(-1).tolist()
    exploration_coef = search.exploration_coef_list
    states = search.states[0]
    infer = getattr(model, "recurrent_inference_one", None) or one_at_a_time(model)
    low, high = math.inf, -math.inf
    per_node, lowest = search.q_normalization == "node", config.unvisited_q == "lowest"   # the conventions
    returns = config.tree_bounds == "returns"
    path = [0] * (config.num_simulations + 2)
    for new in range(1, config.num_simulations + 1):
        # select: pUCT at each node, down to an action whose child does not exist yet
        node, depth = 0, 0
        inverse_span = 1.0 / (high - low if high - low > delta else delta)
        while True:
            n = visits[node]
            coef, parent_mean, first = exploration_coef[n], value_sum[node] / n, node * A
            node_low = low
            if per_node:   # this node's own bounds: its mean value and its visited children's Qs
                node_low = node_high = parent_mean
                for edge in range(first, first + A):
                    if edge_visits[edge]:
                        node_low, node_high = min(node_low, edge_q[edge]), max(node_high, edge_q[edge])
                inverse_span = 1.0 / (node_high - node_low if node_high - node_low > delta else delta)
            best, action = -math.inf, 0
            for a in range(A):
                edge = first + a
                edge_n = edge_visits[edge]
                score = ((edge_q[edge] if edge_n else parent_mean) - node_low) * inverse_span
                score = 0.0 if score < 0.0 or (lowest and not edge_n) else 1.0 if score > 1.0 else score
                score += prior[edge] * coef / (edge_n + 1.0)
                score += tie[edge]
                if score > best:
                    best, action = score, a
            child = children[first + action]
            if child == unexpanded:
                break
            node, depth = child, depth + 1
            path[depth] = node
        # expand: one network call, its state written straight into the new node's slot
        edge, depth = first + action, depth + 1
        r, logits, v = infer(states[node], action, states[new])
        children[edge], in_edge[new], depth_of[new], path[depth] = new, edge, depth, new
        reward[new] = r
        raw_value[new] = v
        logits = logits.tolist()
        top = max(logits)
        e = [math.exp(x - top) for x in logits]
        total = sum(e)
        prior[new * A:(new + 1) * A] = [x / total for x in e]
        # backup: value sums and visits of the path's nodes, Q(s, a) and N(s, a) of its edges
        g = v
        for k in range(depth, 0, -1):
            node = path[k]
            value_sum[node] += g
            visits[node] += 1
            r = reward[node]
            q = value_sum[node] / visits[node] * gamma + r
            edge = in_edge[node]
            edge_q[edge] = q
            edge_visits[edge] += 1
            g = r + gamma * g
            if returns:   # the bounds take the sampled return instead of the mean (EZ V2)
                q = g
            if q < low:
                low = q
            if q > high:
                high = q
        value_sum[0] += g
        visits[0] += 1
        if returns:
            g = reward[0] + gamma * g
            low, high = min(low, g), max(high, g)
    search.visits[0], search.value_sum[0], search.reward[0], search.raw_value[0] = visits, value_sum, reward, raw_value
    search.depth[0], search.in_edge[0] = depth_of, in_edge
    shape = search.children.shape[1:]
    search.children[0] = np.reshape(children, shape)
    search.prior[0] = np.reshape(prior, shape)
    search.edge_visits[0] = np.reshape(edge_visits, shape)
    search.edge_q[0] = np.reshape(edge_q, shape)
    search.low[0], search.high[0] = (math.inf, -math.inf) if per_node else (low, high)   # as the batched search


def one_at_a_time(model: SearchModel):
    """``recurrent_inference_one`` for a model that has only the batched call (the tests' fakes)."""
    def infer(state: np.ndarray, action: int, next_state_out: np.ndarray) -> tuple[float, np.ndarray, float]:
        next_state, reward, logits, value = model.recurrent_inference(state[None], np.array([action]))
        next_state_out[...] = next_state[0]
        return float(reward[0]), np.asarray(logits[0], dtype=np.float64), float(value[0])
    return infer
