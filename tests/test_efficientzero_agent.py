"""EfficientZero's switches on MuZero's agent, where a one-line slip would go unnoticed by learning
tests: the off-policy correction's value horizon by hand, per-window n in the targets and in the rows
a reanalysis reads, reanalysis with the target network and root noise, the env balance of the
reanalysed subset, the target network right after each refresh, priorities and importance weights
after one update with every switch on, the value-prefix targets the agent trains on, and the
temperature at the shipped config's schedule boundaries."""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import rlscratch.agents.muzero as muzero_agent
import yaml
from conftest import with_optim
from rlscratch.agents.muzero import MuZero, MuZeroConfig

from rlscratch.agent import EnvSpec, Step
from rlscratch.config import ModelConfig
from rlscratch.muzero.loss import unrolled_loss
from rlscratch.muzero.mcts import MCTS
from rlscratch.muzero.replay import GameReplay, rows_read
from rlscratch.muzero.targets import make_targets
from rlscratch.muzero.value_prefix import value_prefix_targets

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def ez_agent(num_envs: int = 2, **overrides) -> MuZero:
    settings = dict(num_simulations=3, state_dim=4, value_support=3, reward_support=1, unroll_steps=2, td_steps=3,
                    batch_size=8, warmup_steps=0, replay_capacity=400, value_target="search", discount=0.9,
                    priority_alpha=0.6, priority_eps=0.01, priority_beta=0.4, priority_beta_steps=1000,
                    consistency_coef=2.0, consistency_hidden=5, consistency_dim=3, value_prefix=True, lstm_hidden=3,
                    lstm_horizon=2)
    settings.update(overrides)
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2), num_envs=num_envs)
    return MuZero(MuZeroConfig(**with_optim(settings)), spec, ModelConfig(hidden=[8]), np.random.default_rng(0))


