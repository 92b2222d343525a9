"""MuZero's training maths where a one-line slip would go unnoticed by learning tests: every loss
weight by hand, importance weights and priorities (in the replay and after one agent update), the
beta and temperature schedules at their boundaries, the target network's refresh, the K-step targets
past an episode's end, the rows a reanalysis searches, the support's dtype and eps. Each case is
small and fast (mutation testing runs them many times). The search's: test_muzero_search_maths.py."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import rlscratch.agents.muzero as muzero_agent
from conftest import with_optim
from rlscratch.agents.muzero import MuZero, MuZeroConfig

from rlscratch.agent import EnvSpec
from rlscratch.config import ModelConfig
from rlscratch.errors import ConfigError
from rlscratch.muzero.loss import UnrollBatch, unrolled_loss
from rlscratch.muzero.mcts import MCTS, select_action
from rlscratch.muzero.model import MuZeroNet
from rlscratch.muzero.replay import GameReplay
from rlscratch.muzero.support import expected_support, scalar_to_support, support_to_scalar
from rlscratch.muzero.targets import make_targets


def zero_net_and_batch(value_mask: np.ndarray, reward_mask: np.ndarray) -> tuple[MuZeroNet, UnrollBatch]:
    """The by-hand loss cases' setting: every parameter 0, so every prediction is uniform (A = 2, value
    support 5, reward support 3) whatever the targets; K = 2, N = 2, policy masks (1,1,0) and (1,0,1),
    importance weights (1, 1/2); random targets and observations."""
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2,
                    reward_support=1).astype(np.float64)
    net.flat_params[:] = 0.0
    rng = np.random.default_rng(1)
    batch = UnrollBatch(
        obs=rng.standard_normal((2, 3)), actions=np.array([[0, 1], [1, 1]]),
        target_policy=rng.dirichlet(np.ones(2), (2, 3)), policy_mask=np.array([[1.0, 1, 0], [1, 0, 1]]),
        target_value=rng.uniform(-3, 3, (2, 3)), value_mask=value_mask,
        target_reward=rng.uniform(-1, 1, (2, 3)), reward_mask=reward_mask, weights=np.array([1.0, 0.5]))
    return net, batch


def test_loss_weights_by_hand():
    """With every parameter 0 all logits are 0, so each cross-entropy is log(number of classes)
    whatever its target: log 2 (policy), log 5 (value support S = 2), log 3 (reward support S = 1).
    K = 2: step weights c = (1, 1/2, 1/2), the reward of step k weighted 1/K = 1/2; value
    coefficient 1/4; importance weights (1, 1/2); the sum averaged over N = 2.

        sample 0 (w = 1):   policy masks (1, 1, 0)  ->  1 + 1/2          = 1.5 log 2
                            value  masks (1, 1, 1)  ->  (1 + 1/2 + 1/2)/4 = 0.5 log 5
                            reward masks (-, 1, 0)  ->  1/2              = 0.5 log 3
        sample 1 (w = 1/2): policy (1, 0, 1) -> 1.5 log 2;  value (0, 1, 1) -> 0.25 log 5;
                            reward (-, 0, 1) -> 0.5 log 3;  all times 1/2
        mean over N = 2:    policy 1.125 log 2, value 0.3125 log 5 (logged without its coefficient:
                            1.25 log 5), reward 0.375 log 3.
    """
    net, batch = zero_net_and_batch(value_mask=np.array([[1.0, 1, 1], [0, 1, 1]]),
                                    reward_mask=np.array([[1.0, 1, 0], [1, 0, 1]]))
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5)
    log2, log3, log5 = math.log(2), math.log(3), math.log(5)
    assert result.policy_loss == pytest.approx(1.125 * log2, rel=1e-12)
    assert result.value_loss == pytest.approx(1.25 * log5, rel=1e-12)
    assert result.reward_loss == pytest.approx(0.375 * log3, rel=1e-12)
    assert result.loss == pytest.approx(1.125 * log2 + 0.3125 * log5 + 0.375 * log3, rel=1e-12)
    assert result.initial_value == pytest.approx([0.0, 0.0], abs=1e-12)
    # value_coef 0: the value term is gone from the loss and from the log
    no_value = unrolled_loss(net, batch, value_coef=0.0, state_grad_scale=0.5).loss
    assert no_value == pytest.approx(1.125 * log2 + 0.375 * log3, rel=1e-12)


def four_step_replay(alpha: float, eps: float) -> GameReplay:
    replay = GameReplay(10, 1, (1,), 2, alpha=alpha, eps=eps)
    for t in range(4):
        replay.add(np.array([[t]]), np.array([0]), np.array([1.0]), np.array([0.0]), np.array([[0.5, 0.5]]),
                   np.array([[t + 1.0]]), np.array([False]), np.array([False]))
    return replay


def test_priorities_and_importance_weights_by_hand(rng):
    """errors (0.5, 1.5, 2.5, 3.5) + eps 0.5 = (1, 2, 3, 4); alpha = 0.5 -> tree priorities
    (1, sqrt 2, sqrt 3, 2), P = p / sum p; importance weights (N P)^-beta over the largest in the batch."""
    replay = four_step_replay(alpha=0.5, eps=0.5)
    assert np.array_equal(replay.tree.priorities[:4], [1.0] * 4)   # new rows: max priority 1 ** alpha
    replay.update_priorities(np.arange(4), np.array([0.5, -1.5, 2.5, 3.5]))   # |error|
    p = np.sqrt([1.0, 2.0, 3.0, 4.0])
    assert replay.tree.priorities[:4] == pytest.approx(p, rel=1e-12)
    assert replay.max_priority == 4.0     # before the exponent
    sample = replay.sample(64, rng, beta=0.4)
    probability = p / p.sum()
    raw = (4 * probability[sample.leaf]) ** -0.4
    assert sample.weights == pytest.approx(raw / raw.max(), rel=1e-12)
    assert sample.weights.max() == 1.0 and set(sample.leaf) == {0, 1, 2, 3}
    # a new row enters with the largest priority so far: 4 ** 0.5
    replay.add(np.array([[9.0]]), np.array([0]), np.array([1.0]), np.array([0.0]), np.array([[0.5, 0.5]]),
               np.array([[9.0]]), np.array([False]), np.array([False]))
    assert replay.tree.priorities[4] == pytest.approx(2.0)
    # beta = 0: no correction at all
    assert np.array_equal(replay.sample(16, rng, beta=0.0).weights, np.ones(16))


def small_agent(num_envs: int = 2, n_actions: int = 2, **overrides) -> MuZero:
    settings = dict(num_simulations=3, state_dim=4, value_support=3, reward_support=1, unroll_steps=2, td_steps=2,
                    batch_size=8, warmup_steps=0, replay_capacity=400, value_target="search", discount=0.9,
                    priority_alpha=0.5, priority_eps=0.01, priority_beta=0.4, priority_beta_steps=1000)
    settings.update(overrides)
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(n_actions), num_envs=num_envs)
    return MuZero(MuZeroConfig(**with_optim(settings)), spec, ModelConfig(hidden=[8]), np.random.default_rng(0))


def fill_agent(agent: MuZero, steps: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    E = agent.replay.num_envs
    for t in range(steps):
        done = np.array([t % 11 == 10] + [False] * (E - 1))
        A = agent.n_actions
        agent.replay.add(rng.standard_normal((E, 3)).astype(np.float32), rng.integers(0, A, E), rng.uniform(0, 1, E),
                         rng.uniform(-2, 2, E), rng.dirichlet(np.ones(A), E), rng.standard_normal((E, 3)),
                         done, np.zeros(E, bool))


def planned_sample(agent: MuZero):
    """The sample and targets the agent's next update will draw (from a copy of its generator)."""
    rng = copy.deepcopy(agent.rng)
    sample = agent.replay.sample(agent.config.batch_size, rng, agent._beta())
    window = agent.replay.window(sample.env, sample.start, agent.window)
    c = agent.config
    return sample, make_targets(window, c.unroll_steps, c.td_steps, c.discount, rng), window


