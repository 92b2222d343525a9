"""Issue 15's exploration switches, each off by default: the policy-entropy bonus in the unrolled loss
(float64 central differences of the whole loss with it on, its value by hand, MuZero unchanged at 0),
epsilon-random training play (uniform where it fires, no draws and no change when off, never in
evaluation), and Gumbel's c_scale / c_visit reaching the search."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_efficientzero_agent import ez_agent
from test_efficientzero_losses import assert_close_gradients, ez_batch, ez_net
from test_muzero_training_maths import zero_net_and_batch

from rlscratch import nn
from rlscratch.muzero.loss import UnrollBatch, unrolled_loss
from rlscratch.muzero.mcts import SearchConfig, completed_q_sigma
from rlscratch.muzero.model import MuZeroNet


@pytest.mark.parametrize("prefix,consistency", [(True, True), (False, False)])
def test_loss_with_entropy_bonus_gradient_check(rng, prefix, consistency):
    """The whole unrolled loss with the entropy bonus on (beta 0.3, large enough to matter in the
    gradient), against central differences in float64."""
    net = ez_net(rng, prefix=prefix, consistency=consistency)
    batch = ez_batch(rng)
    net.zero_grad()
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=2.0, entropy_coef=0.3)
    analytic = net.flat_grads.copy()
    assert net.saved_count() == 0

    def loss() -> float:
        return unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False,
                             detached_states=result.states, consistency_coef=2.0,
                             consistency_targets=result.consistency_targets, entropy_coef=0.3).loss

    assert loss() == pytest.approx(result.loss, rel=1e-12)
    numeric = nn.numerical_gradient(loss, net.flat_params, h=1e-5)
    assert_close_gradients(analytic, numeric)
    # and the bonus really moved the gradient: without it the same batch gives another one
    net.zero_grad()
    unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=2.0)
    assert np.abs(net.flat_grads - analytic).max() > 1e-3


def test_entropy_bonus_by_hand():
    """All parameters zero: every policy is uniform over A = 2, H = log 2. K = 2: step weights
    (1, 1/2, 1/2), policy masks (1,1,0),(1,0,1), importance weights (1, 1/2), N = 2:
    sum = [1 (1 + 1/2) + 1/2 (1 + 1/2)] / 2 = 1.125, so the loss moves by -beta 1.125 log 2.
    (At uniform p the bonus's gradient p (log p + H) is 0; the next test checks it elsewhere.)"""
    net, batch = zero_net_and_batch(value_mask=np.ones((2, 3)), reward_mask=np.ones((2, 3)))
    off = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False)
    for beta in (0.01, 0.02):
        on = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False, entropy_coef=beta)
        assert on.loss - off.loss == pytest.approx(-beta * 1.125 * math.log(2), rel=1e-12)
        assert on.policy_loss == off.policy_loss   # logged cross-entropy without the bonus
    assert off.policy_entropy == pytest.approx(math.log(2), rel=1e-12)


def test_entropy_gradient_on_logits_by_hand(monkeypatch):
    """dL/dz for one sample, one step (K = 1, all masks 0 but the policy's at k = 0, weight 1, N = 1),
    with the cross-entropy's part (p - pi) and the bonus's beta p (log p + H) at p = (1/4, 3/4)."""
    captured = {}
    real = nn.softmax_cross_entropy

    def spy(logits, target, weights=None, mask=None):
        loss, grad = real(logits, target, weights=weights, mask=mask)
        captured.setdefault("grad", grad)   # the first call: the policy at k = 0
        return loss, grad

    import rlscratch.muzero.loss as loss_module
    monkeypatch.setattr(loss_module.nn, "softmax_cross_entropy", spy)
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2,
                    reward_support=1).astype(np.float64)
    net.flat_params[:] = 0.0
    monkeypatch.setattr(net, "predict", lambda s: (np.array([[0.0, math.log(3)]]), np.zeros((1, 5))))
    monkeypatch.setattr(net, "predict_backward", lambda gp, gv: np.zeros((1, 4)))
    batch = UnrollBatch(
        obs=np.zeros((1, 3)), actions=np.array([[0]]), target_policy=np.array([[[1.0, 0.0], [0.5, 0.5]]]),
        policy_mask=np.array([[1.0, 0.0]]), target_value=np.zeros((1, 2)), value_mask=np.zeros((1, 2)),
        target_reward=np.zeros((1, 2)), reward_mask=np.zeros((1, 2)), weights=np.ones(1))
    beta = 0.5
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, entropy_coef=beta)
    p = np.array([0.25, 0.75])
    H = -(p * np.log(p)).sum()
    expected = (p - [1.0, 0.0]) + beta * p * (np.log(p) + H)
    # H = 0.5623..., p (log p + H) = (-0.2060, +0.2060): the bonus lowers the likely action's logit
    assert captured["grad"][0] == pytest.approx(expected, rel=1e-12)
    assert result.policy_entropy == pytest.approx(H, rel=1e-12)
    assert result.loss == pytest.approx(-math.log(0.25) - beta * H, rel=1e-12)


