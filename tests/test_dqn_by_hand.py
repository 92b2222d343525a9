"""DQN's update computed by hand, in plain numpy: prioritized replay's importance weights, beta's schedule
and the priorities written back, the Huber loss's two branches, and the target network's refresh. These
are the one-line changes (a weight, an exponent, a sign) that mutation testing asks a test to notice."""

import gymnasium as gym
import numpy as np
import pytest
from conftest import with_optim
from rlscratch.agents.dqn import DQN, DQNConfig, Dueling, q_network, td_target

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step
from rlscratch.config import ModelConfig
from rlscratch.errors import ConfigError


def linear_agent(**overrides) -> DQN:
    """A linear Q (no hidden layer: Q(s) = W s + b) on 4 features and 3 actions, one env; no update happens
    by itself (learning_starts is huge), the test calls ``update``."""
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(3), 1)
    settings = with_optim({"learning_starts": 10**9, "max_grad_norm": 0, **overrides})
    if "exploration_initial_eps" in settings:  # a constant epsilon
        settings["epsilon"] = settings.pop("exploration_initial_eps")
        assert settings.pop("exploration_final_eps") == settings["epsilon"]
    config = DQNConfig(**settings)
    return DQN(config, spec, ModelConfig(hidden=[]), np.random.default_rng(0))


