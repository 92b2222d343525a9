"""EfficientZero's losses on the MuZero model: the whole unrolled loss with temporal consistency and a
value prefix against central differences in float64 (through time, across an LSTM reset), the
consistency term's stop-gradient, a K = 2, N = 2 loss by hand with every weight, value-prefix targets
and the search's edge rewards by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_gradients_ok

from rlscratch import nn
from rlscratch.muzero.consistency import ConsistencyHeads, negative_cosine
from rlscratch.muzero.loss import UnrollBatch, unrolled_loss
from rlscratch.muzero.model import MuZeroNet
from rlscratch.muzero.support import logits_to_scalar
from rlscratch.muzero.value_prefix import value_prefix_targets


def ez_net(rng, *, prefix: bool = True, consistency: bool = True, horizon: int = 2) -> MuZeroNet:
    net = MuZeroNet(3, 2, rng, state_dim=4, hidden=[5], value_support=2, reward_support=1,
                    value_prefix_hidden=3 if prefix else 0, lstm_horizon=horizon,
                    consistency=(5, 3) if consistency else None).astype(np.float64)
    net.flat_params[:] = rng.standard_normal(net.flat_params.size) * 0.5   # no zero-initialised heads
    return net


def ez_batch(rng, n=3, K=3, A=2, obs_dim=3) -> UnrollBatch:
    return UnrollBatch(
        obs=rng.standard_normal((n, obs_dim)), actions=rng.integers(0, A, (n, K)),
        target_policy=rng.dirichlet(np.ones(A), (n, K + 1)), policy_mask=(rng.random((n, K + 1)) < 0.8) * 1.0,
        target_value=rng.uniform(-3, 3, (n, K + 1)), value_mask=(rng.random((n, K + 1)) < 0.9) * 1.0,
        target_reward=rng.uniform(-1, 1, (n, K + 1)), reward_mask=np.ones((n, K + 1)),
        weights=rng.uniform(0.5, 1.5, n), target_obs=rng.standard_normal((n, K, obs_dim)),
        consistency_mask=np.array([[1.0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])[:n])


@pytest.mark.parametrize("state_grad_scale", [1.0, 0.5])
@pytest.mark.parametrize("prefix,consistency", [(True, True), (True, False), (False, True)])
def test_efficientzero_loss_gradient_check(rng, state_grad_scale, prefix, consistency):
    """K = 3 with an LSTM horizon of 2: backprop through time runs across a reset (depth 2). The
    consistency targets and the scaled states are held at their values at theta_0 (stop-gradients)."""
    net = ez_net(rng, prefix=prefix, consistency=consistency)
    batch = ez_batch(rng)
    net.zero_grad()
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=state_grad_scale, consistency_coef=2.0)
    analytic = net.flat_grads.copy()
    assert net.saved_count() == 0
    assert (result.consistency_loss != 0.0) == consistency

    def loss() -> float:
        return unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=state_grad_scale, backward=False,
                             detached_states=result.states, consistency_coef=2.0,
                             consistency_targets=result.consistency_targets).loss

    assert loss() == pytest.approx(result.loss, rel=1e-12)
    numeric = nn.numerical_gradient(loss, net.flat_params, h=1e-5)
    assert_close_gradients(analytic, numeric)


def assert_close_gradients(analytic: np.ndarray, numeric: np.ndarray) -> None:
    """Relative error <= 1e-6 for every entry of size >= 1e-3, and <= 1e-8 absolute everywhere.

    (The LSTM's saturated gates give entries of 1e-6 and less; the central differences of this O(10)
    float64 loss at h = 1e-5 carry ~1e-10 of roundoff, which is a large *relative* error there --
    an error of the maths would be far larger than 1e-8 in absolute terms too.)"""
    large = np.abs(numeric) >= 1e-3
    assert large.sum() > len(numeric) // 10   # the check covers a real share of the parameters
    assert_gradients_ok({"large entries": nn.relative_error(analytic[large], numeric[large])})
    assert np.abs(analytic - numeric).max() <= 1e-8


def test_lstm_reset_cuts_the_gradient_through_time(rng):
    """With horizon 1 every depth is a reset: the LSTM's recurrent weights W_h only ever see zero
    states, so they get exactly zero gradient; with horizon 5 (no reset within K = 3) they do not."""
    for horizon, zero in ((1, True), (5, False)):
        net = ez_net(np.random.default_rng(3), consistency=False, horizon=horizon)
        net.zero_grad()
        unrolled_loss(net, ez_batch(np.random.default_rng(4)), value_coef=0.25, state_grad_scale=0.5)
        assert np.all(net.value_prefix.lstm.grads["W_h"] == 0.0) == zero
    # K = 3: horizon 3 resets only after depth 3 (past the unroll), like horizon 5; horizon 2 after depth 2
    loss = {h: unrolled_loss(ez_net(np.random.default_rng(3), consistency=False, horizon=h),
                             ez_batch(np.random.default_rng(4)), value_coef=0.25, state_grad_scale=0.5,
                             backward=False).loss for h in (2, 3, 5)}
    assert loss[3] == loss[5] and loss[3] != pytest.approx(loss[2], rel=1e-9)


def test_consistency_stop_gradient(rng):
    """The target branch P(h(o_{t+k})) is a constant. With the dynamics' state input cut (its weights
    zero), s_1 no longer depends on the representation: then the representation -- which the target
    branch runs through -- gets exactly zero gradient from the consistency loss, while without the
    stop-gradient (finite differences of the loss with the targets recomputed) it would not."""
    net = ez_net(rng, prefix=False)
    net.dynamics_net.layers[0].params["W"][:, :4] = 0.0   # state columns: s_1 = g(action) only
    batch = ez_batch(rng, K=1)
    batch.policy_mask[:] = 0.0
    batch.value_mask[:] = 0.0
    batch.reward_mask[:] = 0.0
    net.zero_grad()
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=2.0)
    assert result.loss != 0.0
    rep = np.concatenate([g.ravel() for g in
                          (layer.grads[name] for layer in net.representation.layers for name in layer.grads)])
    assert np.all(rep == 0.0)
    assert np.abs(net.consistency.predictor.layers[0].grads["W"]).sum() > 0

    # the same loss with the targets recomputed at every parameter value does depend on h
    first = net.representation.layers[0].params["W"]

    def recomputed() -> float:
        return unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False,
                             consistency_coef=2.0).loss

    numeric = nn.numerical_gradient(recomputed, first, h=1e-5)
    assert np.abs(numeric).max() > 1e-4


def test_negative_cosine_by_hand():
    p, t = np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[4.0, 3.0], [0.0, 2.0]])
    loss, grad = negative_cosine(p, t)
    assert loss == pytest.approx([-24 / 25, 0.0], abs=1e-8)   # (eps 1e-8 in the norms)
    # d(-cos)/dp = -(v - cos u)/|p|: row 1, u = (1, 0), v = (0, 1), cos = 0 -> (0, -1)
    assert grad[1] == pytest.approx([0.0, -1.0], abs=1e-7)
    u, v = np.array([0.6, 0.8]), np.array([0.8, 0.6])
    assert grad[0] == pytest.approx(-(v - 0.96 * u) / 5, abs=1e-7)


def test_loss_by_hand_k2_n2_every_weight():
    """All parameters zero except the consistency heads' last biases: every logit is 0, so each
    cross-entropy is log(classes) -- log 2 (policy), log 5 (value, S = 2), log 3 (value prefix,
    S = 1) -- and every projection is its last bias: predictor output b_q, projector output b_p,
    cos = cos(b_q, b_p) for every sample and step. K = 2: step weights (1, 1/2, 1/2), value coef
    1/4, consistency coef 2 (times 1/K), importance weights (1, 1/2), averaged over N = 2.

        policy   masks (1,1,0),(1,0,1):  [1.5 + 0.5 * 1.5] / 2     = 1.125 log 2
        value    masks (1,1,1),(0,1,1):  [2 + 0.5 * 1] / 4 / 2      = 0.3125 log 5
        prefix   masks (-,1,0),(-,0,1):  [0.5 + 0.5 * 0.5] / 2      = 0.375 log 3
        consist. masks (-,1,1),(-,1,0):  2 [1 + 0.5 * 0.5] / 2 (-cos) = -1.25 cos
    """
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2, reward_support=1,
                    value_prefix_hidden=3, lstm_horizon=5, consistency=(5, 2)).astype(np.float64)
    net.flat_params[:] = 0.0
    b_q, b_p = np.array([1.0, 2.0]), np.array([3.0, 1.0])
    net.consistency.predictor.layers[-1].params["b"][:] = b_q
    net.consistency.projector.layers[-1].params["b"][:] = b_p
    cos = 5.0 / (math.sqrt(5.0) * math.sqrt(10.0))   # <b_q, b_p> / (|b_q| |b_p|) = 1 / sqrt 2
    rng = np.random.default_rng(1)
    batch = UnrollBatch(
        obs=rng.standard_normal((2, 3)), actions=np.array([[0, 1], [1, 1]]),
        target_policy=rng.dirichlet(np.ones(2), (2, 3)), policy_mask=np.array([[1.0, 1, 0], [1, 0, 1]]),
        target_value=rng.uniform(-3, 3, (2, 3)), value_mask=np.array([[1.0, 1, 1], [0, 1, 1]]),
        target_reward=rng.uniform(-1, 1, (2, 3)), reward_mask=np.array([[1.0, 1, 0], [1, 0, 1]]),
        weights=np.array([1.0, 0.5]), target_obs=rng.standard_normal((2, 2, 3)),
        consistency_mask=np.array([[1.0, 1, 1], [1, 1, 0]]))
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=2.0)
    log2, log3, log5 = math.log(2), math.log(3), math.log(5)
    assert result.policy_loss == pytest.approx(1.125 * log2, rel=1e-12)
    assert result.value_loss == pytest.approx(1.25 * log5, rel=1e-12)
    assert result.reward_loss == pytest.approx(0.375 * log3, rel=1e-12)
    assert result.consistency_loss == pytest.approx(-0.625 * cos, rel=1e-7)   # (eps 1e-8 in |p|, |t|)
    assert result.loss == pytest.approx(1.125 * log2 + 0.3125 * log5 + 0.375 * log3 - 1.25 * cos, rel=1e-7)
    # consistency coef 3 (3 / K = 1.5 per step), mask column 0 unused (0 here), columns 1..2 (1, 0) and (1, 1):
    # 1.5 [1 * 1 + 0.5 * (1 + 1)] / 2 (-cos) = -1.5 cos, logged without its coefficient: -0.5 cos
    batch.consistency_mask = np.array([[0.0, 1, 0], [0.0, 1, 1]])
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=3.0)
    assert result.consistency_loss == pytest.approx(-0.5 * cos, rel=1e-7)


def test_value_prefix_targets_by_hand():
    """Horizon 2, K = 5: u = (-, 1, 2, 3, 4, 5) -> P = (0, 1, 1+2, 3, 3+4, 5); horizon 5: running
    sums (the next reset comes after depth 5); horizon 1: the rewards themselves."""
    u = np.array([[0.0, 1, 2, 3, 4, 5]])
    assert value_prefix_targets(u, 2)[0].tolist() == [0, 1, 3, 3, 7, 5]
    assert value_prefix_targets(u, 5)[0].tolist() == [0, 1, 3, 6, 10, 15]
    assert value_prefix_targets(u, 1)[0].tolist() == [0, 1, 2, 3, 4, 5]


def test_search_edge_rewards_are_prefix_increments(rng):
    """Unroll a fixed action sequence through the search-time model calls with horizon 2: the edge
    reward is prefix_d - prefix_{d-1}, except after a reset depth (0, 2, 4) where it is prefix_d; the
    prefixes are those of the training path (LSTM zeroed after depth 2)."""
    net = ez_net(rng, consistency=False, horizon=2)
    obs, actions = rng.standard_normal((2, 3)), rng.integers(0, 2, (2, 4))
    node, _, _ = net.initial_inference(obs)
    rewards, prefixes = [], []
    for d in range(4):
        node, reward, _, _ = net.recurrent_inference(node, actions[:, d])
        rewards.append(reward)
        prefixes.append(node[:, -2].copy())
        assert np.all(node[:, -1] == d + 1)
    # the training path's prefixes
    state = net.represent(obs)
    lstm = net.value_prefix.zeros(2, net.dtype)
    expected = []
    for d in range(4):
        state, _ = net.dynamics(state, actions[:, d])
        logits, lstm = net.value_prefix.forward(state, lstm)
        expected.append(logits_to_scalar(logits, net.reward_support))
        if (d + 1) % 2 == 0:
            lstm = net.value_prefix.zeros(2, net.dtype)
    net.clear_saved()
    assert np.allclose(prefixes, expected, rtol=1e-10)
    p = expected
    assert np.allclose(rewards, [p[0], p[1] - p[0], p[2], p[3] - p[2]], rtol=1e-10)


def test_consistency_heads_gradient_check(rng):
    heads = ConsistencyHeads(4, 5, 3, rng).astype(np.float64)
    assert_gradients_ok(nn.check_module(heads, rng.standard_normal((3, 4)), rng=rng))


def test_consistency_term_is_off_unless_its_coefficient_is_given(rng):
    """A network with consistency heads and a batch with the next observations: without
    consistency_coef the loss has no consistency term (and logs none); with coefficient 2 (or 0.5) the
    loss is the same plus 2 (0.5) x the logged (coefficient-free) term."""
    net, batch = ez_net(rng), ez_batch(rng)
    default = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False)
    on = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False, consistency_coef=2.0)
    assert default.consistency_loss == 0.0 and on.consistency_loss != 0.0
    assert on.loss == pytest.approx(default.loss + 2.0 * on.consistency_loss, rel=1e-12)
    small = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False, consistency_coef=0.5)
    assert small.consistency_loss == pytest.approx(on.consistency_loss, rel=1e-12)   # any positive coefficient
    assert small.loss == pytest.approx(default.loss + 0.5 * on.consistency_loss, rel=1e-12)
    # off (no coefficient, or 0): the target branch P(h(o_{t+k})) is not even computed
    zero = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False, consistency_coef=0.0)
    assert default.consistency_targets is None and zero.consistency_targets is None
    assert len(on.consistency_targets) == 4


def test_float32_network_runs_its_value_prefix_in_float32(rng, monkeypatch):
    """The LSTM state the unrolled loss starts each sum from has the network's dtype, so a float32
    network's value prefix runs in float32 (a float64 zero state would promote every step to float64)."""
    net = ez_net(rng, consistency=False).astype(np.float32)
    seen = []
    forward = net.value_prefix.forward

    def spy(state, lstm_state):
        seen.append((state.dtype, lstm_state[0].dtype, lstm_state[1].dtype))
        return forward(state, lstm_state)

    monkeypatch.setattr(net.value_prefix, "forward", spy)
    unrolled_loss(net, ez_batch(rng), value_coef=0.25, state_grad_scale=0.5)
    assert seen == [(np.float32, np.float32, np.float32)] * 3