def test_update_sets_priorities_to_the_value_error(monkeypatch):
    """After one update the drawn rows' priorities are (|v_0 - z_0| + eps)^alpha, with v_0 the
    network's value before the step and z_0 the n-step target; rows whose z_0 is unknown keep theirs.
    The loss gets the sample's importance weights."""
    agent = small_agent()
    fill_agent(agent)
    # heads away from zero, so v_0 is not 0 (|v_0 - z_0| must differ from |v_0 + z_0|)
    agent.net.prediction.layers[-1].params["W"][...] = np.random.default_rng(4).standard_normal(
        agent.net.prediction.layers[-1].params["W"].shape)
    leaves = np.flatnonzero(agent.replay.tree.priorities)
    agent.replay.update_priorities(leaves, np.random.default_rng(3).uniform(0, 4, len(leaves)))
    # each env's last row has no successor yet (its z_0 is unknown), and the row before it has z_0
    # but no z_1: make sure the batch draws them
    agent.replay.update_priorities(np.array([28, 29, 200 + 28, 200 + 29]), np.full(4, 200.0))
    agent.env_steps = 500      # beta halfway: 0.4 + 0.6 * 0.5
    assert agent._beta() == pytest.approx(0.7)
    sample, targets, window = planned_sample(agent)
    v0 = agent.net.initial_inference(window.obs[:, 0])[2].astype(np.float64)
    before = agent.replay.tree.priorities.copy()
    seen = {}

    def spy(net, batch, **kw):
        seen["batch"] = batch
        return unrolled_loss(net, batch, **kw)

    monkeypatch.setattr(muzero_agent, "unrolled_loss", spy)
    agent.train_step()
    assert np.array_equal(seen["batch"].weights, sample.weights) and seen["batch"].weights.min() < 1.0
    known = targets.value_mask[:, 0] > 0
    assert not known.all() and (known & (targets.value_mask[:, 1] == 0)).any()
    assert np.abs(v0[known]).min() > 1e-3
    expected = (np.abs(v0 - targets.target_value[:, 0]) + 0.01) ** 0.5
    after = agent.replay.tree.priorities
    assert after[sample.leaf[known]] == pytest.approx(expected[known], abs=2e-4)   # v_0: float32 net
    untouched = np.setdiff1d(np.arange(len(after)), sample.leaf[known])
    assert np.array_equal(after[untouched], before[untouched])