def fill(agent: DQN, steps: int, reward_scale: float, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        agent.observe(Step(rng.standard_normal((1, 4)).astype(np.float32), rng.integers(0, 3, 1),
                           reward_scale * rng.standard_normal(1), rng.standard_normal((1, 4)).astype(np.float32),
                           rng.random(1) < 0.2, np.zeros(1, bool), {}))


def test_prioritized_huber_update_by_hand():
    agent = linear_agent(batch_size=6, loss="huber", double_dqn=False, gamma=0.5, prioritized=True,
                         priority_alpha=0.5, priority_beta={"start": 0.5, "end": 1.0, "steps": 100},
                         priority_eps=0.01)
    fill(agent, 20, reward_scale=3.0)  # large rewards: some TD errors beyond Huber's delta = 1
    agent.target.flat_params = agent.target.flat_params + 0.3
    slots = np.arange(20)
    agent.buffer.update_priorities(slots, np.linspace(-2.0, 2.0, 20))  # p = |delta| + 0.01, stored as p^0.5
    W, b = (agent.q.layers[0].params[k].copy() for k in ("W", "b"))
    W_target, b_target = (agent.target.layers[0].params[k] for k in ("W", "b"))
    state = agent.rng.bit_generator.state
    drawn = agent.buffer.tree.sample(6, agent.rng)  # the update draws these same slots
    agent.rng.bit_generator.state = state

    buf = agent.buffer
    p_alpha = (np.abs(np.linspace(-2.0, 2.0, 20)) + 0.01) ** 0.5
    P = p_alpha[drawn] / p_alpha.sum()
    beta = 0.5 + (1.0 - 0.5) * 20 / 100  # annealed over env steps: 20 of 100 taken
    w = (20 * P) ** -beta
    w /= w.max()
    y = buf.rewards[drawn] + buf.discounts[drawn] * (buf.next_obs[drawn] @ W_target.T + b_target).max(axis=1)
    q = (buf.obs[drawn] @ W.T + b)[np.arange(6), buf.actions[drawn]]
    d = q - y
    assert (np.abs(d) > 1).any() and (np.abs(d) < 1).any()  # both of Huber's branches are exercised
    huber = np.where(np.abs(d) <= 1, 0.5 * d ** 2, np.abs(d) - 0.5)
    dq = np.zeros((6, 3))
    dq[np.arange(6), buf.actions[drawn]] = w * np.clip(d, -1, 1) / 6

    loss, q_mean = agent.update()
    assert loss == pytest.approx(np.sum(w * huber) / 6, rel=1e-5)
    assert q_mean == pytest.approx(q.mean(), rel=1e-5, abs=1e-6)
    assert np.allclose(agent.q.layers[0].grads["W"], dq.T @ buf.obs[drawn], atol=1e-5)
    assert np.allclose(agent.q.layers[0].grads["b"], dq.sum(axis=0), atol=1e-5)
    # the replayed slots get p = |q - y| + eps (their TD errors before the step), to the power alpha
    assert np.allclose(buf.tree.get(drawn), (np.abs(d) + 0.01) ** 0.5, rtol=1e-5)
    assert buf.max_priority == pytest.approx(max(2.01, np.abs(d).max() + 0.01), rel=1e-6)


def test_importance_weights_are_one_without_prioritized_replay_and_update_steps_sgd_direction():
    """Uniform replay: the loss is the plain mean; Adam's first step moves each weight against its gradient."""
    agent = linear_agent(batch_size=4, loss="mse", double_dqn=False, gamma=0.9, lr=1e-3)
    fill(agent, 10, reward_scale=1.0)
    before = agent.q.flat_params.copy()
    state = agent.rng.bit_generator.state
    batch = agent.buffer.sample(4, agent.rng)
    agent.rng.bit_generator.state = state
    y = td_target(batch.rewards, batch.discounts, agent.target.infer(batch.next_obs))
    q = agent.q.infer(batch.obs)[np.arange(4), batch.actions]
    loss, _ = agent.update()
    assert batch.weights is None and loss == pytest.approx(np.mean((q - y) ** 2), rel=1e-5)
    step = agent.q.flat_params - before
    grads = agent.q.flat_grads
    moved = grads != 0
    # Adam's first step is -lr * sign(g) (m / sqrt(v) = g / |g|), up to its epsilon
    assert np.allclose(step[moved], -1e-3 * np.sign(grads[moved]), rtol=1e-3)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_target_network_refreshes_every_interval_updates(tau):
    agent = linear_agent(batch_size=4, target_update_interval=3, tau=tau)
    fill(agent, 10, reward_scale=1.0)
    initial = agent.target.flat_params.copy()
    for update in range(1, 7):
        before = agent.target.flat_params.copy()
        agent.update()
        if update % 3:
            assert np.array_equal(agent.target.flat_params, before), update
        else:  # theta_target <- tau theta + (1 - tau) theta_target
            assert np.allclose(agent.target.flat_params, tau * agent.q.flat_params + (1 - tau) * before, atol=1e-7)
    assert not np.array_equal(agent.target.flat_params, initial)


def test_double_dqn_uses_the_online_argmax_and_the_target_value():
    """Where the online net's argmax differs from the target's, Double DQN's target is lower than DQN's."""
    rewards, discounts = np.array([0.0, 1.0]), np.array([1.0, 0.5])
    next_q_target = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 4.0]])
    next_q_online = np.array([[5.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    assert td_target(rewards, discounts, next_q_target).tolist() == [3.0, 1.0 + 0.5 * 4.0]
    assert td_target(rewards, discounts, next_q_target, next_q_online).tolist() == [1.0, 1.0 + 0.5 * 4.0]


def test_acting_with_epsilon_one_half_mixes_random_and_greedy_actions():
    """epsilon 0.5, 3 actions: a random action differs from the greedy one with probability 2/3, so about
    1/3 of the actions differ from greedy, and each action differs from greedy uniformly over the other two."""
    agent = linear_agent(exploration_initial_eps=0.5, exploration_final_eps=0.5)
    obs = np.random.default_rng(1).standard_normal((6000, 4)).astype(np.float32)
    greedy = agent.q.infer(obs).argmax(axis=1)
    actions = agent.act(obs)
    assert abs((actions != greedy).mean() - 1 / 3) < 0.03
    assert np.array_equal(agent.act(obs, explore=False), greedy)


def test_dueling_head_gives_no_input_gradient_if_a_stream_skips_it(rng):
    head = Dueling(nn.Linear(5, 1, rng), nn.Linear(5, 3, rng))
    head.value.input_grad = False
    h = rng.standard_normal((2, 5)).astype(np.float32)
    head.forward(h)
    assert head.backward(np.ones((2, 3), np.float32)) is None


def test_checkpoint_names_of_the_dqn_agent():
    """Checkpoints store components by these names: renaming one would orphan every saved run."""
    assert set(linear_agent().components()) == {"rng", "q", "target", "optimizer", "buffer"}


def test_double_dqn_update_takes_the_online_argmax_where_it_differs_from_the_target_argmax():
    """A target network that ranks the actions the other way round from the online one: Double DQN's y
    evaluates the online net's choice with the target net, plain DQN's y takes the target net's max."""
    for double in (True, False):
        agent = linear_agent(batch_size=5, loss="mse", double_dqn=double, gamma=0.9)
        fill(agent, 12, reward_scale=1.0)
        agent.target.flat_params = -agent.q.flat_params  # argmax of the target = argmin of the online net
        state = agent.rng.bit_generator.state
        batch = agent.buffer.sample(5, agent.rng)
        agent.rng.bit_generator.state = state
        online, target = agent.q.infer(batch.next_obs), agent.target.infer(batch.next_obs)
        assert (online.argmax(axis=1) != target.argmax(axis=1)).all()
        chosen = target[np.arange(5), online.argmax(axis=1)] if double else target.max(axis=1)
        y = batch.rewards + batch.discounts * chosen
        q = agent.q.infer(batch.obs)[np.arange(5), batch.actions]
        loss, _ = agent.update()
        assert loss == pytest.approx(np.mean((q - y) ** 2), rel=1e-5), double


def test_gradient_norm_is_clipped_to_max_grad_norm():
    agent = linear_agent(batch_size=8, loss="mse", max_grad_norm=0.5)
    fill(agent, 12, reward_scale=10.0)  # large TD errors: a gradient norm far above 0.5
    agent.update()
    assert np.linalg.norm(agent.q.flat_grads) == pytest.approx(0.5, rel=1e-4)


def test_observe_hands_terminations_and_truncations_to_the_replay():
    """One env, n = 2, gamma 0.5: a termination closes its windows with discount 0, a truncation with
    gamma^m (bootstrapping from its final observation)."""
    agent = linear_agent(n_step=2, gamma=0.5)
    obs = np.zeros((1, 4), np.float32)
    for terminated, truncated in ((False, False), (True, False), (False, False), (False, True)):
        agent.observe(Step(obs, np.zeros(1, np.int64), np.ones(1), obs, np.array([terminated]),
                           np.array([truncated]), {}))
    assert agent.buffer.discounts[:4].tolist() == [0.0, 0.0, 0.25, 0.5]
    assert agent.buffer.rewards[:4].tolist() == [1.5, 1.0, 1.5, 1.0]


def test_the_config_reaches_the_network_and_the_replay():
    """Dueling builds a dueling head; float observations are stored as float32, integer ones (images) as they
    come; actions in the smallest unsigned type that holds them; n and gamma fold the replay's returns."""
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float64), gym.spaces.Discrete(256), 1)
    agent = DQN(DQNConfig(dueling=True, n_step=3, gamma=0.5), spec, ModelConfig(hidden=[8]), np.random.default_rng(0))
    assert any(isinstance(layer, Dueling) for layer in agent.q.layers)
    assert agent.buffer.obs.dtype == np.float32 and agent.buffer.actions.dtype == np.uint8
    assert (agent.buffer.queue.n, agent.buffer.queue.gamma) == (3, 0.5)
    assert agent.spec is spec and agent.model_config.hidden == [8]
    wide = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(257), 1)
    assert DQN(DQNConfig(), wide, ModelConfig(hidden=[8]), np.random.default_rng(0)).buffer.actions.dtype == np.uint16
    images = EnvSpec(gym.spaces.Box(0, 255, (2, 2), np.uint8), gym.spaces.Discrete(3), 1)
    agent = DQN(DQNConfig(), images, ModelConfig(hidden=[8]), np.random.default_rng(0))
    assert agent.buffer.obs.dtype == np.uint8 and agent.buffer.actions.dtype == np.uint8
    assert not any(isinstance(layer, Dueling) for layer in agent.q.layers)