def test_entropy_coef_zero_is_muzero_unchanged(rng):
    net = ez_net(rng)
    batch = ez_batch(rng)
    net.zero_grad()
    default = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=2.0)
    grads = net.flat_grads.copy()
    net.zero_grad()
    zero = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=2.0, entropy_coef=0.0)
    assert zero.loss == default.loss
    assert np.array_equal(net.flat_grads, grads)


def test_epsilon_play_is_uniform_where_it_fires_and_off_by_default():
    """act_epsilon 1: every training action uniform over the 2 actions (4,000 draws: within 5 sigma
    of 1/2), evaluation still the search's; act_epsilon 0: the same actions and the same generator
    state as an agent without the switch (MuZero draw for draw)."""
    obs = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    always = ez_agent(act_epsilon=1.0)
    actions = np.concatenate([always.act(obs) for _ in range(2000)])
    assert abs(actions.mean() - 0.5) < 5 * math.sqrt(0.25 / len(actions))
    # no epsilon in evaluation: the same actions as with the switch off, from the same generator state
    state = always.eval_rng.bit_generator.state
    evaluated = always.act(obs, explore=False)
    always.eval_rng.bit_generator.state, always.config.act_epsilon = state, 0.0
    assert np.array_equal(always.act(obs, explore=False), evaluated)

    default, zero = ez_agent(), ez_agent(act_epsilon=0.0)
    for _ in range(5):
        assert np.array_equal(default.act(obs), zero.act(obs))
    assert default.rng.bit_generator.state == zero.rng.bit_generator.state


def test_epsilon_share_by_count():
    """act_epsilon 0.25 against the same agent with the switch off from the same generator state (the
    search draws first, so it plays the same search actions): a quarter of the actions is redrawn,
    half of those land on the other action -- 1/8 differ (2,560 actions: sd 0.0065)."""
    obs = np.random.default_rng(3).standard_normal((64, 3)).astype(np.float32)
    agent = ez_agent(num_envs=64, act_epsilon=0.25)
    differ = []
    for _ in range(40):
        state = agent.rng.bit_generator.state
        action = agent.act(obs)
        after = agent.rng.bit_generator.state
        agent.rng.bit_generator.state = state
        agent.config.act_epsilon = 0.0
        searched = agent.act(obs)
        agent.config.act_epsilon = 0.25
        agent.rng.bit_generator.state = after
        differ.append((action != searched).mean())
    assert np.mean(differ) == pytest.approx(1 / 8, abs=0.03)


def test_value_scale_and_maxvisit_reach_the_search():
    """sigma(q_hat) = (c_visit + max N) c_scale q_hat: with Qs (0, 1) visited once each, c_visit 10,
    c_scale 0.02 -> (10 + 1) 0.02 (0, 1) = (0, 0.22); the shipped defaults (50, 0.1) give (0, 5.1)."""
    agent = ez_agent(gumbel=True, value_scale=0.02, maxvisit_init=10.0)
    assert (agent.search_config.value_scale, agent.search_config.maxvisit_init) == (0.02, 10.0)
    q, visits = np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]])
    sigma = completed_q_sigma(q, visits, np.zeros(1), np.full((1, 2), 0.5), agent.search_config)
    assert sigma[0] == pytest.approx([0.0, 0.22], rel=1e-12)
    assert completed_q_sigma(q, visits, np.zeros(1), np.full((1, 2), 0.5), SearchConfig())[0] == pytest.approx(
        [0.0, 5.1], rel=1e-12)