def test_update_without_prioritized_replay_uses_unit_weights(monkeypatch):
    agent = small_agent(prioritized=False)
    fill_agent(agent)
    agent.replay.update_priorities(np.array([0]), np.array([100.0]))   # alpha 0: still uniform
    seen = {}
    monkeypatch.setattr(muzero_agent, "unrolled_loss", lambda net, batch, **kw: seen.setdefault(
        "batch", batch) and unrolled_loss(net, batch, **kw))
    agent.train_step()
    assert np.array_equal(seen["batch"].weights, np.ones(8))


def test_beta_schedule_boundaries():
    agent = small_agent(priority_beta=0.4, priority_beta_steps=1000)
    for steps, beta in [(0, 0.4), (250, 0.55), (999, 0.4 + 0.6 * 0.999), (1000, 1.0), (5000, 1.0)]:
        agent.env_steps = steps
        assert agent._beta() == pytest.approx(beta, rel=1e-12), steps


def test_temperature_schedule_boundaries(monkeypatch):
    """[[0, 1], [100, 0.5], [200, 0.25]] (given unsorted): T changes exactly at steps 100 and 200;
    acting in training samples with it, evaluation plays greedily (T = 0)."""
    agent = small_agent(temperature_schedule=[[200, 0.25], [0, 1.0], [100, 0.5]])
    for steps, t in [(0, 1.0), (99, 1.0), (100, 0.5), (199, 0.5), (200, 0.25), (10**6, 0.25)]:
        agent.env_steps = steps
        assert agent.temperature() == t, steps
    # before the first listed step, the first temperature applies
    late = small_agent(temperature_schedule=[[50, 0.5], [100, 0.1]])
    assert late.temperature() == 0.5
    temperatures = []
    monkeypatch.setattr(muzero_agent, "select_action",
                        lambda visits, t, rng: temperatures.append(t) or select_action(visits, t, rng))
    agent.env_steps = 150
    agent.act(np.zeros((2, 3)), explore=True)
    agent.act(np.zeros((2, 3)), explore=False)
    assert temperatures == [0.5, 0.0]
    for bad in ([], [[0, -1.0]]):
        with pytest.raises(ConfigError, match=r"^agent\.temperature_schedule: needs at least one \[env_step, "
                                              r"temperature >= 0\] pair$"):
            small_agent(temperature_schedule=bad)
    for bad in ([["x", 1.0]], [[0]]):
        with pytest.raises(ConfigError, match=r"^agent\.temperature_schedule: expected \[\[env_step, "
                                              r"temperature\], \.\.\.\], got "):
            small_agent(temperature_schedule=bad)
    assert small_agent(temperature_schedule=[[0, 0.0]]).temperature() == 0.0    # greedy from the start: allowed


