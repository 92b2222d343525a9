"""MuZero's support transform, networks and unrolled loss: round trips, the two-hot encoding by hand,
inference paths equal to the training path, and the loss's gradient check. (Its weights by hand:
test_muzero_training_maths.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from rlscratch import nn
from rlscratch.muzero.loss import UnrollBatch, unrolled_loss
from rlscratch.muzero.model import MinMaxScale, MuZeroNet
from rlscratch.muzero.support import (
    inverse_transform,
    inverse_transform_scalar,
    logits_to_scalar,
    scalar_to_support,
    support_to_scalar,
    transform,
)


# == support =========================================================================================
def test_transform_round_trip():
    x = np.concatenate([np.linspace(-500, 500, 1001), [0.0, 1e-6, -1e-6, 3.7, 1e4]])
    assert np.allclose(inverse_transform(transform(x)), x, rtol=1e-9, atol=1e-9)
    assert transform(np.array(0.0)) == 0.0
    # h(x) = sign(x)(sqrt(|x|+1)-1) + eps x at a hand-checked point: h(3) = 2 - 1 + 0.003
    assert transform(np.array(3.0)) == pytest.approx(1.003)


@pytest.mark.parametrize("support_size", [1, 5, 20])
def test_scalar_support_round_trip(support_size):
    limit = inverse_transform(np.array(float(support_size)))
    x = np.linspace(-limit, limit, 301)
    dist = scalar_to_support(x, support_size)
    assert dist.shape == (301, 2 * support_size + 1)
    assert np.allclose(dist.sum(axis=-1), 1.0) and (dist >= 0).all()
    assert (np.count_nonzero(dist, axis=-1) <= 2).all()   # two-hot
    assert np.allclose(support_to_scalar(dist, support_size), x, atol=1e-9)
    # and through logits, as the network's outputs are read
    assert np.allclose(logits_to_scalar(np.log(np.maximum(dist, 1e-300)), support_size), x, atol=1e-6)


def test_two_hot_by_hand():
    # h(3) = 1.003: mass 0.997 on category 1 and 0.003 on category 2 (indices 3 and 4 for S = 2)
    dist = scalar_to_support(np.array([3.0, 0.0, 1e9, -1e9]), 2)
    assert np.allclose(dist[0], [0, 0, 0, 0.997, 0.003])
    assert np.allclose(dist[1], [0, 0, 1, 0, 0])
    assert np.allclose(dist[2], [0, 0, 0, 0, 1]) and np.allclose(dist[3], [1, 0, 0, 0, 0])  # clipped


# == model and loss ==================================================================================
def test_min_max_scale_gradient_and_range(rng):
    scale = MinMaxScale()
    x = rng.standard_normal((5, 7))
    y = scale.infer(x)
    assert np.allclose(y.min(axis=1), 0.0) and np.allclose(y.max(axis=1), 1.0, atol=1e-4)
    errors = nn.check_module(scale, x, rng=rng)
    assert max(errors.values()) <= 1e-6


def tiny_net(rng, dtype=np.float64) -> MuZeroNet:
    net = MuZeroNet(3, 2, rng, state_dim=4, hidden=[5], value_support=2, reward_support=1).astype(dtype)
    net.flat_params[:] = rng.standard_normal(net.flat_params.size) * 0.5  # no zero-initialised heads
    return net


def random_batch(rng, n=4, K=3, A=2, obs_dim=3) -> UnrollBatch:
    return UnrollBatch(
        obs=rng.standard_normal((n, obs_dim)), actions=rng.integers(0, A, (n, K)),
        target_policy=rng.dirichlet(np.ones(A), (n, K + 1)), policy_mask=(rng.random((n, K + 1)) < 0.8) * 1.0,
        target_value=rng.uniform(-3, 3, (n, K + 1)), value_mask=(rng.random((n, K + 1)) < 0.9) * 1.0,
        target_reward=rng.uniform(-1, 1, (n, K + 1)), reward_mask=np.ones((n, K + 1)),
        weights=rng.uniform(0.5, 1.5, n))


def test_inference_matches_training_path(rng):
    net = tiny_net(rng)
    obs, actions = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    state, logits, value = net.initial_inference(obs)
    train_state = net.represent(obs)
    train_logits, value_logits = net.predict(train_state)
    assert np.allclose(state, train_state) and np.allclose(logits, train_logits)
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support))
    next_state, reward, logits, value = net.recurrent_inference(state, actions)
    train_next, reward_logits = net.dynamics(train_state, actions)
    train_logits, value_logits = net.predict(train_next)
    net.clear_saved()
    assert np.allclose(next_state, train_next) and np.allclose(logits, train_logits)
    assert np.allclose(reward, logits_to_scalar(reward_logits, net.reward_support))
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support))
    assert net.saved_count() == 0


def test_one_root_inference_matches_batched(rng):
    """recurrent_inference_one (1-D, reused buffers, Python-float scalars) gives what the batched
    call gives row by row, writes the next state into the slot it is handed, and leaves no buffer
    shared between the state it wrote and the logits it returned."""
    net = tiny_net(rng)
    for layer in (net.dynamics_net.layers[-1], net.prediction.layers[-1]):   # heads away from zero
        layer.params["W"][...] = rng.standard_normal(layer.params["W"].shape)
    state, _, _ = net.initial_inference(rng.standard_normal((4, 3)))
    actions = np.array([0, 1, 1, 0])
    next_state, reward, logits, value = net.recurrent_inference(state, actions)
    slots = np.zeros_like(state)
    for i in range(4):
        r, policy_logits, v = net.recurrent_inference_one(state[i], int(actions[i]), slots[i])
        assert isinstance(r, float) and isinstance(v, float)
        assert np.allclose(policy_logits, logits[i], rtol=1e-5, atol=1e-6)
        assert r == pytest.approx(reward[i], rel=1e-5, abs=1e-6) and v == pytest.approx(value[i], rel=1e-5, abs=1e-6)
    assert np.allclose(slots, next_state, rtol=1e-5, atol=1e-6)


def test_inverse_transform_scalar_matches_array():
    y = np.concatenate([np.linspace(-25, 25, 501), [0.0, -0.0, 1e-9, -3.3]])
    assert [inverse_transform_scalar(float(v)) for v in y] == pytest.approx(inverse_transform(y), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("state_grad_scale", [1.0, 0.5])
def test_unrolled_loss_gradient_check(rng, state_grad_scale):
    """The whole K-step loss (policy, value and reward cross-entropies over supports, 1/K scaling,
    masks, importance weights, min-max scaled states) against central differences. With the
    gradient scaling of the states (0.5), the finite differences are taken of the function whose
    true gradient is the scaled one: each dynamics input c s_k + (1 - c) s_k(theta_0)."""
    net = tiny_net(rng)
    batch = random_batch(rng)
    net.zero_grad()
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=state_grad_scale)
    analytic = net.flat_grads.copy()
    assert net.saved_count() == 0

    def loss() -> float:
        return unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=state_grad_scale, backward=False,
                             detached_states=result.states).loss

    assert loss() == pytest.approx(result.loss, rel=1e-12)
    errors = nn.check_gradients(loss, {"params": (net.flat_params, analytic)}, h=1e-5)
    assert errors["params"] <= 1e-6


def test_state_gradient_is_halved_per_step(rng):
    """Only the gradient changes with the scale: the loss is the same, and the representation's
    gradient differs, while a K = 1 unroll (no produced state feeds a dynamics call) is unaffected."""
    net = tiny_net(rng)
    batch = random_batch(rng, K=3)
    grads = {}
    for c in (1.0, 0.5):
        net.zero_grad()
        loss = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=c).loss
        grads[c] = (loss, net.flat_grads.copy())
    assert grads[1.0][0] == grads[0.5][0]
    assert not np.allclose(grads[1.0][1], grads[0.5][1])
    short = random_batch(rng, K=1)
    for c in (1.0, 0.5):
        net.zero_grad()
        unrolled_loss(net, short, value_coef=0.25, state_grad_scale=c)
        grads[c] = net.flat_grads.copy()
    assert np.array_equal(grads[1.0], grads[0.5])