def test_q_network_layers():
    """hidden [8, 7, 6] with a dueling head: trunk 4-8-7-6 with an activation after every hidden layer, then
    the value (6 -> 1) and advantage (6 -> 3) streams; without dueling, a plain MLP. The first layer skips
    dL/dobs (observations are data)."""
    model = ModelConfig(hidden=[8, 7, 6])
    rng = np.random.default_rng(0)
    net = q_network(4, 3, model, rng, dueling=True)
    assert sum(isinstance(layer, nn.ReLU) for layer in net.layers) == 3 and isinstance(net.layers[-1], Dueling)
    assert net.num_params() == (4 * 8 + 8) + (8 * 7 + 7) + (7 * 6 + 6) + (6 * 1 + 1) + (6 * 3 + 3)
    plain = q_network(4, 3, model, rng)
    assert not any(isinstance(layer, Dueling) for layer in plain.layers)
    assert plain.num_params() == (4 * 8 + 8) + (8 * 7 + 7) + (7 * 6 + 6) + (6 * 3 + 3)
    for network in (net, plain):
        network.forward(np.ones((2, 4), np.float32))
        assert network.backward(np.ones((2, 3), np.float32)) is None
    with pytest.raises(ConfigError, match=r"^agent.dueling needs at least one hidden layer \(model.hidden\) to share$"):
        q_network(4, 3, ModelConfig(hidden=[]), rng, dueling=True)