def test_target_network_is_refreshed_every_interval():
    """value_target: target -- the target network equals the online one right after every
    ``target_update_interval``-th update (3 here), and only then."""
    for interval in (3, 4):
        agent = small_agent(value_target="target", target_update_interval=interval)
        fill_agent(agent)
        assert np.array_equal(agent.target.flat_params, agent.net.flat_params)   # a copy at the start
        for update in range(1, 10):
            agent.train_step()
            assert agent.updates == update
            same = np.array_equal(agent.target.flat_params, agent.net.flat_params)
            assert same == (update % interval == 0), (interval, update)


def test_target_network_values_are_the_bootstrap(monkeypatch):
    """With a target network, z_0 bootstraps from its values, not from the stored search values."""
    agent = small_agent(value_target="target")
    fill_agent(agent)
    agent.replay.values[...] = 1000.0    # would dominate every target if read
    seen = {}
    monkeypatch.setattr(muzero_agent, "unrolled_loss", lambda net, batch, **kw: seen.setdefault(
        "batch", batch) and unrolled_loss(net, batch, **kw))
    agent.train_step()
    assert np.abs(seen["batch"].target_value).max() < 100


def test_reanalyze_share_and_metric():
    """reanalyze_fraction 0.5 of a batch of 8: four windows re-searched at their read rows."""
    agent = small_agent(reanalyze_fraction=0.5)
    fill_agent(agent)
    before = agent.replay.values.copy()
    metrics = agent.train_step()
    changed = int((agent.replay.values != before).sum())
    assert metrics["train/reanalyzed_rows"] == changed and 4 <= changed <= 4 * 5
    plain = small_agent()
    fill_agent(plain)
    assert "train/reanalyzed_rows" not in plain.train_step()


def test_support_keeps_float32_and_any_eps():
    probs = np.full((2, 5), 0.2, dtype=np.float32)
    probs[1] = [0.0, 0.0, 0.0, 0.5, 0.5]
    assert expected_support(probs, 2).dtype == np.float32
    assert expected_support(probs, 2) == pytest.approx([0.0, 1.5], abs=1e-6)
    x = np.array([-40.0, -1.0, 0.0, 2.5, 30.0])
    for eps in (0.001, 0.05):
        assert support_to_scalar(scalar_to_support(x, 10, eps=eps), 10, eps=eps) == pytest.approx(x, rel=1e-9)


@pytest.mark.parametrize("value_target", ["search", "target"])
def test_reanalyze_searches_exactly_the_read_rows_without_noise(value_target):
    """The rows re-searched are the replay's ``reanalyze_rows`` for the agent's K and n -- with the
    bootstrap rows only when the targets read stored values -- and their new values are those of a
    noise-free search with the current network."""
    agent = small_agent(value_target=value_target, num_simulations=12, n_actions=4)
    fill_agent(agent)
    for layer in (agent.net.prediction.layers[-1], agent.net.dynamics_net.layers[-1]):   # heads away from 0
        layer.params["W"][...] = np.random.default_rng(6).standard_normal(layer.params["W"].shape)
    env, start = np.array([0, 0, 1, 1]), np.array([2, 13, 5, 20])
    rng = copy.deepcopy(agent.rng)
    envs, slots = agent.replay.reanalyze_rows(env, start, 3, 2, 2, rng, stored_values=value_target == "search")
    with_bootstrap = agent.replay.reanalyze_rows(env, start, 3, 2, 2, copy.deepcopy(agent.rng), stored_values=True)
    assert (len(envs) < len(with_bootstrap[0])) == (value_target == "target")
    before = agent.replay.values.copy()
    assert agent.reanalyze(env, start, 3) == len(envs)
    changed = np.argwhere(agent.replay.values != before)
    assert sorted(map(tuple, changed)) == sorted(zip(envs.tolist(), slots.tolist()))
    fresh = MCTS(agent.search_config, 4).run(agent.net, agent.replay.obs[envs, slots], np.random.default_rng(5),
                                             explore=False)
    assert agent.replay.values[envs, slots] == pytest.approx(fresh.root_value, abs=1e-5)
    step = agent.replay.kind[envs, slots] == 0
    assert agent.replay.policies[envs, slots][step] == pytest.approx(fresh.policy[step], abs=1e-6)


