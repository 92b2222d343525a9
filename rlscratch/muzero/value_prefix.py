"""EfficientZero's value prefix (Ye et al. 2021, section 4.2): predict sums of rewards, not rewards.

A model that must say *at which step* a reward arrives gets punished for being one step early or
late, though for planning only the sum matters. EfficientZero's dynamics instead predicts the
**value prefix** -- the running sum of rewards since the last reset -- with an LSTM over the states
the dynamics produces, reset every ``lstm_horizon`` (H = 5) steps:

    (h_k, c_k) = LSTM(s_k, (h_{k-1}, c_{k-1}))        (h_0, c_0) = 0, and 0 again after every depth
    prefix_k   = head(relu(h_k))                       that is a multiple of H (k = H, 2H, ...)

trained (cross-entropy over the reward support) towards

    P_k = sum_{j = r(k)+1}^{k} u_j,        r(k) = H floor((k - 1) / H)    (the last reset before k)

with u_j the reward of the j-th step of the unroll (EfficientZero sums without discounting: the
horizon is short and gamma close to 1).

**In the search** the LSTM state rides along with each node's hidden state, and the reward on the
edge into a node at depth d is the prefix's increment,

    r_d = prefix_d - prefix_{d-1}     or  prefix_d  when d - 1 is a multiple of H (a reset: the
                                                       parent's prefix started a new sum)

-- EfficientZero's ``true_reward = value_prefix - parent_value_prefix`` unless the parent is reset.
``PrefixInference`` does this inside the model calls: the search's "state" of a node is the row
[s | h | c | prefix | depth], so the search itself (rlscratch.muzero.mcts) needs no change at all.
It is the readable form; the networks' search calls run rlscratch.muzero.fast.FastPrefixInference,
the same maths on the fast path (tests/test_muzero_fast.py compares them, call by call and as searches).

**Backward through time.** In training the K LSTM steps are one chain: backward at step k receives
dL/dh_k from its own head and (dL/dh_k, dL/dc_k) from step k+1's input -- unless k is a reset depth,
where step k+1 started from zeros (constants) and nothing flows back.
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn

from .support import logits_to_scalar


def value_prefix_targets(rewards: np.ndarray, horizon: int) -> np.ndarray:
    """(N, K+1) per-step rewards u_k (column 0 unused) -> (N, K+1) value-prefix targets P_k
    (column 0: 0), the sum restarting after every multiple of ``horizon``."""
    out = np.zeros_like(np.asarray(rewards, dtype=np.float64))
    running = np.zeros(len(out))
    for k in range(1, out.shape[1]):
        if (k - 1) % horizon == 0:
            running = np.zeros(len(out))
        running = running + rewards[:, k]
        out[:, k] = running
    return out


def is_reset(depth: int | np.ndarray, horizon: int):
    """A node at this depth starts a new sum: its LSTM state is zeroed (the root, depth 0, too)."""
    return np.asarray(depth) % horizon == 0


class ValuePrefix(nn.Module):
    """The LSTM and its head: (s_k, (h, c)) -> (prefix logits, (h_k, c_k)). ``features`` (optional)
    turns a state into the LSTM's input first (the conv model's 1x1 conv to a few channels)."""

    def __init__(self, state_dim: int, hidden: int, bins: int, rng: np.random.Generator, init: str = "he",
                 horizon: int = 5, features: nn.Module | None = None) -> None:
        super().__init__()
        self.horizon, self.hidden = horizon, hidden
        self.features = features
        self.lstm = nn.LSTMCell(state_dim, hidden, rng)
        self.relu = nn.ReLU()
        self.head = nn.Linear(hidden, bins, rng, init=init)
        self.head.params["W"][...] = 0.0    # starts predicting 0 (as the other heads)

    def zeros(self, n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((n, self.hidden), dtype=dtype), np.zeros((n, self.hidden), dtype=dtype)

    def forward(self, state: np.ndarray, lstm_state: tuple[np.ndarray, np.ndarray]):
        x = state if self.features is None else self.features.forward(state)
        h, c = self.lstm.forward(x, lstm_state)
        return self.head.forward(self.relu.forward(h)), (h, c)

    def backward(self, d_logits: np.ndarray, d_next: tuple[np.ndarray, np.ndarray] | None):
        """dL/d(prefix logits) of this step and (dL/dh_k, dL/dc_k) from the next step's LSTM input
        (None at a reset) -> (dL/ds_k, (dL/dh_{k-1}, dL/dc_{k-1}))."""
        dh = self.relu.backward(self.head.backward(d_logits))
        dc = None
        if d_next is not None:
            dh = dh + d_next[0]
            dc = d_next[1]
        dx, d_prev = self.lstm.backward((dh, dc))
        return (dx if self.features is None else self.features.backward(dx)), d_prev

    def infer(self, state: np.ndarray, lstm_state: tuple[np.ndarray, np.ndarray]):
        x = state if self.features is None else self.features.infer(state)
        h, c = self.lstm.infer(x, lstm_state)
        return self.head.infer(np.maximum(h, 0.0)), (h, c)


class PrefixInference:
    """The search's model calls for a network with a value prefix (see the module docstring): a
    node's state is the row [s (flattened) | h | c | prefix | depth]; the reward returned is the edge
    reward. The network provides ``infer_represent``, ``infer_next_state`` and ``infer_predict``."""

    def __init__(self, net) -> None:
        self.net = net
        self.shape = tuple(getattr(net, "state_shape", (net.state_dim,)))
        self.D, self.H = int(np.prod(self.shape)), net.value_prefix.hidden

    def _pack(self, state, h, c, prefix, depth) -> np.ndarray:
        return np.concatenate([state.reshape(len(state), -1), h, c, prefix[:, None], depth[:, None]],
                              axis=1).astype(self.net.dtype)

    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        net = self.net
        state = net.infer_represent(obs)
        policy_logits, value = net.infer_predict(state)
        h, c = net.value_prefix.zeros(len(state), net.dtype)
        zeros = np.zeros(len(state), dtype=net.dtype)
        return self._pack(state, h, c, zeros, zeros), policy_logits, value

    def recurrent_inference(self, node: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        net, D, H = self.net, self.D, self.H
        state, h, c = node[:, :D].reshape(len(node), *self.shape), node[:, D:D + H], node[:, D + H:D + 2 * H]
        parent_prefix, depth = node[:, -2], node[:, -1]
        next_state = net.infer_next_state(state, actions)
        prefix_logits, (h, c) = net.value_prefix.infer(next_state, (h, c))
        prefix = logits_to_scalar(prefix_logits, net.reward_support)
        horizon = net.value_prefix.horizon
        reward = prefix - np.where(is_reset(np.rint(depth).astype(np.int64), horizon), 0.0, parent_prefix)
        depth = depth + 1
        reset = is_reset(np.rint(depth).astype(np.int64), horizon)[:, None]
        h, c = np.where(reset, 0.0, h), np.where(reset, 0.0, c)
        policy_logits, value = net.infer_predict(next_state)
        return self._pack(next_state, h, c, prefix, depth), reward, policy_logits, value
