"""DQN: the Double-DQN target by hand, the dueling head's backward pass against finite differences,
schedules and target updates, exact resume with the replay buffer in the checkpoint, and a seeded
learning test on CartPole."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import write_config as write_yaml_config
from rlscratch.agents.dqn import DQN, DQNConfig, Dueling, q_network, td_target

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step
from rlscratch.checkpoint import CheckpointManager, read_checkpoint
from rlscratch.config import ModelConfig, load_config
from rlscratch.events import read_scalars
from rlscratch.optim_config import OptimConfig, Schedule, ScheduleConfig
from rlscratch.state import sub_state
from rlscratch.trainer import train


def make_agent(num_envs=1, hidden=(16,), **overrides) -> DQN:
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(3), num_envs)
    return DQN(DQNConfig(**overrides), spec, ModelConfig(hidden=list(hidden)), np.random.default_rng(0))


def random_step(rng, num_envs=1) -> Step:
    obs = rng.standard_normal((num_envs, 4)).astype(np.float32)
    return Step(obs, rng.integers(0, 3, num_envs), rng.standard_normal(num_envs),
                rng.standard_normal((num_envs, 4)).astype(np.float32), rng.random(num_envs) < 0.1,
                np.zeros(num_envs, bool), {})


# -- targets ----------------------------------------------------------------------------------------
def test_double_dqn_target_by_hand():
    rewards = np.array([1.0, 2.0, 3.0])
    discounts = np.array([0.9, 0.5, 0.0])  # the last transition ended in a termination
    next_q_target = np.array([[1.0, 5.0], [3.0, 4.0], [7.0, 8.0]])
    next_q_online = np.array([[2.0, 1.0], [9.0, 0.0], [0.0, 1.0]])
    # DQN: y = G + discount * max_a Q_target(s', a)
    assert np.allclose(td_target(rewards, discounts, next_q_target), [1 + 0.9 * 5, 2 + 0.5 * 4, 3])
    # Double DQN: the online net picks a* = (0, 0, 1), the target net evaluates it
    assert np.allclose(td_target(rewards, discounts, next_q_target, next_q_online), [1 + 0.9 * 1, 2 + 0.5 * 3, 3])


# -- the dueling head -------------------------------------------------------------------------------
def test_dueling_head_gradients_match_finite_differences(rng):
    head = Dueling(nn.Linear(5, 1, rng), nn.Linear(5, 4, rng)).astype(np.float64)
    errors = nn.check_module(head, rng.standard_normal((6, 5)), rng=rng)
    assert set(errors) == {"input0", "value.W", "value.b", "advantage.W", "advantage.b"}
    assert max(errors.values()) <= 1e-6, errors


def test_dueling_network_gradients_match_finite_differences(rng):
    net = q_network(4, 3, ModelConfig(hidden=[8, 6], activation="tanh"), rng, dueling=True).astype(np.float64)
    net.layers[0].input_grad = True  # check dL/dobs too
    errors = nn.check_module(net, rng.standard_normal((5, 4)), rng=rng)
    assert max(errors.values()) <= 1e-6, errors


def test_dueling_splits_value_and_zero_mean_advantage(rng):
    head = Dueling(nn.Linear(5, 1, rng), nn.Linear(5, 4, rng))
    h = rng.standard_normal((3, 5)).astype(np.float32)
    q = head.infer(h)
    assert np.allclose(q.mean(axis=1), head.value.infer(h)[:, 0], atol=1e-5)
    assert np.allclose(head.forward(h), q) and head.saved_count() == 2
    head.backward(np.ones_like(q))
    assert head.saved_count() == 0


def test_dueling_needs_a_hidden_layer(rng):
    from rlscratch.errors import ConfigError

    with pytest.raises(ConfigError, match="hidden"):
        q_network(4, 2, ModelConfig(hidden=[]), rng, dueling=True)


# -- schedules, acting, updates ---------------------------------------------------------------------
def test_epsilon_and_lr_schedules_count_env_steps():
    agent = make_agent(num_envs=2, epsilon=ScheduleConfig(1.0, 0.1, 100), learning_starts=10**9,
                       optim=OptimConfig(lr=ScheduleConfig(1e-3, 1e-4, 1000)))
    rng = np.random.default_rng(0)
    assert agent.epsilon == 1.0
    for _ in range(25):
        agent.observe(random_step(rng, 2))
    assert agent.env_steps == 50 and agent.epsilon == pytest.approx(0.55)
    assert agent.optimizer.lr == pytest.approx(1e-3 - 0.05 * 9e-4)
    for _ in range(500):
        agent.observe(random_step(rng, 2))
    assert agent.epsilon == pytest.approx(0.1) and agent.optimizer.lr == pytest.approx(1e-4)


def test_acting_is_epsilon_greedy():
    agent = make_agent(num_envs=1, epsilon=0.0)
    obs = np.random.default_rng(1).standard_normal((500, 4)).astype(np.float32)
    greedy = agent.q.infer(obs).argmax(axis=1)
    assert np.array_equal(agent.act(obs), greedy) and np.array_equal(agent.act(obs, explore=False), greedy)
    agent.epsilon_schedule = Schedule(1.0)
    actions = agent.act(obs)
    assert set(actions) == {0, 1, 2} and np.array_equal(agent.act(obs, explore=False), greedy)


@pytest.mark.parametrize("tau, interval", [(1.0, 3), (0.25, 1)])
def test_target_network_hard_and_polyak_updates(tau, interval):
    agent = make_agent(learning_starts=8, batch_size=4, train_freq=1, tau=tau, target_update_interval=interval)
    rng = np.random.default_rng(0)
    for _ in range(7):
        agent.observe(random_step(rng))
    assert agent.updates == 0 and np.array_equal(agent.target.flat_params, agent.q.flat_params)
    for _ in range(2 * interval):
        before = agent.target.flat_params.copy()
        agent.observe(random_step(rng))  # one update per step from here on
        if agent.updates % interval == 0:  # theta_target <- tau theta + (1 - tau) theta_target
            assert np.allclose(agent.target.flat_params, tau * agent.q.flat_params + (1 - tau) * before, atol=1e-7)
        else:
            assert np.array_equal(agent.target.flat_params, before)
    assert agent.updates == 2 * interval


def test_update_metrics_and_gradient_steps():
    agent = make_agent(num_envs=4, learning_starts=40, batch_size=8, train_freq=8, gradient_steps=3,
                       prioritized=True, n_step=2, dueling=True, optim=OptimConfig(max_grad_norm=1.0))
    rng = np.random.default_rng(0)
    metrics = [agent.observe(random_step(rng, 4)) for _ in range(12)]  # 48 env steps
    assert agent.env_steps == 48 and agent.updates == 3 * 2  # training rounds at 40 and 48
    last = metrics[-1]
    assert {"loss/td", "train/q_mean", "train/epsilon", "train/lr"} <= set(last)
    assert all(np.isfinite(v) for v in last.values())
    assert agent.q.saved_count() == 0  # every forward was backpropagated


def test_double_dqn_update_by_hand():
    """One update of a linear Q (no hidden layer) with MSE, checked against plain numpy arithmetic."""
    agent = make_agent(hidden=(), learning_starts=10**9, batch_size=5, loss="mse", optim=OptimConfig(max_grad_norm=0),
                       double_dqn=True, gamma=0.5, n_step=2)
    rng = np.random.default_rng(3)
    for _ in range(20):
        agent.observe(random_step(rng))
    agent.target.flat_params = agent.target.flat_params + 0.3  # a target net that differs from the online one
    W, b = (agent.q.layers[0].params[k].copy() for k in ("W", "b"))
    W_target, b_target = (agent.target.layers[0].params[k] for k in ("W", "b"))
    state = agent.rng.bit_generator.state
    batch = agent.buffer.sample(5, agent.rng)
    agent.rng.bit_generator.state = state  # the update draws this same batch

    rows = np.arange(5)
    a_star = (batch.next_obs @ W.T + b).argmax(axis=1)  # the online net picks...
    y = batch.rewards + batch.discounts * (batch.next_obs @ W_target.T + b_target)[rows, a_star]  # ...the target values
    q = (batch.obs @ W.T + b)[rows, batch.actions]
    dq = np.zeros((5, 3))
    dq[rows, batch.actions] = 2 * (q - y) / 5  # d/dq of mean (q - y)^2, on the taken actions only
    loss, _ = agent.update()
    assert loss == pytest.approx(np.mean((q - y) ** 2), rel=1e-5)
    assert np.allclose(agent.q.layers[0].grads["W"], dq.T @ batch.obs, atol=1e-5)
    assert np.allclose(agent.q.layers[0].grads["b"], dq.sum(axis=0), atol=1e-5)


# -- checkpoints ------------------------------------------------------------------------------------
def write_config(folder: Path, **agent) -> Path:
    data = {
        "env": {"id": "CartPole-v1", "num_envs": 2},
        "agent": {"name": "dqn", "learning_starts": 200, "train_freq": 4, "batch_size": 16, "buffer_size": 600,
                  "n_step": 3, "epsilon": {"start": 1.0, "end": 0.05, "steps": 500},
                  "target_update_interval": 20, **agent},
        "model": {"hidden": [16]},
        "train": {"total_steps": 1200, "eval_every": 600, "eval_episodes": 2, "checkpoint_every": 400,
                  "log_every": 200},
        "log": {"tensorboard": False},
        "seed": 5,
    }
    return write_yaml_config(folder, data, "dqn.yaml")


@pytest.mark.parametrize("agent", [{}, {"prioritized": True, "dueling": True, "tau": 0.1,
                                    "optim": {"lr": {"start": 1e-3, "end": 1e-4, "steps": 100_000}}}])
def test_resume_from_checkpoint_is_exact_including_the_buffer(tmp_path, agent):
    config, _ = load_config(str(write_config(tmp_path, **agent)))
    full = train(config, tmp_path / "full")
    interrupted = train(config, tmp_path / "split", stop_at=700)  # the ring has wrapped (600 slots) by then
    assert interrupted["interrupted"]
    arrays, _ = read_checkpoint(CheckpointManager(tmp_path / "split" / "checkpoints").latest())
    saved = sub_state(arrays, "agent/buffer")
    assert saved["obs"].shape == (600, 4) and "queue/obs" in saved
    resumed = train(config, tmp_path / "split", resume=True)

    a, b = full["agent"], resumed["agent"]
    assert a.updates == b.updates and a.env_steps == b.env_steps == 1200
    for name in ("q", "target"):
        assert np.array_equal(getattr(a, name).flat_params, getattr(b, name).flat_params), name
    assert np.array_equal(a.optimizer.m, b.optimizer.m) and a.optimizer.steps == b.optimizer.steps
    for name in ("obs", "actions", "rewards", "next_obs", "discounts"):
        assert np.array_equal(getattr(a.buffer, name), getattr(b.buffer, name)), name
    if agent.get("prioritized"):
        assert np.array_equal(a.buffer.tree.nodes, b.buffer.tree.nodes)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert full["eval_mean"] == resumed["eval_mean"]


def test_checkpoint_saves_only_the_filled_part(tmp_path):
    config, _ = load_config(str(write_config(tmp_path, buffer_size=100_000)), ["train.total_steps=400"])
    train(config, tmp_path / "run")
    arrays, _ = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").latest())
    saved = sub_state(arrays, "agent/buffer")
    assert 390 <= saved["obs"].shape[0] <= 400 and int(saved["size"]) == saved["obs"].shape[0]


# -- learning ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dqn_learns_cartpole(tmp_path):
    """Seeded: a 20-episode greedy evaluation reaches 195 within 20,000 env steps."""
    data = {
        "env": {"id": "CartPole-v1", "num_envs": 1, "eval_num_envs": 10},
        # the shipped config's shape at a quarter of its updates: 4,800 in all
        "agent": {"name": "dqn", "n_step": 4, "batch_size": 64, "learning_starts": 1000, "train_freq": 256,
                  "gradient_steps": 64, "target_update_interval": 64, "optim": {"lr": 2.3e-3},
                  "epsilon": {"start": 1.0, "end": 0.04, "steps": 8000}},
        "model": {"hidden": [64, 64]},
        "train": {"total_steps": 20_000, "eval_every": 5000, "eval_episodes": 20},
        "log": {"root": str(tmp_path)},
        "seed": 0,
    }
    config, _ = load_config(str(write_yaml_config(tmp_path, data, "learn.yaml")))
    train(config, tmp_path / "run")
    steps, returns = read_scalars(tmp_path / "run")["eval/mean_return"]
    assert list(steps) == [5000, 10000, 15000, 20000]
    assert returns.max() >= 195, dict(zip(steps.tolist(), returns.tolist()))


def test_prioritized_replay_samples_with_the_beta_its_schedule_gives_now(monkeypatch):
    """beta from 0.4 to 1.0 over 100 env steps: the update after 50 env steps (2 envs x 25) samples with 0.7."""
    agent = make_agent(num_envs=2, learning_starts=50, train_freq=50, batch_size=4, prioritized=True,
                       priority_beta=ScheduleConfig(0.4, 1.0, 100))
    betas = []
    sample = agent.buffer.sample
    monkeypatch.setattr(agent.buffer, "sample", lambda *args, beta: betas.append(beta) or sample(*args, beta=beta))
    rng = np.random.default_rng(0)
    for _ in range(25):
        agent.observe(random_step(rng, 2))
    assert betas == [pytest.approx(0.7)]