def test_reanalyze_counts_single_and_no_rows():
    """A window whose episode ends right after its first row reads one row; count 0 reads none."""
    agent = small_agent(value_target="target")
    fill_agent(agent)            # env 0's first episode: rows 0-10 are steps, row 11 its final row
    assert agent.replay.kind[0, 11] != 0 and agent.replay.kind[0, 10] == 0
    before = agent.replay.values.copy()
    assert agent.reanalyze(np.array([0]), np.array([10]), 1) == 1
    assert np.argwhere(agent.replay.values != before).tolist() == [[0, 10]]
    assert agent.reanalyze(np.array([0]), np.array([10]), 0) == 0


def test_refresh_keeps_the_final_rows_policy():
    replay = GameReplay(20, 1, (1,), 2)
    replay.add(np.zeros((1, 1)), np.array([1]), np.array([1.0]), np.array([0.5]), np.array([[0.2, 0.8]]),
               np.ones((1, 1)), np.array([False]), np.array([True]), np.array([3.0]))
    assert replay.kind[0, :2].tolist() == [0, 2]
    replay.refresh(np.array([0, 0]), np.array([0, 1]), np.array([7.0, 9.0]), np.array([[0.6, 0.4], [0.5, 0.5]]))
    assert replay.values[0, :2].tolist() == [7.0, 9.0]
    assert replay.policies[0, 0] == pytest.approx([0.6, 0.4]) and replay.policies[0, 1].tolist() == [0.0, 0.0]


def test_replay_checkpoint_round_trip_and_mismatch():
    replay = four_step_replay(alpha=0.5, eps=0.5)
    replay.update_priorities(np.arange(4), np.array([0.5, 1.5, 2.5, 3.5]))
    state = replay.state_dict()
    other = GameReplay(10, 1, (1,), 2, alpha=0.5, eps=0.5)
    other.load_state_dict(state)
    for name in ("obs", "actions", "rewards", "values", "policies", "kind", "head"):
        assert np.array_equal(getattr(other, name), getattr(replay, name)), name
    assert np.array_equal(other.tree.priorities, replay.tree.priorities) and other.max_priority == 4.0
    assert other.tree.total == pytest.approx(replay.tree.total)
    state["obs"] = state["obs"][:, :3]
    with pytest.raises(ValueError, match="replay 'obs': saved float32\\[1, 3, 1\\], expected float32\\[1, 10, 1\\]"):
        GameReplay(10, 1, (1,), 2).load_state_dict(state)
    # the saved state is a copy: writing on after saving does not change it
    saved = replay.state_dict()
    replay.refresh(np.array([0]), np.array([0]), np.array([42.0]), np.array([[1.0, 0.0]]))
    assert saved["values"][0, 0] == 0.0


def test_priorities_are_computed_in_float64():
    """A float32 error (the network's precision) still gets eps added in float64."""
    replay = four_step_replay(alpha=1.0, eps=1e-9)
    replay.update_priorities(np.array([2]), np.array([1.0], dtype=np.float32))
    assert replay.tree.priorities[2] == 1.0 + 1e-9


def test_make_targets_needs_a_long_enough_window():
    replay = GameReplay(50, 1, (1,), 2)
    replay.add(np.zeros((1, 1)), np.array([0]), np.array([1.0]), np.array([0.0]), np.array([[0.5, 0.5]]),
               np.zeros((1, 1)), np.array([False]), np.array([False]))
    for length, ok in [(5, False), (6, True)]:     # K = 2, n = 3: K + n + 1 = 6 rows
        window = replay.window(np.array([0]), np.array([0]), length)
        if ok:
            make_targets(window, 2, 3, 0.9, np.random.default_rng(0))
        else:
            with pytest.raises(ValueError, match="a window of 5 rows cannot give 2 unroll steps with 3-step targets"):
                make_targets(window, 2, 3, 0.9, np.random.default_rng(0))


