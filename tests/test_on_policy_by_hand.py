"""The on-policy maths by hand (rlscratch/rollout.py, rlscratch/policy.py, rlscratch/on_policy.py and the
losses of agents/a2c.py and agents/ppo.py): every number below is worked out in the comments, so a flipped
sign, a dropped coefficient or a wrong clip boundary fails a test (benchmarks/mutation.sh checks that)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from rlscratch.agents.a2c import A2C
from rlscratch.agents.ppo import PPO, clipped_surrogate, clipped_value_loss

from rlscratch.agent import EnvSpec, Step
from rlscratch.config import ModelConfig
from rlscratch.rollout import RolloutBuffer


# -- PPO's clipped surrogate, on both sides of the clip ---------------------------------------------------
def test_clipped_surrogate_by_hand():
    """Two actions, z = 0 so pi = [1/2, 1/2], action 0 everywhere, eps = 0.2. old log pi = log(1/2) - log rho
    sets each row's ratio rho:
        rho  A    unclipped  clipped  min    gradient?
        1.5  +1   1.5        1.2      1.2    no  (pushed past 1 + eps in the direction A favours)
        0.5  +1   0.5        0.8      0.5    yes
        0.5  -1   -0.5       -0.8     -0.8   no  (past 1 - eps with A < 0)
        1.5  -1   -1.5       -1.2     -1.5   yes
        1.0  +2   2          2        2      yes (a tie counts as unclipped)
        1.1  +1   1.1        1.1      1.1    yes (inside the clip range)
    L = -(1.2 + 0.5 - 0.8 - 1.5 + 2 + 1.1) / 6 = -2.5 / 6.
    dL/dz_t = -A rho (onehot(0) - pi) / B = -A rho [1/2, -1/2] / 6."""
    rho = np.array([1.5, 0.5, 0.5, 1.5, 1.0, 1.1])
    adv = np.array([1.0, 1.0, -1.0, -1.0, 2.0, 1.0])
    logits = np.zeros((6, 2))
    actions = np.zeros(6, dtype=np.int64)
    old = np.log(0.5) - np.log(rho)
    loss, dlogits, stats = clipped_surrogate(logits, actions, old, adv, 0.2)
    assert loss == pytest.approx(-2.5 / 6, rel=1e-12)
    live = np.array([0, 1, 0, 1, 1, 1])
    expected = (-live * adv * rho / 6)[:, None] * np.array([0.5, -0.5])
    np.testing.assert_allclose(dlogits, expected, rtol=1e-12, atol=1e-15)
    # approx KL = mean(rho - 1 - log rho); clipped: |rho - 1| > 0.2 in the first four rows
    assert stats["approx_kl"] == pytest.approx(np.mean(rho - 1 - np.log(rho)), rel=1e-12)
    assert stats["clip_fraction"] == pytest.approx(4 / 6)


def test_clipped_surrogate_gradient_with_three_actions():
    """pi = softmax([0, ln 2, ln 5]) = [1/8, 2/8, 5/8], action 1, rho = 1, A = 3, B = 1:
    dL/dz = -3 (onehot(1) - pi) = -3 [-1/8, 6/8, -5/8]; L = -3."""
    logits = np.log(np.array([[1.0, 2.0, 5.0]]))
    loss, dlogits, stats = clipped_surrogate(logits, np.array([1]), np.log([0.25]), np.array([3.0]), 0.1)
    assert loss == pytest.approx(-3.0)
    np.testing.assert_allclose(dlogits, [[3 / 8, -18 / 8, 15 / 8]], rtol=1e-12)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-15) and stats["clip_fraction"] == 0.0


def test_clipped_value_loss_by_hand():
    """eps = 0.5, V_old = 0, B = 3:
        V    R    Vc    err  err_c  larger         loss term  dL/dV
        2    0    0.5   2    0.5    unclipped      4          2 * 2 / 3
        2    3    0.5   -1   -2.5   clipped (out)  6.25       0
        0.2  1    0.2   -0.8 -0.8   tie (inside)   0.64       2 * -0.8 / 3"""
    values, old, returns = np.array([2.0, 2.0, 0.2]), np.zeros(3), np.array([0.0, 3.0, 1.0])
    loss, dvalues = clipped_value_loss(values, old, returns, 0.5)
    assert loss == pytest.approx((4 + 6.25 + 0.64) / 3, rel=1e-12)
    np.testing.assert_allclose(dvalues, [4 / 3, 0.0, -1.6 / 3], rtol=1e-12, atol=1e-15)
    # V below V_old - eps: V = -2, V_old = 0, R = -3: err = 1, err_c = -0.5 - (-3) = 2.5 -> clipped, 0 gradient
    loss, dvalues = clipped_value_loss(np.array([-2.0]), np.zeros(1), np.array([-3.0]), 0.5)
    assert loss == pytest.approx(6.25) and dvalues[0] == 0.0
    assert dvalues.dtype == np.float64


# -- the rollout buffer ----------------------------------------------------------------------------------
def test_rollout_buffer_bootstraps_only_truncations_and_refuses_a_full_add():
    """gamma = 0.5. Env 0 truncated (V(final) = 4: r = 1 + 0.5 * 4 = 3), env 1 terminated with a value
    given (ignored: r = 1), env 2 running with a value given (ignored: r = 1)."""
    buf = RolloutBuffer(2, 3, (2,), 0.5, dtype=np.float64)
    assert not buf.full
    buf.add(np.ones((3, 2)), np.array([0, 1, 2]), np.ones(3), np.array([False, True, False]),
            np.array([True, False, False]), np.array([4.0, 7.0, 9.0]))
    np.testing.assert_array_equal(buf.rewards[0], [3.0, 1.0, 1.0])
    np.testing.assert_array_equal(buf.dones[0], [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(buf.actions[0], [0, 1, 2])
    np.testing.assert_array_equal(buf.obs[0], np.ones((3, 2)))
    assert buf.pos == 1 and not buf.full
    buf.add(np.zeros((3, 2)), np.zeros(3, dtype=np.int64), np.full(3, 2.0), np.zeros(3, bool), np.zeros(3, bool))
    np.testing.assert_array_equal(buf.rewards[1], [2.0, 2.0, 2.0])
    assert buf.full and buf.pos == 2
    with pytest.raises(RuntimeError, match="full"):
        buf.add(np.zeros((3, 2)), np.zeros(3, dtype=np.int64), np.ones(3), np.zeros(3, bool), np.zeros(3, bool))
    assert buf.flat(buf.obs).shape == (6, 2) and buf.flat(buf.rewards).shape == (6,)
    np.testing.assert_array_equal(buf.flat(buf.rewards), [3, 1, 1, 2, 2, 2])
    buf.reset()
    assert buf.pos == 0


def test_rollout_buffer_returns_through_gae():
    """One env, gamma = 0.5, lam = 0.5, rewards [1, 2], values [1, 1], V(s_T) = 2, no ends:
    TD_1 = 2 + 0.5 * 2 - 1 = 2,  A_1 = 2;  TD_0 = 1 + 0.5 * 1 - 1 = 0.5,  A_0 = 0.5 + 0.25 * 2 = 1.
    Returns A + V = [2, 3]. Stored in float32, the dtype the buffer chose."""
    buf = RolloutBuffer(2, 1, (), 0.5)
    for r in (1.0, 2.0):
        buf.add(np.zeros(1), np.zeros(1, dtype=np.int64), np.array([r]), np.zeros(1, bool), np.zeros(1, bool))
    buf.values[...] = 1.0
    buf.compute_advantages(np.array([2.0]), 0.5)
    np.testing.assert_allclose(buf.advantages[:, 0], [1.0, 2.0], rtol=1e-7)
    np.testing.assert_allclose(buf.returns[:, 0], [2.0, 3.0], rtol=1e-7)
    assert buf.advantages.dtype == np.float32 and buf.returns.dtype == np.float32


def test_rollout_buffer_state_round_trip_and_bad_state():
    buf = RolloutBuffer(3, 2, (1,), 0.9)
    buf.add(np.full((2, 1), 5.0), np.array([1, 0]), np.array([1.0, 2.0]), np.array([True, False]), np.zeros(2, bool))
    state = buf.state_dict()
    assert int(state["pos"]) == 1 and state["rewards"].shape == (1, 2)
    other = RolloutBuffer(3, 2, (1,), 0.9)
    other.load_state_dict(state)
    assert other.pos == 1
    np.testing.assert_array_equal(other.rewards[0], [1.0, 2.0])
    np.testing.assert_array_equal(other.dones[0], [1.0, 0.0])
    np.testing.assert_array_equal(other.actions[0], [1, 0])
    np.testing.assert_array_equal(other.obs[0], [[5.0], [5.0]])
    bad = dict(state, rewards=np.zeros((2, 2), np.float32))  # two rows for pos = 1
    with pytest.raises(ValueError, match="rollout buffer 'rewards'"):
        other.load_state_dict(bad)
    too_long = {name: np.zeros((4,) + getattr(buf, name).shape[1:]) for name in buf._saved}
    with pytest.raises(ValueError, match="at most 3 steps"):
        other.load_state_dict(dict(too_long, pos=np.array(4)))


# -- the agents' updates, one at a time ----------------------------------------------------------------
SPEC = EnvSpec(gym.spaces.Box(-1.0, 1.0, (2,), np.float32), gym.spaces.Discrete(3), num_envs=2)


def make_agent(cls, **config):
    config.setdefault("optim", {"name": "sgd", "lr": 0.1, "max_grad_norm": 0.0})
    return cls(cls.Config(**config), SPEC, ModelConfig(hidden=[4], activation="tanh"), np.random.default_rng(3))


def capture_backward(agent) -> list:
    """Record the (dL/dlogits, dL/dV) every backward pass of ``agent.net`` receives."""
    seen, backward = [], agent.net.backward

    def record(grads):
        seen.append((grads[0].copy(), grads[1].copy()))
        backward(grads)
    agent.net.backward = record
    return seen


OBS = np.array([[0.5, -0.5], [0.2, 0.9]], np.float32)
NEXT = np.array([[-0.3, 0.1], [0.7, 0.4]], np.float32)


def one_step(agent, reward=(1.0, -2.0), actions=(2, 0)):
    return agent.observe(Step(OBS, np.array(actions), np.array(reward), NEXT, terminated=np.zeros(2, bool),
                              truncated=np.zeros(2, bool), info={}))


@pytest.mark.parametrize("shared", [False, True])
def test_a2c_combined_gradient_by_hand(shared):
    """n_steps = 1, lam = 1, gamma = 0.5: A_t = r_t * scale + 0.5 V(s') - V(s), R_t = A_t + V(s). With B = 2:
        dL/dz_t = A_t (pi_t - onehot(a_t)) / 2  +  ent_coef * pi_t (log pi_t + H_t) / 2
        dL/dV_t = vf_coef * 2 (V_t - R_t) / 2 = -vf_coef * A_t
    and SGD moves the parameters by -lr times the gradient."""
    agent = make_agent(A2C, n_steps=1, gamma=0.5, gae_lambda=1.0, ent_coef=0.3, vf_coef=0.7, reward_scale=0.5,
                       shared_network=shared)
    logits, values = (x.astype(np.float64) for x in agent.net.infer(OBS))
    next_v = agent.net.value(NEXT).astype(np.float64)
    seen = capture_backward(agent)
    before = agent.net.flat_params.copy()
    metrics = one_step(agent)
    A = np.array([0.5, -1.0]) + 0.5 * next_v - values
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    pi = np.exp(logp)
    H = -(pi * logp).sum(axis=1)
    onehot = np.eye(3)[[2, 0]]
    dlogits, dvalues = seen[0]
    np.testing.assert_allclose(dlogits, A[:, None] * (pi - onehot) / 2 + 0.3 * pi * (logp + H[:, None]) / 2,
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dvalues, -0.7 * A, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(agent.net.flat_params, before - 0.1 * agent.net.flat_grads, rtol=1e-5, atol=1e-7)
    assert metrics["loss/value"] == pytest.approx(np.mean(A ** 2), rel=1e-4)
    assert metrics["loss/entropy"] == pytest.approx(H.mean(), rel=1e-5)
    logp_a = logp[[0, 1], [2, 0]]
    assert metrics["loss/policy"] == pytest.approx(-np.mean(A * logp_a), rel=1e-4)
    assert metrics["train/lr"] == pytest.approx(0.1)
    assert agent.updates == 1 and agent.env_steps == 2 and agent.buffer.pos == 0
    np.testing.assert_allclose(agent.buffer.rewards[0], [0.5, -1.0])  # reward_scale 0.5 was applied


def test_a2c_normalizes_advantages():
    """normalize_advantage: the policy gradient uses (A - mean A) / (std A + 1e-8): with two samples that is
    [+1, -1] in the order of A, whatever A's scale, so dL/dz_t = +-(pi_t - onehot(a_t)) / 2."""
    agent = make_agent(A2C, n_steps=1, gamma=0.5, normalize_advantage=True, vf_coef=0.0)
    logits, values = (x.astype(np.float64) for x in agent.net.infer(OBS))
    A = np.array([1.0, -2.0]) + 0.5 * agent.net.value(NEXT) - values
    seen = capture_backward(agent)
    one_step(agent)
    pi = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    sign = np.sign(A - A.mean())
    np.testing.assert_allclose(seen[0][0], sign[:, None] * (pi - np.eye(3)[[2, 0]]) / 2, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(seen[0][1], 0.0)


@pytest.mark.parametrize("cls", [A2C, PPO])
@pytest.mark.parametrize("shared", [False, True])
def test_gradient_norm_is_clipped_per_network(cls, shared):
    """max_grad_norm 1e-3, far below the raw norms: each network's gradient is scaled to exactly 1e-3 (the
    shared trunk's as one), the metrics report the norms before clipping, and SGD steps by lr times that."""
    extra = {"n_epochs": 1, "batch_size": 2, "normalize_advantage": False} if cls is PPO else {}
    agent = make_agent(cls, n_steps=1, gamma=0.5, shared_network=shared, reward_scale=10.0,
                       optim={"name": "sgd", "lr": 0.1, "max_grad_norm": 1e-3}, **extra)
    before = agent.net.flat_params.copy()
    metrics = one_step(agent)
    grads = agent.net.flat_grads
    nets = [agent.net.net] if shared else [agent.net.policy, agent.net.value_net]
    for net in nets:
        assert np.linalg.norm(net.flat_grads) == pytest.approx(1e-3, rel=1e-4)
    assert metrics["train/grad_norm_policy"] > 1e-2 and metrics["train/grad_norm_value"] > 1e-2
    if shared:
        assert metrics["train/grad_norm_policy"] == metrics["train/grad_norm_value"]
    np.testing.assert_allclose(agent.net.flat_params, before - 0.1 * grads, rtol=1e-5, atol=1e-9)


def test_ppo_first_minibatch_gradient_by_hand():
    """On the first minibatch the policy has not moved: rho = 1, so the surrogate's gradient is
    A_t (pi_t - onehot(a_t)) / B; with ent_coef and vf_coef as in A2C. One epoch, one minibatch of B = 2,
    lam = 0.5 with n_steps = 1 (a single step: A = TD whatever lam), no advantage normalisation."""
    agent = make_agent(PPO, n_steps=1, gamma=0.5, gae_lambda=0.5, n_epochs=1, batch_size=2, ent_coef=0.2,
                       vf_coef=0.4, normalize_advantage=False)
    logits, values = (x.astype(np.float64) for x in agent.net.infer(OBS))
    A = np.array([1.0, -2.0]) + 0.5 * agent.net.value(NEXT) - values
    seen = capture_backward(agent)
    metrics = one_step(agent)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    pi = np.exp(logp)
    H = -(pi * logp).sum(axis=1)
    expected_dz = A[:, None] * (pi - np.eye(3)[[2, 0]]) / 2 + 0.2 * pi * (logp + H[:, None]) / 2
    expected_dv = -0.4 * A
    dz, dv = seen[0]
    # the minibatch is a shuffle of the two rows: match it by the value gradient's sign pattern
    perm = [0, 1] if np.allclose(dv, expected_dv, rtol=1e-4, atol=1e-7) else [1, 0]
    np.testing.assert_allclose(dv, expected_dv[perm], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dz, expected_dz[perm], rtol=1e-4, atol=1e-7)
    assert metrics["train/gradient_steps"] == 1 and agent.updates == 1
    assert metrics["train/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["train/clip_fraction"] == 0.0
    assert metrics["loss/value"] == pytest.approx(np.mean(A ** 2), rel=1e-4)
    assert metrics["loss/entropy"] == pytest.approx(H.mean(), rel=1e-5)
    assert metrics["train/clip_range"] == pytest.approx(0.2)
    np.testing.assert_allclose(agent.buffer.log_probs[0], logp[[0, 1], [2, 0]], rtol=1e-5)
    np.testing.assert_allclose(agent.buffer.values[0], values, rtol=1e-5)


@pytest.mark.parametrize("n_steps, batch_size, n_epochs, expected", [(3, 4, 2, 4), (3, 6, 3, 3), (4, 3, 2, 6)])
def test_ppo_minibatch_and_epoch_counts(n_steps, batch_size, n_epochs, expected):
    """B = 2 n_steps transitions, ceil(B / batch_size) minibatches per epoch, n_epochs epochs: 6 transitions in
    4s -> 2 x 2 = 4 steps; in 6s -> 1 x 3 = 3; 8 in 3s -> 3 x 2 = 6. Every transition is used once per epoch."""
    agent = make_agent(PPO, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs)
    seen = capture_backward(agent)
    for _ in range(n_steps - 1):
        assert one_step(agent) == {}
    metrics = one_step(agent)
    assert metrics["train/gradient_steps"] == expected == len(seen) == agent.updates
    sizes = [len(dz) for dz, _ in seen]
    per_epoch = len(sizes) // n_epochs
    assert all(sum(sizes[e * per_epoch:(e + 1) * per_epoch]) == 2 * n_steps for e in range(n_epochs))
    assert max(sizes) == min(batch_size, 2 * n_steps)


def test_ppo_normalizes_advantages_per_minibatch(monkeypatch):
    """normalize_advantage: each minibatch's advantages reach the surrogate with mean 0 and std 1 (minus 1e-8)."""
    import rlscratch.agents.ppo as ppo
    seen, surrogate = [], ppo.clipped_surrogate

    def record(logits, actions, old, adv, clip, head=None):
        seen.append(adv.copy())
        return surrogate(logits, actions, old, adv, clip, head)
    monkeypatch.setattr(ppo, "clipped_surrogate", record)
    agent = make_agent(PPO, n_steps=3, batch_size=3, n_epochs=1, normalize_advantage=True)
    for _ in range(3):
        one_step(agent, reward=(1.0, 5.0))
    assert len(seen) == 2
    for adv in seen:
        assert adv.mean() == pytest.approx(0.0, abs=1e-6) and adv.std() == pytest.approx(1.0, rel=1e-6)


def test_ppo_target_kl_stops_the_epochs():
    """The first minibatch has rho = 1 (KL 0); after a large SGD step the second's KL exceeds 1e-9: stop there,
    one gradient step in all, and the metrics average over that one step."""
    agent = make_agent(PPO, n_steps=4, batch_size=2, n_epochs=3, target_kl=1e-9, reward_scale=10.0,
                       optim={"name": "sgd", "lr": 1.0, "max_grad_norm": 0.0})
    for _ in range(3):
        one_step(agent)
    metrics = one_step(agent)
    assert metrics["train/gradient_steps"] == 1 and agent.updates == 1
    assert metrics["train/approx_kl"] == pytest.approx(0.0, abs=1e-7)


def test_ppo_value_clipping_zeroes_the_gradient_outside_the_range():
    """clip_range_vf: on the first minibatch V = V_old, so Vc = V and the clipped loss is the plain one:
    dL/dV = vf_coef * 2 (V - R) / B = -vf_coef * A, exactly as without clipping."""
    agent = make_agent(PPO, n_steps=1, gamma=0.5, n_epochs=1, batch_size=2, clip_range_vf=0.1, vf_coef=1.0)
    values = agent.net.infer(OBS)[1].astype(np.float64)
    A = np.array([1.0, -2.0]) + 0.5 * agent.net.value(NEXT) - values
    seen = capture_backward(agent)
    one_step(agent)
    assert sorted(seen[0][1]) == pytest.approx(sorted(-A), rel=1e-4)


# -- acting ---------------------------------------------------------------------------------------------
def test_agent_samples_its_policy_and_acts_greedily_without_exploring():
    """Sampling frequencies follow softmax(logits) of the policy network; explore=False takes the argmax."""
    agent = make_agent(A2C)
    obs = np.tile(OBS[:1], (20000, 1))
    logits = agent.net.logits(obs[:1]).astype(np.float64)[0]
    pi = np.exp(logits) / np.exp(logits).sum()
    counts = np.bincount(agent.act(obs), minlength=3) / 20000
    np.testing.assert_allclose(counts, pi, atol=0.015)
    assert (agent.act(obs[:3], explore=False) == logits.argmax()).all()


def test_sample_categorical_on_unnormalised_logits():
    """z = [ln 1, ln 3, ln 6] + 7: pi = [0.1, 0.3, 0.6] (softmax ignores the shift)."""
    from rlscratch.policy import sample_categorical
    logits = np.tile(np.log([1.0, 3.0, 6.0]) + 7.0, (20000, 1))
    counts = np.bincount(sample_categorical(logits, np.random.default_rng(1)), minlength=3) / 20000
    np.testing.assert_allclose(counts, [0.1, 0.3, 0.6], atol=0.015)
    assert math.isclose(counts.sum(), 1.0)


# -- the actor-critic's initialisation and gradient norms ------------------------------------------------
def singular_values(layer) -> np.ndarray:
    return np.sort(np.linalg.svd(layer.params["W"].astype(np.float64), compute_uv=False))


@pytest.mark.parametrize("orthogonal_init", [True, False])
def test_actor_critic_initialisation(orthogonal_init):
    """Orthogonal weights have all singular values equal to their gain: sqrt(2) in the hidden layers (with zero
    biases), 0.01 for the policy head, 1 for the value head. Shared: one (4 x 4) head whose three logit rows are
    scaled to 0.01 and whose value row keeps norm 1. The first layer needs no input gradient."""
    from rlscratch.on_policy import ActorCritic
    model = ModelConfig(hidden=[4], activation="tanh")
    net = ActorCritic(2, 3, model, np.random.default_rng(0), orthogonal_init=orthogonal_init)
    hidden, policy_head = net.policy.layers[0], net.policy.layers[-1]
    np.testing.assert_allclose(singular_values(policy_head), [0.01] * 3, rtol=1e-5)
    np.testing.assert_allclose(singular_values(net.value_net.layers[-1]), [1.0], rtol=1e-5)
    if orthogonal_init:
        np.testing.assert_allclose(singular_values(hidden), [math.sqrt(2)] * 2, rtol=1e-5)
        np.testing.assert_allclose(singular_values(net.value_net.layers[0]), [math.sqrt(2)] * 2, rtol=1e-5)
        assert not hidden.params["b"].any()
    else:
        assert not np.allclose(singular_values(hidden), [math.sqrt(2)] * 2, rtol=1e-2)
    assert hidden.input_grad is False and net.value_net.layers[0].input_grad is False
    assert policy_head.input_grad is not False

    shared = ActorCritic(2, 3, model, np.random.default_rng(0), shared=True, orthogonal_init=orthogonal_init)
    head = shared.net.layers[-1].params["W"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(head, axis=1), [0.01, 0.01, 0.01, 1.0], rtol=1e-5)
    np.testing.assert_allclose(head @ head.T, np.diag([1e-4, 1e-4, 1e-4, 1.0]), atol=1e-7)
    assert shared.net.layers[0].input_grad is False
    if orthogonal_init:
        np.testing.assert_allclose(singular_values(shared.net.layers[0]), [math.sqrt(2)] * 2, rtol=1e-5)


def test_agent_builds_the_network_its_config_names():
    """shared_network and orthogonal_init reach the ActorCritic; counters start at 0."""
    agent = make_agent(A2C, shared_network=True, orthogonal_init=False)
    assert agent.net.shared and hasattr(agent.net, "net") and agent.env_steps == 0 and agent.updates == 0
    hidden = agent.net.net.layers[0]
    assert not np.allclose(singular_values(hidden), [math.sqrt(2)] * 2, rtol=1e-2)
    assert set(agent.components()) == {"rng", "net", "optimizer", "buffer"}
    assert agent.components()["buffer"] is agent.buffer and agent.components()["net"] is agent.net
    assert agent.components()["optimizer"] is agent.optimizer and agent.components()["rng"] is agent.rng


def test_unclipped_gradient_norms_are_measured():
    """max_grad_norm 0: no clipping, and the norms reported are each network's true gradient norm."""
    agent = make_agent(A2C, n_steps=1, gamma=0.5)
    before = agent.net.flat_params.copy()
    metrics = one_step(agent)
    assert metrics["train/grad_norm_policy"] == pytest.approx(np.linalg.norm(agent.net.policy.flat_grads), rel=1e-5)
    assert metrics["train/grad_norm_value"] == pytest.approx(np.linalg.norm(agent.net.value_net.flat_grads), rel=1e-5)
    assert metrics["train/grad_norm_policy"] > 0 and metrics["train/grad_norm_value"] > 0
    np.testing.assert_allclose(agent.net.flat_params - before, -0.1 * agent.net.flat_grads, rtol=1e-3, atol=1e-7)
    assert np.abs(agent.net.flat_params - before).max() > 1e-4


# -- schedules read the clock they name; explained variance -------------------------------------------
def expected_a2c_gradients(agent, ent_coef: float, vf_coef: float, reward=(1.0, -2.0), actions=(2, 0)):
    """dL/dz and dL/dV of one n_steps = 1 update from the current parameters (gamma = 0.5, lam = 1)."""
    logits, values = (x.astype(np.float64) for x in agent.net.infer(OBS))
    A = np.array(reward) + 0.5 * agent.net.value(NEXT) - values
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    pi = np.exp(logp)
    H = -(pi * logp).sum(axis=1)
    dz = A[:, None] * (pi - np.eye(3)[list(actions)]) / 2 + ent_coef * pi * (logp + H[:, None]) / 2
    return dz, -vf_coef * A


def test_entropy_schedules_follow_their_clock():
    """ent_coef linear 1 -> 0 over 4 env steps: at the first update (2 env steps) it is 0.5. On the updates
    clock, 0 -> 1 over 1 update: 0 at the first update, 1 at the second."""
    from rlscratch.optim_config import ScheduleConfig
    agent = make_agent(A2C, n_steps=1, gamma=0.5, vf_coef=0.0,
                       ent_coef=ScheduleConfig(start=1.0, end=0.0, steps=4, clock="env_steps"))
    expected, _ = expected_a2c_gradients(agent, 0.5, 0.0)
    seen = capture_backward(agent)
    one_step(agent)
    np.testing.assert_allclose(seen[0][0], expected, rtol=1e-4, atol=1e-7)

    for cls, extra in ((A2C, {}), (PPO, {"n_epochs": 1, "batch_size": 2, "normalize_advantage": False})):
        agent = make_agent(cls, n_steps=1, gamma=0.5, vf_coef=0.0, **extra,
                           ent_coef=ScheduleConfig(start=0.0, end=1.0, steps=1, clock="updates"))
        seen = capture_backward(agent)
        first, _ = expected_a2c_gradients(agent, 0.0, 0.0)
        one_step(agent)
        second, _ = expected_a2c_gradients(agent, 1.0, 0.0)
        one_step(agent)
        # (PPO's minibatch is a shuffle of the two rows: compare them as sets, column by column)
        np.testing.assert_allclose(np.sort(seen[0][0], axis=0), np.sort(first, axis=0), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.sort(seen[1][0], axis=0), np.sort(second, axis=0), rtol=1e-4, atol=1e-7)


def test_ppo_clip_range_schedule_and_explained_variance():
    """clip_range linear 0.4 -> 0.2 over 4 env steps: 0.3 at the first update (2 env steps). Explained variance
    1 - Var(R - V) / Var(R) with R - V = A (the old values): by hand from the rollout."""
    from rlscratch.optim_config import ScheduleConfig
    for cls, extra in ((PPO, {"clip_range": ScheduleConfig(start=0.4, end=0.2, steps=4, clock="env_steps"),
                              "n_epochs": 1, "batch_size": 2}), (A2C, {})):
        agent = make_agent(cls, n_steps=1, gamma=0.5, **extra)
        values = agent.net.infer(OBS)[1].astype(np.float64)
        A = np.array([1.0, -2.0]) + 0.5 * agent.net.value(NEXT) - values
        metrics = one_step(agent)
        R = A + values
        assert metrics["train/explained_variance"] == pytest.approx(1 - A.var() / R.var(), rel=1e-4)
        if cls is PPO:
            assert metrics["train/clip_range"] == pytest.approx(0.3)
            assert metrics["train/lr"] == pytest.approx(0.1)
    # all returns equal: no explained variance reported (it would divide by zero)
    agent = make_agent(A2C, n_steps=1, gamma=0.0)
    metrics = agent.observe(Step(OBS, np.array([0, 0]), np.zeros(2), NEXT, terminated=np.ones(2, bool),
                                 truncated=np.zeros(2, bool), info={}))
    assert "train/explained_variance" not in metrics and "loss/value" in metrics


# -- the remaining edges: dtypes, messages, averaging, early stop, one-transition minibatches --------------
def test_rollout_buffer_dtypes_and_exact_errors():
    buf = RolloutBuffer(1, 2, (3,), 0.9)
    for name in ("obs", "rewards", "dones", "values", "log_probs", "advantages", "returns"):
        assert getattr(buf, name).dtype == np.float32, name
    assert buf.actions.dtype == np.int64 and buf.obs.shape == (1, 2, 3)
    buf.add(np.zeros((2, 3)), np.zeros(2, np.int64), np.ones(2), np.zeros(2, bool), np.zeros(2, bool))
    assert buf.state_dict()["pos"].dtype == np.int64
    message = "the rollout buffer is full: compute advantages, learn, then reset() it"
    with pytest.raises(RuntimeError) as error:
        buf.add(np.zeros((2, 3)), np.zeros(2, np.int64), np.ones(2), np.zeros(2, bool), np.zeros(2, bool))
    assert str(error.value) == message
    state = buf.state_dict()  # pos = 1 = n_steps: a full rollout loads
    other = RolloutBuffer(1, 2, (3,), 0.9)
    other.load_state_dict(state)
    assert other.pos == 1
    # only the trailing shape wrong (length and pos fine):
    with pytest.raises(ValueError) as error:
        other.load_state_dict(dict(state, obs=np.zeros((1, 2, 4), np.float32)))
    assert str(error.value) == "rollout buffer 'obs' has shape (1, 2, 4), expected (1, 2, 3) with at most 1 steps"
    # only the length wrong:
    with pytest.raises(ValueError, match=r"'obs' has shape \(0, 2, 3\), expected \(1, 2, 3\)"):
        other.load_state_dict(dict(state, obs=np.zeros((0, 2, 3), np.float32)))


def test_clipped_value_loss_keeps_float32():
    loss, dvalues = clipped_value_loss(np.array([2.0], np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32),
                                       0.5)
    assert dvalues.dtype == np.float32 and dvalues[0] == pytest.approx(4.0) and loss == pytest.approx(4.0)


def test_ppo_metrics_average_over_the_gradient_steps():
    """lr 1e-12: the parameters do not move, so each of the 2 epochs x 1 minibatch sees the same losses and the
    averages equal the one-step values (a sum, or a last value halved, would not)."""
    agent = make_agent(PPO, n_steps=1, gamma=0.5, n_epochs=2, batch_size=2, normalize_advantage=False,
                       optim={"name": "sgd", "lr": 1e-12, "max_grad_norm": 0.0})
    values = agent.net.infer(OBS)[1].astype(np.float64)
    A = np.array([1.0, -2.0]) + 0.5 * agent.net.value(NEXT) - values
    metrics = one_step(agent)
    assert metrics["train/gradient_steps"] == 2 and agent.updates == 2
    assert metrics["loss/value"] == pytest.approx(np.mean(A ** 2), rel=1e-4)
    for key in ("loss/policy", "loss/entropy", "train/grad_norm_policy", "train/grad_norm_value"):
        assert abs(metrics[key]) > 1e-6, key
    assert metrics["train/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["train/clip_fraction"] == 0.0


def test_ppo_early_stop_ends_every_epoch():
    """A KL stop in the first epoch ends the update: 3 epochs draw one shuffle, as 1 epoch does (the rng,
    shared with acting, is left in the same state)."""
    rngs = []
    for n_epochs in (1, 3):
        agent = make_agent(PPO, n_steps=4, batch_size=2, n_epochs=n_epochs, target_kl=1e-9, reward_scale=10.0,
                           optim={"name": "sgd", "lr": 1.0, "max_grad_norm": 0.0})
        for _ in range(4):
            metrics = one_step(agent)
        assert metrics["train/gradient_steps"] == 1
        rngs.append(agent.rng.random())
    assert rngs[0] == rngs[1]


@pytest.mark.parametrize("batch_size, normalized", [(1, False), (2, True)])
def test_ppo_normalizes_only_minibatches_of_two_or_more(monkeypatch, batch_size, normalized):
    """A one-transition minibatch keeps its advantage (normalising it would give 0); two are normalised to +-1."""
    import rlscratch.agents.ppo as ppo
    seen, surrogate = [], ppo.clipped_surrogate

    def record(logits, actions, old, adv, clip, head=None):
        seen.append(adv.copy())
        return surrogate(logits, actions, old, adv, clip, head)
    monkeypatch.setattr(ppo, "clipped_surrogate", record)
    agent = make_agent(PPO, n_steps=1, gamma=0.5, batch_size=batch_size, n_epochs=1, normalize_advantage=True)
    values = agent.net.infer(OBS)[1].astype(np.float64)
    A = np.array([1.0, -2.0]) + 0.5 * agent.net.value(NEXT) - values
    one_step(agent)
    got = np.sort(np.concatenate(seen))
    np.testing.assert_allclose(got, [-1.0, 1.0] if normalized else np.sort(A), rtol=1e-4)


def test_ppo_schedules_on_both_clocks():
    """ent_coef on the env-steps clock (1 -> 0 over 4: 0.5 at 2 env steps), clip_range on the updates clock
    (0.4 -> 0.2 over 2 updates: 0.4 at the first update, 0.3 at the second)."""
    from rlscratch.optim_config import ScheduleConfig
    agent = make_agent(PPO, n_steps=1, gamma=0.5, vf_coef=0.0, n_epochs=1, batch_size=2, normalize_advantage=False,
                       ent_coef=ScheduleConfig(start=1.0, end=0.0, steps=4, clock="env_steps"),
                       clip_range=ScheduleConfig(start=0.4, end=0.2, steps=2, clock="updates"))
    expected, _ = expected_a2c_gradients(agent, 0.5, 0.0)
    seen = capture_backward(agent)
    metrics = one_step(agent)
    np.testing.assert_allclose(np.sort(seen[0][0], axis=0), np.sort(expected, axis=0), rtol=1e-4, atol=1e-7)
    assert metrics["train/clip_range"] == pytest.approx(0.4)
    assert one_step(agent)["train/clip_range"] == pytest.approx(0.3)


def test_clipped_value_loss_tie_between_different_errors():
    """V = 2, V_old = 0, eps = 0.5: Vc = 0.5; R = 1.25 lies midway, so err = 0.75 and err_c = -0.75 tie. The tie
    goes to the unclipped error, whose gradient is 2 * 0.75 / 1 (the clipped one, V outside the range, has 0)."""
    loss, dvalues = clipped_value_loss(np.array([2.0]), np.zeros(1), np.array([1.25]), 0.5)
    assert loss == 0.5625 and dvalues[0] == 1.5


def test_counters_accumulate_and_small_return_spreads_are_reported():
    """Two updates: env_steps 2 + 2 = 4, updates 1 + 1 = 2 (added, not overwritten). Rewards +-0.1 give returns
    with variance below 1: the explained variance is still reported; all-zero returns report none (PPO too)."""
    for cls, extra in ((PPO, {"n_epochs": 1, "batch_size": 2, "normalize_advantage": False}), (A2C, {})):
        agent = make_agent(cls, n_steps=1, gamma=0.0, **extra)
        values = agent.net.infer(OBS)[1].astype(np.float64)
        metrics = one_step(agent, reward=(0.1, -0.1))
        policy_loss = metrics["loss/policy"]
        A = np.array([0.1, -0.1]) - values
        R = A + values
        assert R.var() < 1 and metrics["train/explained_variance"] == pytest.approx(1 - A.var() / R.var(), rel=1e-3)
        if cls is PPO:  # rho = 1 on the first minibatch: L_clip = -mean A
            assert policy_loss == pytest.approx(-A.mean(), rel=1e-4, abs=1e-6)
        one_step(agent)
        assert agent.env_steps == 4 and agent.updates == 2
        metrics = agent.observe(Step(OBS, np.array([0, 0]), np.zeros(2), NEXT, terminated=np.ones(2, bool),
                                     truncated=np.zeros(2, bool), info={}))
        assert "train/explained_variance" not in metrics and "loss/value" in metrics


def test_two_hidden_layers_default_init_and_observation_dtype():
    """Two hidden layers: both orthogonal at sqrt(2) by default (orthogonal_init's default is True); the shared
    head (the last linear, not the second) carries the 0.01 logit rows. The rollout stores observations in the
    observation space's dtype (uint8 here)."""
    from rlscratch.on_policy import ActorCritic
    model = ModelConfig(hidden=[4, 5], activation="tanh")
    net = ActorCritic(2, 3, model, np.random.default_rng(0))
    linears = [layer for layer in net.policy.layers if hasattr(layer, "params") and "W" in layer.params]
    np.testing.assert_allclose(singular_values(linears[0]), [math.sqrt(2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(singular_values(linears[1]), [math.sqrt(2)] * 4, rtol=1e-5)
    shared = ActorCritic(2, 3, model, np.random.default_rng(0), shared=True)
    linears = [layer for layer in shared.net.layers if hasattr(layer, "params") and "W" in layer.params]
    np.testing.assert_allclose(singular_values(linears[1]), [math.sqrt(2)] * 4, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(linears[2].params["W"], axis=1), [0.01, 0.01, 0.01, 1.0], rtol=1e-5)
    spec = EnvSpec(gym.spaces.Box(0, 255, (2,), np.uint8), gym.spaces.Discrete(3), num_envs=2)
    agent = A2C(A2C.Config(), spec, model, np.random.default_rng(0))
    assert agent.buffer.obs.dtype == np.uint8


@pytest.mark.parametrize("cls", [A2C, PPO])
def test_reward_normalizer_restarts_the_return_at_every_episode_end(cls):
    """The agent hands the reward normaliser ``terminated | truncated``: a time-limit cut ends the discounted
    return G as a terminal does, while an env whose episode goes on keeps its G (gamma 0.5, rewards by hand)."""
    agent = make_agent(cls, n_steps=4, gamma=0.5, normalize_reward=True)
    for terminated, truncated in (((False, False), (True, False)), ((True, False), (False, False))):
        agent.reward_normalizer.returns[:] = 0.0
        one_step(agent, reward=(2.0, 4.0))  # G = (2, 4)
        agent.observe(Step(OBS, np.array([2, 0]), np.array([1.0, 1.0]), NEXT, terminated=np.array(terminated),
                           truncated=np.array(truncated), info={}))
        ended = np.array(terminated) | np.array(truncated)
        expected = np.where(ended, 0.0, 0.5 * np.array([2.0, 4.0]) + 1.0)  # env 0 ends, env 1 goes on: (0, 3)
        np.testing.assert_array_equal(agent.reward_normalizer.returns, expected)


@pytest.mark.parametrize("cls", [A2C, PPO])
@pytest.mark.parametrize("squash", [False, True])
def test_squash_actions_reaches_the_gaussian_head(cls, squash):
    """agent.squash_actions is the head's: squashed, a draw u goes to the env as low + (tanh(u) + 1)(high - low)/2
    (strictly inside the bounds); unsquashed, as u clipped to them."""
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (2,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32),
                   num_envs=2)
    agent = cls(cls.Config(n_steps=4, squash_actions=squash, optim={"name": "sgd", "lr": 0.1}), spec,
                ModelConfig(hidden=[4], activation="tanh"), np.random.default_rng(3))
    assert agent.head.squash is squash
    u = np.array([[3.0], [-0.5]])
    expected = -2.0 + (np.tanh(u) + 1.0) * 2.0 if squash else np.clip(u, -2.0, 2.0)
    np.testing.assert_allclose(agent.head.to_env(u), expected, rtol=1e-6)