def fill(agent: MuZero, steps: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    E, A = agent.replay.num_envs, agent.n_actions
    for t in range(steps):
        done = np.array([t % 11 == 10] + [False] * (E - 1))
        agent.replay.add(rng.standard_normal((E, 3)).astype(np.float32), rng.integers(0, A, E), rng.uniform(0, 1, E),
                         rng.uniform(-2, 2, E), rng.dirichlet(np.ones(A), E), rng.standard_normal((E, 3)),
                         done, np.zeros(E, bool))


def test_offpolicy_value_horizon_by_hand():
    """td = clip(n - age // unit, 1, n), age = rows written since in the env's stream times the
    number of envs. 2 envs, 30 steps (env 0 also has 2 final rows: head 32, env 1 head 30); n = 3,
    unit 10: env 1 row 29 -> age 0 -> 3; row 25 -> age 8 -> 3; row 24 -> age 10 -> 2; row 19 -> age
    20 -> 1; row 0 -> age 58 -> 1 (clipped); env 0 row 26 -> (32 - 1 - 26) * 2 = 10 -> 2."""
    agent = ez_agent(offpolicy_age_unit=10)
    fill(agent)
    assert agent.replay.head.tolist() == [32, 30]
    td = agent.td_steps(np.array([1, 1, 1, 1, 1, 0]), np.array([29, 25, 24, 19, 0, 26]))
    assert td.tolist() == [3, 3, 2, 1, 1, 2]
    assert ez_agent().td_steps(np.array([1]), np.array([0])) == 3   # off: n for everyone


def test_targets_with_one_n_per_window_match_separate_calls(rng):
    """make_targets with n = (1, 3, 2, ...) per window gives row by row what make_targets with that
    scalar n gives (values, masks, rewards); and the reanalysis reads each window's own bootstrap row."""
    agent = ez_agent()
    fill(agent)
    env, start = np.array([0, 1, 0, 1, 0]), np.array([3, 7, 8, 20, 27])
    td = np.array([1, 3, 2, 2, 3])
    window = agent.replay.window(env, start, 2 + 3 + 1)
    mixed = make_targets(window, 2, td, 0.9, np.random.default_rng(0))
    for n in (1, 2, 3):
        alone = make_targets(window, 2, n, 0.9, np.random.default_rng(0))
        rows = td == n
        assert np.array_equal(mixed.target_value[rows], alone.target_value[rows])
        assert np.array_equal(mixed.value_mask[rows], alone.value_mask[rows])
    # window 0 (env 0, rows 3..) with n = 1 bootstraps z_0 from row 4; with n = 3 it would read row 6
    e, s = agent.replay.reanalyze_rows(env[:1], start[:1], 1, 2, td[:1], np.random.default_rng(0),
                                       stored_values=True)
    assert sorted(s.tolist()) == [3, 4, 5, 6]   # policies 3, 4, 5; bootstraps 4, 5, 6 (k + 1)
    e, s = agent.replay.reanalyze_rows(env[:1], start[:1], 1, 2, np.array([3]), np.random.default_rng(0),
                                       stored_values=True)
    assert sorted(s.tolist()) == [3, 4, 5, 6, 7, 8]


def test_target_values_only_at_the_rows_read_give_the_same_targets():
    """The agent runs the target network only on the rows make_targets bootstraps from (replay.rows_read,
    a truncation's final row among them): on every window of a replay with terminations AND truncations, with one n per
    window, the value targets and masks are those of target values for every row -- while fewer than
    two thirds of the rows were evaluated."""
    agent = ez_agent(value_target="target", offpolicy_age_unit=10)
    rng = np.random.default_rng(3)
    E, A = 2, agent.n_actions
    for t in range(40):
        terminated, truncated = np.array([t % 11 == 10, False]), np.array([False, t % 9 == 8])
        agent.replay.add(rng.standard_normal((E, 3)).astype(np.float32), rng.integers(0, A, E), rng.uniform(0, 1, E),
                         rng.uniform(-2, 2, E), rng.dirichlet(np.ones(A), E), rng.standard_normal((E, 3)),
                         terminated, truncated, rng.uniform(-2, 2, E))
    agent.target.flat_params[:] = rng.standard_normal(agent.target.flat_params.size) * 0.5   # values not flat
    env = np.repeat([0, 1], 36)
    start = np.concatenate([np.arange(36), np.arange(36)])
    start = np.where(agent.replay.kind[env, start % agent.replay.per_env] == 0, start, start - 1)   # STEP rows
    td = agent.td_steps(env, start)
    window = agent.replay.window(env, start, agent.window)
    every = agent.target.initial_inference(window.obs.reshape(-1, 3))[2].reshape(window.status.shape)
    some = agent._target_values(window, td)
    assert 0 < np.count_nonzero(some) < 2 / 3 * some.size
    want = make_targets(window, 2, td, 0.9, np.random.default_rng(0), every)
    got = make_targets(window, 2, td, 0.9, np.random.default_rng(0), some)
    assert np.array_equal(got.value_mask, want.value_mask)
    assert np.allclose(got.target_value, want.target_value, rtol=1e-6, atol=1e-6)
    assert (window.status == 1).any() and window.terminated.any() and (~window.terminated & (window.status == 1).any(
        axis=1)).any()   # both kinds of episode end are in there
    assert len(np.unique(td)) > 1


def test_target_values_are_computed_at_the_bootstrap_rows_only():
    """Within an episode, z_k (k = 0..K) bootstraps from row t + k + n alone: the target network runs
    on exactly those K + 1 rows of each window (not on the policy rows t..t+K, which only a
    reanalysis reads), each window with its own n."""
    agent = ez_agent(value_target="target", offpolicy_age_unit=20)   # K = 2, n = 3, shrinking with age
    rng = np.random.default_rng(4)
    for _ in range(40):   # no episode ends
        agent.replay.add(rng.standard_normal((2, 3)).astype(np.float32), rng.integers(0, 2, 2), rng.uniform(0, 1, 2),
                         rng.uniform(-2, 2, 2), rng.dirichlet(np.ones(2), 2), rng.standard_normal((2, 3)),
                         np.zeros(2, bool), np.zeros(2, bool))
    agent.target.flat_params[:] = rng.standard_normal(agent.target.flat_params.size) * 0.5
    env, start = np.array([0, 1, 0, 1]), np.array([15, 25, 30, 34])
    td = agent.td_steps(env, start)
    assert td.tolist() == [1, 2, 3, 3]   # ages (39 - start) x 2 envs = 48, 28, 18, 10 -> n = 3 - age // 20
    window = agent.replay.window(env, start, agent.window)
    expected = np.zeros(window.status.shape, bool)
    for row, n in enumerate(td):
        expected[row, n:n + 3] = True
    np.testing.assert_array_equal(agent._target_values(window, td) != 0, expected)


def test_agent_trains_on_value_prefix_and_consistency_targets(monkeypatch):
    """The batch the loss sees: value-prefix reward targets (horizon 2: u_1, u_1 + u_2) and the
    observations o_{t+1}, o_{t+2} with their mask; per-window n from the off-policy correction."""
    agent = ez_agent(offpolicy_age_unit=10)
    fill(agent)
    seen = {}

    def spy(net, batch, **kw):
        seen["batch"], seen["kw"] = batch, kw
        return unrolled_loss(net, batch, **kw)

    monkeypatch.setattr(muzero_agent, "unrolled_loss", spy)
    rng = copy.deepcopy(agent.rng)
    sample = agent.replay.sample(8, rng, agent._beta())
    window = agent.replay.window(sample.env, sample.start, agent.window)
    td = agent.td_steps(sample.env, sample.start)
    plain = make_targets(window, 2, td, 0.9, rng)
    metrics = agent.train_step()
    batch = seen["batch"]
    assert seen["kw"]["consistency_coef"] == 2.0
    assert np.array_equal(batch.target_reward, value_prefix_targets(plain.target_reward, 2))
    assert np.array_equal(batch.target_reward[:, 2], plain.target_reward[:, 1] + plain.target_reward[:, 2])
    assert np.array_equal(batch.target_value, plain.target_value)
    assert np.array_equal(batch.target_obs, window.obs[:, 1:3])
    assert np.array_equal(batch.consistency_mask, ((window.status == 0) | (window.status == 1))[:, :3] * 1.0)
    assert plain.target_obs is None and plain.consistency_mask is None   # make_targets' options: off by default
    assert metrics["train/td_steps"] == pytest.approx(td.mean())
    assert -1.0 <= metrics["loss/consistency"] <= 1.0 and metrics["loss/consistency"] != 0.0


@pytest.mark.parametrize("network,noise", [("target", True), ("online", False)])
def test_reanalysis_uses_the_configured_network_and_noise(monkeypatch, network, noise):
    agent = ez_agent(reanalyze_fraction=0.5, reanalyze_network=network, reanalyze_noise=noise,
                     value_target="target", target_update_interval=1000)
    fill(agent)
    agent.train_step()    # the online network moves away from the target
    assert not np.array_equal(agent.net.flat_params, agent.target.flat_params)
    calls = []
    original = MCTS.run

    def spy(self, model, obs, rng, explore):
        calls.append((model, len(obs), explore))
        return original(self, model, obs, rng, explore)

    monkeypatch.setattr(MCTS, "run", spy)
    agent.train_step()
    assert len(calls) == 1     # one batched search for every reanalysed row
    model, rows, explore = calls[0]
    assert model is (agent.target if network == "target" else agent.net) and explore == noise and rows > 4


def test_reanalysed_subset_is_env_balanced():
    """The sum tree returns a batch ordered by env; the reanalysed windows must be a uniform subset of
    it, not its first rows: over many draws from a batch of 8 envs x 4 windows, count 4, every env is
    chosen about equally (1/8 of the picks each)."""
    replay = GameReplay(800, 8, (1,), 2)
    rng = np.random.default_rng(0)
    for t in range(40):
        replay.add(np.full((8, 1), t, np.float32), np.zeros(8, np.int64), np.ones(8), np.zeros(8),
                   np.full((8, 2), 0.5), np.zeros((8, 1)), np.zeros(8, bool), np.zeros(8, bool))
    env, start = np.repeat(np.arange(8), 4), np.tile([3, 9, 15, 21], 8)
    counts = np.zeros(8)
    for _ in range(500):
        envs, _slots = replay.reanalyze_rows(env, start, 4, 2, 3, rng, stored_values=False)
        counts += np.bincount(envs, minlength=8)    # 3 policy rows (K + 1) per chosen window
    share = counts / counts.sum()
    assert np.all(np.abs(share - 1 / 8) < 0.03), share


def test_target_network_equals_online_right_after_each_refresh():
    """A target network for the reanalysis alone (value_target search): a copy at the start and
    right after every 3rd update, and different in between."""
    agent = ez_agent(reanalyze_network="target", reanalyze_fraction=0.25, target_update_interval=3)
    fill(agent)
    assert agent.target is not None and np.array_equal(agent.target.flat_params, agent.net.flat_params)
    for update in range(1, 8):
        agent.train_step()
        assert np.array_equal(agent.target.flat_params, agent.net.flat_params) == (update % 3 == 0), update
    assert ez_agent().target is None   # nothing reads one


def test_priorities_and_weights_after_one_update_with_every_switch(monkeypatch):
    """After one update the drawn rows' priorities are (|v_0 - z_0| + eps)^0.6 and the loss got the
    importance weights (N P)^-beta / max with beta = 0.4 + 0.6 * 500/1000 = 0.7, exactly."""
    agent = ez_agent(offpolicy_age_unit=10, reanalyze_fraction=0.0)
    fill(agent)
    agent.net.prediction.layers[-1].params["W"][...] = np.random.default_rng(4).standard_normal(
        agent.net.prediction.layers[-1].params["W"].shape)
    leaves = np.flatnonzero(agent.replay.tree.priorities)
    agent.replay.update_priorities(leaves, np.random.default_rng(3).uniform(0, 4, len(leaves)))
    agent.env_steps = 500
    rng = copy.deepcopy(agent.rng)
    sample = agent.replay.sample(8, rng, agent._beta())
    tree = agent.replay.tree.priorities.copy()
    probability = tree[sample.leaf] / tree.sum()
    raw = (len(leaves) * probability) ** -0.7
    window = agent.replay.window(sample.env, sample.start, agent.window)
    targets = make_targets(window, 2, agent.td_steps(sample.env, sample.start), 0.9, rng)
    v0 = agent.net.initial_inference(window.obs[:, 0])[2].astype(np.float64)
    seen = {}
    monkeypatch.setattr(muzero_agent, "unrolled_loss", lambda net, batch, **kw: seen.setdefault(
        "batch", batch) and unrolled_loss(net, batch, **kw))
    agent.train_step()
    assert seen["batch"].weights == pytest.approx(raw / raw.max(), rel=1e-12)
    known = targets.value_mask[:, 0] > 0
    expected = (np.abs(v0 - targets.target_value[:, 0]) + 0.01) ** 0.6
    assert agent.replay.tree.priorities[sample.leaf[known]] == pytest.approx(expected[known], abs=2e-4)


def test_shipped_config_temperature_at_its_boundaries():
    """efficientzero_cartpole.yaml: T = 1 before env step 4000, 0.5 from 4000, 0.25 from 7000."""
    data = yaml.safe_load((CONFIGS / "efficientzero_cartpole.yaml").read_text())["agent"]
    agent = ez_agent(temperature_schedule=data["temperature_schedule"])
    for steps, t in [(0, 1.0), (3999, 1.0), (4000, 0.5), (6999, 0.5), (7000, 0.25), (10_000, 0.25)]:
        agent.env_steps = steps
        assert agent.temperature() == t, steps


def test_efficientzero_resume_is_exact(tmp_path):
    """Every switch on (the efficientzero agent's defaults, reanalysis with the target network and
    noise): stopping mid-run and resuming from the checkpoint ends with exactly the parameters and
    priorities of an unbroken run."""
    from conftest import write_config

    from rlscratch.config import load_config
    from rlscratch.trainer import train

    data = {
        "env": {"id": "CartPole-v1", "num_envs": 2},
        "agent": {"name": "efficientzero", "num_simulations": 4, "state_dim": 8, "batch_size": 8, "warmup_steps": 60,
                  "train_ratio": 0.25, "unroll_steps": 3, "td_steps": 4, "value_support": 5, "reward_support": 2,
                  "target_update_interval": 5, "reanalyze_fraction": 0.25, "offpolicy_age_unit": 40,
                  "lstm_horizon": 2, "consistency_hidden": 8, "consistency_dim": 4, "lstm_hidden": 4},
        "model": {"hidden": [16]},
        "train": {"total_steps": 160, "eval_every": 0, "eval_episodes": 1, "checkpoint_every": 100, "log_every": 50},
        "log": {"tensorboard": False},
        "seed": 3,
    }
    config = load_config(str(write_config(tmp_path, data, "ez.yaml")))[0]
    full = train(config, tmp_path / "full")
    assert full["updates"] == (160 - 60) // 4
    assert train(config, tmp_path / "split", stop_at=120)["interrupted"]
    resumed = train(config, tmp_path / "split", resume=True)
    assert np.array_equal(resumed["agent"].net.flat_params, full["agent"].net.flat_params)
    assert np.array_equal(resumed["agent"].target.flat_params, full["agent"].target.flat_params)
    assert np.array_equal(resumed["agent"].replay.tree.priorities, full["agent"].replay.tree.priorities)


def test_conv_agent_state_round_trip():
    """The conv agent's whole state (conv network with LSTM and consistency heads, optimizer, target
    network, bool replay, generators) packed and unpacked into a fresh agent: both then take the same
    update. (The trainer resumes from exactly this; the end-to-end check on MinAtar, a real SIGTERM and
    --resume, is tests/test_resume_minatar.py.)"""
    from test_efficientzero_conv import minatar_spec

    from rlscratch.agent import Step
    from rlscratch.state import pack, unpack

    def make() -> MuZero:
        settings = dict(network="conv", conv_channels=3, reduced_channels=2, head_hidden=4, num_simulations=3,
                        value_support=3, reward_support=1, unroll_steps=2, td_steps=2, batch_size=4,
                        warmup_steps=6, replay_capacity=64, consistency_coef=2.0, value_prefix=True, lstm_hidden=3,
                        lstm_horizon=2, offpolicy_age_unit=4, reanalyze_fraction=0.5, reanalyze_network="target",
                        reanalyze_noise=True, value_target="target", target_update_interval=3)
        return MuZero(MuZeroConfig(**with_optim(settings)), minatar_spec(), ModelConfig(), np.random.default_rng(0))

    agent, rng = make(), np.random.default_rng(1)
    for t in range(10):
        obs = rng.random((2, 4, 4, 2)) < 0.3
        agent.observe(Step(obs, agent.act(obs), np.array([1.0, 0.0]), rng.random((2, 4, 4, 2)) < 0.3,
                           np.array([t == 5, False]), np.zeros(2, bool), {}))
    assert agent.updates > 0
    state = pack(**agent.components())
    fresh = make()
    unpack(state, **fresh.components())
    fresh.updates, fresh.env_steps, fresh.train_credit = agent.updates, agent.env_steps, agent.train_credit
    agent.train_step()
    fresh.train_step()
    assert np.array_equal(fresh.net.flat_params, agent.net.flat_params)
    assert np.array_equal(fresh.target.flat_params, agent.target.flat_params)
    assert np.array_equal(fresh.replay.obs, agent.replay.obs)


def test_mixed_value_target_uses_the_search_values_of_old_samples():
    """search_value_age 20 (env steps over 2 envs): windows whose start is >= 10 rows back take z_k =
    the stored search value of row t+k; newer ones keep the n-step return. By hand for env 1
    (no episode end): windows starting at rows 25 (age 8) and 19 (age 20)."""
    agent = ez_agent(search_value_age=20)
    fill(agent)
    env, start = np.array([1, 1]), np.array([25, 19])
    flags = agent._search_value(env, start)
    assert flags.tolist() == [False, True]
    window = agent.replay.window(env, start, agent.window)
    mixed = make_targets(window, 2, 3, 0.9, np.random.default_rng(0), search_value=flags)
    plain = make_targets(window, 2, 3, 0.9, np.random.default_rng(0))
    assert np.array_equal(mixed.target_value[0], plain.target_value[0])
    assert mixed.target_value[1] == pytest.approx(agent.replay.values[1, 19:22].astype(np.float64), rel=1e-12)
    r, v = agent.replay.rewards[1], agent.replay.values[1]
    z0 = r[19] + 0.9 * r[20] + 0.81 * r[21] + 0.729 * v[22]       # what the n-step target would have been
    assert plain.target_value[1, 0] == pytest.approx(z0, rel=1e-6) and abs(z0 - v[19]) > 1e-3
    assert ez_agent()._search_value(env, start) is None


@pytest.mark.slow
def test_efficientzero_learns_cartpole(tmp_path):
    """A short seeded run with every EfficientZero switch on (consistency, value prefix, off-policy
    correction, reanalysis with the target network and noise): the greedy policy of the searched
    model beats random play (about 22) by a wide margin. The settings of MuZero's own learning test
    (tests/test_muzero.py: 16 simulations, batch 64, K = 5, one update per env step, 2,000 steps)."""
    from conftest import write_config
    from threadpoolctl import threadpool_limits

    from rlscratch.config import load_config
    from rlscratch.trainer import train

    data = {
        "env": {"id": "CartPole-v1", "num_envs": 8},
        "agent": {"name": "efficientzero", "num_simulations": 16, "state_dim": 32, "batch_size": 64,
                  "warmup_steps": 400, "train_ratio": 1.0, "unroll_steps": 5, "td_steps": 10, "value_support": 20,
                  "reward_support": 5, "reanalyze_fraction": 0.1, "offpolicy_age_unit": 1000,
                  "target_update_interval": 100, "optim": {"lr": 3e-3}},
        "model": {"hidden": [64]},
        "train": {"total_steps": 2000, "eval_every": 0, "eval_episodes": 5, "checkpoint_every": 0, "log_every": 500},
        "log": {"tensorboard": False},
        "seed": 5,
    }
    config = load_config(str(write_config(tmp_path, data, "ez.yaml")))[0]
    with threadpool_limits(1):
        summary = train(config, tmp_path / "run")
    print("efficientzero greedy evaluation after 2000 steps:", summary["eval_mean"])
    assert summary["eval_mean"] > 100, summary["eval_mean"]


def test_cpu_split_per_env_step(monkeypatch):
    """The agent's cpu/*_ms metrics on a fake CPU clock: each acting search takes 1 s, each reanalysis
    search 2 s, each loss 3 s, and the envs 0.5 s between act and observe; with 2 envs and one update
    per observe that is, per env step, search 500 ms, reanalyze 1000, train 1500 (the loss, not the
    reanalysis inside the update), env 250 -- and nothing carried into the next observe."""
    clock = [0.0]
    monkeypatch.setattr(muzero_agent.time, "process_time", lambda: clock[0])
    agent = ez_agent(reanalyze_fraction=0.5, warmup_steps=4, train_ratio=0.5)

    def costs(seconds, call):
        def timed(*args, **kwargs):
            clock[0] += seconds
            return call(*args, **kwargs)
        return timed

    monkeypatch.setattr(agent, "_reanalyze_search", copy.copy(agent._reanalyze_search))
    agent._reanalyze_search.run = costs(2.0, MCTS.run.__get__(agent._reanalyze_search))
    monkeypatch.setattr(MCTS, "run", costs(1.0, MCTS.run))
    monkeypatch.setattr(muzero_agent, "unrolled_loss", costs(3.0, unrolled_loss))
    rng = np.random.default_rng(0)
    for _ in range(4):
        obs = rng.standard_normal((2, 3)).astype(np.float32)
        action = agent.act(obs)
        clock[0] += 0.5
        metrics = agent.observe(Step(obs=obs, action=action, reward=np.ones(2), next_obs=obs,
                                     terminated=np.zeros(2, bool), truncated=np.zeros(2, bool), info={}))
        trained = agent.env_steps >= 4
        assert metrics["cpu/search_ms"] == 500.0 and metrics["cpu/env_ms"] == 250.0
        assert metrics["cpu/reanalyze_ms"] == (1000.0 if trained else 0.0)
        assert metrics["cpu/train_ms"] == (1500.0 if trained else 0.0)
    assert agent.updates == 3


def test_target_values_when_no_window_reads_a_bootstrap_row():
    """Episodes that all terminate within n steps: every n-step sum ends at a terminal (worth 0), so
    the target network has no row to evaluate. The update must still run, with every target value 0
    -- an empty batch once reached the conv network (MinAtar Breakout with td_steps 10, whose first
    random episodes are short) and crashed it."""
    from test_efficientzero_conv import minatar_spec

    settings = dict(network="conv", conv_channels=3, reduced_channels=2, head_hidden=4, num_simulations=3,
                    value_support=3, reward_support=1, unroll_steps=2, td_steps=5, batch_size=4, warmup_steps=6,
                    replay_capacity=64, consistency_coef=2.0, value_prefix=True, lstm_hidden=3, lstm_horizon=2,
                    value_target="target")
    agent = MuZero(MuZeroConfig(**with_optim(settings)), minatar_spec(), ModelConfig(), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for t in range(12):   # both envs' episodes terminate every 3 steps, shorter than n = 5
        obs = rng.random((2, 4, 4, 2)) < 0.3
        agent.observe(Step(obs, agent.act(obs), np.array([1.0, 0.0]), rng.random((2, 4, 4, 2)) < 0.3,
                           np.full(2, t % 3 == 2), np.zeros(2, bool), {}))
    assert agent.updates > 0
    env, start = np.array([0, 1, 0, 1]), np.array([0, 1, 4, 8])
    window = agent.replay.window(env, start, agent.window)
    assert not rows_read(window, 2, 5, stored_values=True, policies=False).any()
    assert not agent._target_values(window, 5).any()