def test_targets_past_an_episode_end():
    """Actions past a termination are random legal actions (each drawn on its own), and make_targets
    leaves the importance weights at 1."""
    replay = GameReplay(400, 1, (1,), 3)
    for _ in range(60):   # one-step episodes: every window's rows 1.. lie past a termination
        replay.add(np.zeros((1, 1)), np.array([0]), np.array([1.0]), np.array([0.0]), np.full((1, 3), 1 / 3),
                   np.zeros((1, 1)), np.array([True]), np.array([False]))
    starts = np.arange(0, 100, 2)
    window = replay.window(np.zeros(50, int), starts, 6)
    b = make_targets(window, 4, 1, 0.9, np.random.default_rng(0))
    assert (b.actions[:, 0] == 0).all()
    past = b.actions[:, 1:]
    assert set(past.ravel().tolist()) == {0, 1, 2}
    assert len({tuple(row) for row in past.tolist()}) > 15    # of 27 combinations
    assert np.array_equal(b.weights, np.ones(50))
    assert b.reward_mask[:, 1:].all() and b.target_reward[:, 2:].sum() == 0    # absorbing: reward 0, trained


def test_reanalyze_rows_of_the_whole_batch_cover_every_window(rng):
    """count = batch size: every window, each once (a draw without replacement)."""
    replay = GameReplay(4 * 30, 4, (1,), 2)
    for _ in range(30):
        replay.add(np.zeros((4, 1)), np.zeros(4, int), np.ones(4), np.zeros(4), np.full((4, 2), 0.5), np.zeros((4, 1)),
                   np.zeros(4, bool), np.zeros(4, bool))
    env, start = np.array([0, 1, 2, 3, 0, 2]), np.array([0, 5, 10, 15, 20, 25])
    envs, slots = replay.reanalyze_rows(env, start, 6, 1, 1, rng, stored_values=False)
    assert sorted(zip(envs.tolist(), slots.tolist())) == sorted(
        (e, s + k) for e, s in zip(env.tolist(), start.tolist()) for k in (0, 1))


def test_reanalyze_rows_read_with_their_own_k_and_n(rng):
    """K = 1, n = 3 (not interchangeable), values from the store: per window the policy rows t, t+1
    and the bootstrap rows t+3, t+4."""
    replay = GameReplay(2 * 40, 2, (1,), 2)
    for _ in range(40):
        replay.add(np.zeros((2, 1)), np.zeros(2, int), np.ones(2), np.zeros(2), np.full((2, 2), 0.5), np.zeros((2, 1)),
                   np.zeros(2, bool), np.zeros(2, bool))
    envs, slots = replay.reanalyze_rows(np.array([0, 1]), np.array([4, 20]), 2, 1, 3, rng, stored_values=True)
    assert sorted(zip(envs.tolist(), slots.tolist())) == [(0, 4), (0, 5), (0, 7), (0, 8), (1, 20), (1, 21), (1, 23),
                                                          (1, 24)]


def test_update_passes_its_settings_and_reports_its_metrics(monkeypatch):
    """The loss gets the configured value coefficient and state-gradient scale; the metrics are the
    loss parts, the gradient norm before clipping, the mean z_0 and the learning rate."""
    agent = small_agent(value_coef=0.7, state_grad_scale=0.3, max_grad_norm=0.0)
    fill_agent(agent)
    _, targets, _ = planned_sample(agent)
    seen = {}

    def spy(net, batch, **kw):
        seen.update(kw)
        seen["result"] = unrolled_loss(net, batch, **kw)
        return seen["result"]

    monkeypatch.setattr(muzero_agent, "unrolled_loss", spy)
    metrics = agent.train_step()
    assert seen["value_coef"] == 0.7 and seen["state_grad_scale"] == 0.3
    result = seen["result"]
    assert metrics == {"loss/total": result.loss, "loss/policy": result.policy_loss, "loss/value": result.value_loss,
                       "loss/reward": result.reward_loss, "train/grad_norm": 0.0,
                       "train/value_target": pytest.approx(targets.target_value[:, 0].mean(), rel=1e-12),
                       "train/lr": agent.optimizer.lr}


def test_update_clips_the_gradient_norm():
    """max_grad_norm 0.5: the step uses the gradient scaled to norm 0.5 and reports the norm before."""
    for limit in (0.5, 0.0):
        agent = small_agent(max_grad_norm=limit)
        fill_agent(agent)
        metrics = agent.train_step()
        norm = float(np.linalg.norm(agent.net.flat_grads))
        if limit:
            assert metrics["train/grad_norm"] > 0.5 and norm == pytest.approx(0.5, rel=1e-5)
        else:
            assert metrics["train/grad_norm"] == 0.0 and norm > 0.5


