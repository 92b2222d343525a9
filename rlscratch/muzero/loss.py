"""MuZero's training loss: unroll the learned model K steps along stored actions, forward and
backward by hand.

For a position t of a stored game with actions a_t..a_{t+K-1}:

    s_0 = h(o_t),    s_{k+1}, r_{k+1} = g(s_k, a_{t+k}),    p_k, v_k = f(s_k)      k = 0..K

    L = sum_{k=0}^{K} c_k [ CE(pi_k, p_k) + lambda_v CE(twohot(z_k), v_k) + [k > 0] CE(twohot(u_k), r_k) ]

with c_0 = 1 and c_k = 1/K for k > 0 (so the whole unroll weighs about as much as the first step),
pi_k the search policy stored at t+k, z_k the n-step value target and u_k the observed reward of
step t+k-1. Each term is a softmax cross-entropy, whose gradient with respect to its logits is
simply (softmax - target) -- see docs/backprop.md. Every sample n is weighted by w_n (importance
weights from prioritized replay) and by a 0/1 mask per target (no policy beyond the end of an
episode, nothing past data we do not have), and the batch is averaged over its N samples.

**Gradient scaling.** MuZero halves the gradient flowing back into the hidden state at every
unrolled step (``scale_gradient(s, 0.5)`` in the paper's pseudocode), so that the gradient the
representation receives stays bounded however long the unroll: the state s_k (k >= 1) enters the
next dynamics call as 0.5 s_k + 0.5 stopgrad(s_k) -- the same value, half the gradient. In backward
that is one multiplication of dL/ds_k coming out of the dynamics by ``state_grad_scale``.

**EfficientZero's terms** (each off unless the network has the part). With a value prefix
(value_prefix.py) the reward logits r_k come from an LSTM over s_1..s_k, reset after every depth that
is a multiple of H, and u_k is the value-prefix target; its backward runs through time alongside the
dynamics'. With temporal consistency (consistency.py) every step k >= 1 adds

    + consistency_coef / K * m_k * (-cos(Q(P(s_k)), P(h(o_{t+k}))))

the second argument computed without keeping anything (a stop-gradient), m_k masking steps past the
episode's final observation.

**Policy entropy** (``entropy_coef`` beta > 0; off by default): every step whose policy target counts
subtracts beta times the entropy of the predicted policy, weighted like its cross-entropy,

    - beta sum_k c_k m_k H(p_k),    H(p) = -sum_a p_a log p_a,

a push away from one-hot priors when the search's targets are near one-hot. Its gradient with
respect to the logits z (p = softmax(z)): dH/dz_a = -p_a (log p_a + H), so the term adds
beta c_k w_n m_k / N * p_a (log p_a + H) to the policy logits' gradient.

The backward pass visits the calls in exactly the reverse of the forward order,

    forward:   h, f_0, g_0, f_1, g_1, ..., g_{K-1}, f_K
    backward:  f_K, g_{K-1}, f_{K-1}, ..., g_0, f_0, h

and because each rlscratch module keeps a stack of its forward calls, the prediction and dynamics
networks (used K+1 and K times) pop their own calls in that order and accumulate their gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch import nn

from .consistency import negative_cosine, target_projections
from .model import MuZeroNet
from .support import logits_to_scalar, scalar_to_support


@dataclass
class UnrollBatch:
    """Inputs and targets of one unrolled update (N samples, K unroll steps, A actions)."""

    obs: np.ndarray             # (N, obs_dim)   observation o_t
    actions: np.ndarray         # (N, K)         actions a_t..a_{t+K-1} (random past an episode's end)
    target_policy: np.ndarray   # (N, K+1, A)    search policies pi_0..pi_K
    policy_mask: np.ndarray     # (N, K+1)
    target_value: np.ndarray    # (N, K+1)       scalar value targets z_0..z_K
    value_mask: np.ndarray      # (N, K+1)
    target_reward: np.ndarray   # (N, K+1)       scalar rewards u_k; column 0 unused
    reward_mask: np.ndarray     # (N, K+1)       column 0 unused
    weights: np.ndarray         # (N,)           importance-sampling weights
    # EfficientZero's temporal consistency (consistency.py); None without it
    target_obs: np.ndarray | None = None        # (N, K, obs_dim)  observations o_{t+1}..o_{t+K}
    consistency_mask: np.ndarray | None = None  # (N, K+1)         1 where o_{t+k} exists; column 0 unused


@dataclass
class UnrollResult:
    loss: float
    policy_loss: float
    value_loss: float
    reward_loss: float
    initial_value: np.ndarray   # (N,) predicted v_0, for prioritized replay's |v_0 - z_0|
    states: list[np.ndarray]    # s_0..s_K of this forward pass (the gradient check detaches them)
    consistency_loss: float = 0.0             # logged without its coefficient
    consistency_targets: list | None = None   # t_1..t_K (the gradient check holds them fixed)
    policy_entropy: float = 0.0               # mean H(p_0) over the batch (unweighted), a diagnostic of collapse


def unrolled_loss(net: MuZeroNet, batch: UnrollBatch, *, value_coef: float, state_grad_scale: float,
                  backward: bool = True, detached_states: list[np.ndarray] | None = None,
                  consistency_coef: float = 0.0, consistency_targets: list | None = None,
                  entropy_coef: float = 0.0) -> UnrollResult:
    """The loss above; with ``backward`` its gradient is *added* into ``net``'s gradients.

    ``detached_states`` exists for the gradient check only: the states s_0..s_K of an earlier
    forward pass at the same parameters (``UnrollResult.states``). Then each dynamics input
    is computed as c s_k + (1 - c) s_k^detached, a function whose true derivative *is* the scaled
    gradient, so finite differences can verify the scaling too. In training leave it None: the value
    is identical and only the backward multiplies by c.
    """
    n, K = batch.actions.shape
    dtype = net.dtype
    c = float(state_grad_scale)
    base = np.asarray(batch.weights, dtype=np.float64).reshape(n)
    value_targets = scalar_to_support(batch.target_value, net.value_support)     # (N, K+1, 2S+1)
    reward_targets = scalar_to_support(batch.target_reward, net.reward_support)

    parts = {"policy": 0.0, "value": 0.0, "reward": 0.0, "consistency": 0.0, "entropy": 0.0}
    grads_policy, grads_value, grads_reward = [], [], []
    prefix = net.value_prefix
    lstm = prefix.zeros(n, dtype) if prefix is not None else None
    consistent = net.consistency is not None and batch.target_obs is not None and consistency_coef > 0
    grads_consistency: list = [None] * (K + 1)
    if consistent and consistency_targets is None:
        # the target branch: t_k = P(h(o_{t+k})) with nothing kept -- no gradient ever reaches it
        consistency_targets = target_projections(net, batch.target_obs)

    def cross_entropy(logits: np.ndarray, target: np.ndarray, mask: np.ndarray, scale: float, name: str) -> np.ndarray:
        # nn's softmax cross-entropy divides by N itself: L = sum_n weight_n l_n / N
        loss, grad = nn.softmax_cross_entropy(logits, target, weights=base * mask * scale)
        parts[name] += loss
        return grad

    def entropy_bonus(logits: np.ndarray, mask: np.ndarray, scale: float, grad: np.ndarray) -> float:
        # - beta * sum_n weight_n H_n / N, its gradient p (log p + H) * beta weight_n / N added into grad
        logp = nn.log_softmax(logits.astype(np.float64))
        p = np.exp(logp)
        entropy = -(p * logp).sum(axis=-1)
        if entropy_coef > 0:
            weight = base * mask * (scale * entropy_coef / n)
            parts["entropy"] -= float(weight @ entropy)
            grad += (p * (logp + entropy[:, None]) * weight[:, None]).astype(grad.dtype)
        return float(entropy.mean())

    state = net.represent(batch.obs)
    states = [state]
    initial_value = None
    for k in range(K + 1):
        scale = 1.0 if k == 0 else 1.0 / K
        policy_logits, value_logits = net.predict(state)
        if k == 0:
            initial_value = logits_to_scalar(value_logits.astype(np.float64), net.value_support)
        grads_policy.append(cross_entropy(policy_logits, batch.target_policy[:, k], batch.policy_mask[:, k],
                                          scale, "policy"))
        if k == 0 or entropy_coef > 0:
            entropy = entropy_bonus(policy_logits, batch.policy_mask[:, k], scale, grads_policy[-1])
            if k == 0:
                initial_entropy = entropy
        grads_value.append(cross_entropy(value_logits, value_targets[:, k], batch.value_mask[:, k],
                                         scale * value_coef, "value"))
        if k == K:
            break
        state_in = state
        if k > 0 and detached_states is not None:
            state_in = c * state + (1.0 - c) * detached_states[k]
        state, reward_logits = net.dynamics(state_in, batch.actions[:, k])
        states.append(state)
        if prefix is not None:
            reward_logits, lstm = prefix.forward(state, lstm)
            if (k + 1) % prefix.horizon == 0:   # a new sum starts after depth H, 2H, ...
                lstm = prefix.zeros(n, dtype)
        if consistent:
            weight = base * batch.consistency_mask[:, k + 1] * (consistency_coef / K)
            losses, d_online = negative_cosine(net.consistency.online(state), consistency_targets[k + 1])
            parts["consistency"] += float((weight * losses).sum()) / n
            grads_consistency[k + 1] = (d_online * (weight / n)[:, None]).astype(dtype)
        grads_reward.append(cross_entropy(reward_logits, reward_targets[:, k + 1], batch.reward_mask[:, k + 1],
                                          1.0 / K, "reward"))

    if backward:
        d_from_dynamics = d_lstm = None
        for k in range(K, -1, -1):
            d_state = net.predict_backward(grads_policy[k], grads_value[k])
            if d_from_dynamics is not None:
                d_state += d_from_dynamics
            if grads_consistency[k] is not None:
                d_state += net.consistency.online_backward(grads_consistency[k])
            if k > 0:
                d_reward = grads_reward[k - 1]
                if prefix is not None:
                    # BPTT: step k+1 read this step's LSTM state unless depth k was a reset
                    d_next = d_lstm if k < K and k % prefix.horizon != 0 else None
                    d_from_prefix, d_lstm = prefix.backward(d_reward, d_next)
                    d_state += d_from_prefix
                    d_reward = d_reward[:, :0]
                d_input = net.dynamics_backward(d_state, d_reward)
                # the state s_{k-1} entered this dynamics call through scale_gradient(., c) unless
                # it is s_0 (the paper scales only the states the dynamics itself produced)
                d_from_dynamics = d_input * c if k - 1 > 0 else d_input
        net.represent_backward(d_state)
    else:
        net.clear_saved()

    loss = parts["policy"] + parts["value"] + parts["reward"] + parts["consistency"] + parts["entropy"]
    raw_value_loss = parts["value"] / value_coef if value_coef else 0.0  # logged without its coefficient
    raw_consistency = parts["consistency"] / consistency_coef if consistency_coef else 0.0
    return UnrollResult(float(loss), parts["policy"], raw_value_loss, parts["reward"], initial_value.astype(dtype),
                        states, raw_consistency, consistency_targets, initial_entropy)