def test_replay_rows_as_stored():
    """What a vector step writes: float32 rows (uint8 kinds); a final row holds the next observation,
    no action (0), no reward, and a value -- the given one for a truncation, 0 for a termination even
    when values are handed in; priorities (|error| + 1e-6)^1 by default; at least 2 slots per env."""
    replay = GameReplay(40, 3, (2,), 2)
    assert (replay.rewards.dtype, replay.values.dtype, replay.policies.dtype, replay.kind.dtype) == (
        np.float32, np.float32, np.float32, np.uint8)
    replay.add(np.ones((3, 2)), np.array([1, 1, 1]), np.array([2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0]),
               np.full((3, 2), 0.5), np.array([[8.0, 8.5], [9.0, 9.5], [7.0, 7.5]]), np.array([True, False, False]),
               np.array([False, True, False]), np.array([11.0, 12.0, 13.0]))
    assert replay.head.tolist() == [2, 2, 1] and replay.kind[:2, 1].tolist() == [1, 2]
    assert replay.obs[0, 1].tolist() == [8.0, 8.5] and replay.obs[1, 1].tolist() == [9.0, 9.5]
    assert replay.values[:2, 1].tolist() == [0.0, 12.0]
    assert replay.actions[:2, 1].tolist() == [0, 0] and replay.rewards[:2, 1].tolist() == [0.0, 0.0]
    assert replay.policies[:2, 1].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    replay.update_priorities(np.array([0]), np.array([-3.0]))
    assert replay.tree.priorities[0] == 3.0 + 1e-6
    assert GameReplay(2, 4, (1,), 2).per_env == 2


def test_window_with_the_termination_in_its_last_column():
    replay = GameReplay(20, 1, (1,), 2)
    for t in range(3):
        replay.add(np.zeros((1, 1)), np.array([0]), np.array([1.0]), np.array([0.0]), np.full((1, 2), 0.5),
                   np.zeros((1, 1)), np.array([t == 2]), np.array([False]))
    window = replay.window(np.array([0]), np.array([0]), 4)     # rows 0-2 steps, row 3 the final row
    assert window.status[0].tolist() == [0, 0, 0, 1] and window.terminated.tolist() == [True]


def test_loss_keeps_the_network_dtype_for_v0():
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2, reward_support=1)
    rng = np.random.default_rng(1)
    batch = UnrollBatch(
        obs=rng.standard_normal((2, 3)).astype(np.float32), actions=np.array([[0], [1]]),
        target_policy=np.full((2, 2, 2), 0.5), policy_mask=np.ones((2, 2)), target_value=np.zeros((2, 2)),
        value_mask=np.ones((2, 2)), target_reward=np.zeros((2, 2)), reward_mask=np.ones((2, 2)), weights=np.ones(2))
    assert unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5).initial_value.dtype == np.float32


def test_reward_targets_line_up_with_their_steps():
    """Reward logits fixed by the dynamics head's bias b = (0, 1, 2) (its weights 0): every reward
    prediction is softmax(b), so the reward loss is sum_k 1/K (-twohot(u_k) . log softmax(b)),
    and u_1, u_2 (not u_0, a placeholder) are what it reads."""
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2,
                    reward_support=1).astype(np.float64)
    head = net.dynamics_net.layers[-1]
    head.params["W"][4:] = 0.0
    head.params["b"][4:] = [0.0, 1.0, 2.0]
    log_p = np.array([0.0, 1.0, 2.0]) - math.log(1 + math.e + math.e ** 2)
    u = np.array([[-40.0, 0.0, 3.0]])          # column 0 is never a reward target
    batch = UnrollBatch(
        obs=np.zeros((1, 3)), actions=np.array([[0, 1]]), target_policy=np.full((1, 3, 2), 0.5),
        policy_mask=np.ones((1, 3)), target_value=np.zeros((1, 3)), value_mask=np.ones((1, 3)),
        target_reward=u, reward_mask=np.ones((1, 3)), weights=np.ones(1))
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5)
    twohot = scalar_to_support(u[0, 1:], 1)
    assert result.reward_loss == pytest.approx(0.5 * -(twohot @ log_p).sum(), rel=1e-12)
    assert unrolled_loss(net, batch, value_coef=0.0, state_grad_scale=0.5).value_loss == 0.0
