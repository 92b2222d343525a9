"""MuZero's maths where a one-line slip would go unnoticed by learning tests: hand-computed loss
weights, importance weights and priorities (in the replay and after one agent update), the beta and
temperature schedules at their boundaries, Gumbel's interior selection and its small-spread
rescaling, the target network's refresh. Each case is small and fast (mutation testing runs these
many times: benchmarks/mutation.sh)."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import rlscratch.agents.muzero as muzero_agent
from rlscratch.agents.muzero import MuZero, MuZeroConfig
from test_muzero import TableModel, random_table  # tests/ is on sys.path (pytest prepend import mode)

import rlscratch.muzero.mcts as mcts_module
from rlscratch.agent import EnvSpec
from rlscratch.config import ModelConfig
from rlscratch.errors import ConfigError
from rlscratch.muzero.loss import UnrollBatch, unrolled_loss
from rlscratch.muzero.mcts import (
    MCTS,
    SearchConfig,
    completed_q_sigma,
    gumbel_scores,
    mixed_value,
    select_action,
    sequence_of_considered_visits,
)
from rlscratch.muzero.model import MuZeroNet
from rlscratch.muzero.replay import GameReplay
from rlscratch.muzero.support import expected_support, scalar_to_support, support_to_scalar
from rlscratch.muzero.targets import make_targets


# == the loss: every weight, by hand ===================================================================
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
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2,
                    reward_support=1).astype(np.float64)
    net.flat_params[:] = 0.0
    rng = np.random.default_rng(1)
    batch = UnrollBatch(
        obs=rng.standard_normal((2, 3)), actions=np.array([[0, 1], [1, 1]]),
        target_policy=rng.dirichlet(np.ones(2), (2, 3)), policy_mask=np.array([[1.0, 1, 0], [1, 0, 1]]),
        target_value=rng.uniform(-3, 3, (2, 3)), value_mask=np.array([[1.0, 1, 1], [0, 1, 1]]),
        target_reward=rng.uniform(-1, 1, (2, 3)), reward_mask=np.array([[1.0, 1, 0], [1, 0, 1]]),
        weights=np.array([1.0, 0.5]))
    result = unrolled_loss(net, batch, value_coef=0.25)
    log2, log3, log5 = math.log(2), math.log(3), math.log(5)
    assert result.policy_loss == pytest.approx(1.125 * log2, rel=1e-12)
    assert result.value_loss == pytest.approx(1.25 * log5, rel=1e-12)
    assert result.reward_loss == pytest.approx(0.375 * log3, rel=1e-12)
    assert result.loss == pytest.approx(1.125 * log2 + 0.3125 * log5 + 0.375 * log3, rel=1e-12)
    assert result.initial_value == pytest.approx([0.0, 0.0], abs=1e-12)
    # value_coef 0: the value term is gone from the loss and from the log
    assert unrolled_loss(net, batch, value_coef=0.0).loss == pytest.approx(1.125 * log2 + 0.375 * log3, rel=1e-12)


# == replay: importance weights and priorities by hand ======================================================
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


# == the agent's update ============================================================================================
def small_agent(num_envs: int = 2, **overrides) -> MuZero:
    settings = dict(num_simulations=3, state_dim=4, value_support=3, reward_support=1, unroll_steps=2, td_steps=2,
                    batch_size=8, warmup_steps=0, replay_capacity=400, value_target="search", discount=0.9,
                    priority_alpha=0.5, priority_eps=0.01, priority_beta=0.4, priority_beta_steps=1000)
    settings.update(overrides)
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2), num_envs=num_envs)
    return MuZero(MuZeroConfig(**settings), spec, ModelConfig(hidden=[8]), np.random.default_rng(0))


def fill_agent(agent: MuZero, steps: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    E = agent.replay.num_envs
    for t in range(steps):
        done = np.array([t % 11 == 10] + [False] * (E - 1))
        agent.replay.add(rng.standard_normal((E, 3)).astype(np.float32), rng.integers(0, 2, E), rng.uniform(0, 1, E),
                         rng.uniform(-2, 2, E), rng.dirichlet(np.ones(2), E), rng.standard_normal((E, 3)),
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
    # each env's last row has no successor yet (its z_0 is unknown): make sure the batch draws them
    agent.replay.update_priorities(np.array([29, 200 + 29]), np.array([1e4, 1e4]))
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
    assert not known.all() and known.any()
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


# == Gumbel MuZero's interior selection and rescaling ============================================================
def test_gumbel_interior_scores_by_hand():
    """Interior score pi'(a) - N(a) / (1 + sum_b N(b)), pi' = softmax(logits + sigma(q_hat)).

    node 1: prior (0.5, 0.3, 0.2), visits (3, 1, 1), equal Qs -> sigma = 0:
            (0.5 - 3/6, 0.3 - 1/6, 0.2 - 1/6) = (0, 0.1333, 0.0333)
    node 2: same prior, visits (1, 0, 0), Q(a0) = 2, network value 1: the unvisited actions are
            completed with (1 + 1 * 2) / 2 = 1.5, rescaled Qs (1, 0, 0), sigma = (50 + 1) 0.1 (1, 0, 0);
            pi' = (0.5 e^5.1, 0.3, 0.2) / sum, minus (1/2, 0, 0)."""
    search = MCTS(SearchConfig(num_simulations=4, gumbel=True), 3)
    search._allocate(1, (1,), np.dtype(np.float64))
    prior = np.array([0.5, 0.3, 0.2])
    search.prior[0, :3] = prior
    search.logits[0, :3] = np.log(prior)
    search.raw_value[0, :3] = [0.0, 0.0, 1.0]
    visits = np.array([[[0.0, 0, 0], [3, 1, 1], [1, 0, 0]]])
    q = np.array([[[0.0, 0, 0], [0.7, 0.7, 0.7], [2.0, 0, 0]]])
    scores = gumbel_scores(search, 3, visits, q)
    assert scores[0, 1] == pytest.approx([0.0, 0.3 - 1 / 6, 0.2 - 1 / 6], abs=1e-12)
    improved = np.array([0.5 * math.exp(5.1), 0.3, 0.2])
    improved /= improved.sum()
    assert scores[0, 2] == pytest.approx(improved - [0.5, 0.0, 0.0], abs=1e-12)


def test_completed_q_small_spread_is_not_stretched():
    """Qs that differ by less than 1e-8 are rescaled by 1e-8, not by their own spread: (0, 1e-9,
    5e-10) -> (0, 0.1, 0.05), times (50 + 1) 0.1 -- noise-level differences stay small."""
    sigma = completed_q_sigma(np.array([0.0, 1e-9, 5e-10]), np.ones(3), np.array(0.0), np.full(3, 1 / 3),
                              SearchConfig())
    assert sigma == pytest.approx(5.1 * np.array([0.0, 0.1, 0.05]), rel=1e-6)
    # a spread above the floor is rescaled to [0, 1] exactly
    sigma = completed_q_sigma(np.array([0.0, 2e-8, 1e-8]), np.ones(3), np.array(0.0), np.full(3, 1 / 3),
                              SearchConfig())
    assert sigma == pytest.approx(5.1 * np.array([0.0, 1.0, 0.5]), rel=1e-6)


def test_gumbel_root_answer_by_hand():
    """Two roots, three actions, two simulations (m = 2 considered), no Gumbel noise: the two
    largest logits are visited once each; the third action's Q is completed with the ROOT's
    network value and prior -- v_mix = (v + 2 (p0 q0 + p1 q1) / (p0 + p1)) / 3 -- and the policy is
    softmax(logits + sigma). Root 0 prefers a0, a1; root 1 prefers a2, a1."""
    roots = {0: ([0.5, 0.3, 0.2], 1.0), 1: ([0.1, 0.3, 0.6], -1.0)}
    children = {1: 2.0, 2: 0.0, 3: -5.0, 4: -5.0, 5: 1.0, 6: 3.0}   # leaf values by node id (A * root + a + 1)

    def table(node_id):
        return 0.0, [1 / 3, 1 / 3, 1 / 3], children.get(node_id, 0.0)

    model = TableModel(3, table, roots)
    search = MCTS(SearchConfig(num_simulations=2, discount=1.0, gumbel=True, max_considered_actions=2), 3)
    result = search.run(model, np.array([0.0, 1.0]), np.random.default_rng(0),
                        explore=False)
    assert result.visit_counts.tolist() == [[1, 1, 0], [0, 1, 1]]
    for b, (prior, v, q) in enumerate([([0.5, 0.3, 0.2], 1.0, [2.0, 0.0]), ([0.1, 0.3, 0.6], -1.0, [1.0, 3.0])]):
        prior = np.array(prior)
        visited = [0, 1] if b == 0 else [1, 2]
        v_mix = (v + 2 * (prior[visited] @ q) / prior[visited].sum()) / 3
        completed = np.full(3, v_mix)
        completed[visited] = q
        rescaled = (completed - completed.min()) / (completed.max() - completed.min())
        sigma = (50 + 1) * 0.1 * rescaled
        improved = prior * np.exp(sigma)
        assert result.policy[b] == pytest.approx(improved / improved.sum(), rel=1e-12), b
        assert result.action[b] == visited[int(np.argmax(q))]
    assert result.q_values[0, :2].tolist() == [2.0, 0.0] and result.q_values[1, 1:].tolist() == [1.0, 3.0]


def test_gumbel_ties_go_to_the_tie_noise_of_the_root():
    """Identical actions: the answer among the tied best is the one the root's own tie noise prefers."""
    model_roots = {0: ([0.5, 0.5], 0.0)}
    model = TableModel(2, lambda i: (0.0, [0.5, 0.5], 1.0), model_roots)
    for seed in range(6):
        search = MCTS(SearchConfig(num_simulations=4, gumbel=True), 2)
        result = search.run(model, np.array([0.0]), np.random.default_rng(seed), explore=False)
        assert result.visit_counts.tolist() == [[2, 2]]
        assert result.action[0] == int(np.argmax(search.tie_noise[0, 0]))


def test_gumbel_noise_scale():
    """g = gumbel_scale * Gumbel(0, 1), a fresh draw per root and action, in training only."""
    model = TableModel(3, lambda i: (0.0, [1 / 3] * 3, 0.0), {0: ([0.2, 0.3, 0.5], 0.0), 1: ([0.2, 0.3, 0.5], 0.0)})
    search = MCTS(SearchConfig(num_simulations=1, gumbel=True, gumbel_scale=2.5), 3)
    search.run(model, np.array([0.0, 1.0]), np.random.default_rng(7), explore=True)
    rng = np.random.default_rng(7)
    rng.random(search.tie_noise.shape)   # the search draws its tie-breaking offsets first
    assert search.gumbel == pytest.approx(2.5 * rng.gumbel(size=(2, 3)), rel=1e-12)


def test_mixed_value_rows_and_no_visits():
    """Row by row over a batch; with nothing visited the mix is the network value itself."""
    q = np.array([[1.0, 4.0, 0.0], [9.0, 9.0, 9.0]])
    visits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    prior = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    mixed = mixed_value(np.array([0.3, -2.0]), q, visits, prior)
    assert mixed == pytest.approx([(0.3 + 3 * (0.5 * 1 + 0.25 * 4) / 0.75) / 4, -2.0], rel=1e-12)


def test_support_keeps_float32_and_any_eps():
    probs = np.full((2, 5), 0.2, dtype=np.float32)
    probs[1] = [0.0, 0.0, 0.0, 0.5, 0.5]
    assert expected_support(probs, 2).dtype == np.float32
    assert expected_support(probs, 2) == pytest.approx([0.0, 1.5], abs=1e-6)
    x = np.array([-40.0, -1.0, 0.0, 2.5, 30.0])
    for eps in (0.001, 0.05):
        assert support_to_scalar(scalar_to_support(x, 10, eps=eps), 10, eps=eps) == pytest.approx(x, rel=1e-9)


# == reanalyze and the replay's own bookkeeping ================================================================
@pytest.mark.parametrize("value_target", ["search", "target"])
def test_reanalyze_searches_exactly_the_read_rows_without_noise(value_target):
    """The rows re-searched are the replay's ``reanalyze_rows`` for the agent's K and n -- with the
    bootstrap rows only when the targets read stored values -- and their new values are those of a
    noise-free search with the current network."""
    agent = small_agent(value_target=value_target, num_simulations=4)
    fill_agent(agent)
    env, start = np.array([0, 0, 1, 1]), np.array([2, 13, 5, 20])
    rng = copy.deepcopy(agent.rng)
    envs, slots = agent.replay.reanalyze_rows(env, start, 3, 2, 2, rng, stored_values=value_target == "search")
    with_bootstrap = agent.replay.reanalyze_rows(env, start, 3, 2, 2, copy.deepcopy(agent.rng), stored_values=True)
    assert (len(envs) < len(with_bootstrap[0])) == (value_target == "target")
    before = agent.replay.values.copy()
    assert agent.reanalyze(env, start, 3) == len(envs)
    changed = np.argwhere(agent.replay.values != before)
    assert sorted(map(tuple, changed)) == sorted(zip(envs.tolist(), slots.tolist()))
    fresh = MCTS(agent.search_config, 2).run(agent.net, agent.replay.obs[envs, slots], np.random.default_rng(5),
                                             explore=False)
    assert agent.replay.values[envs, slots] == pytest.approx(fresh.root_value, abs=1e-5)


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


def gumbel_root_search(batch: int = 2) -> MCTS:
    """A Gumbel search's arrays filled by hand (no model): root logits with different maxima per
    root, interior node 1 with other values, so a slip between node 0 and node 1 shows."""
    search = MCTS(SearchConfig(num_simulations=4, gumbel=True), 3)
    search._allocate(batch, (1,), np.dtype(np.float64))
    search.logits[:, 0] = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]][:batch]
    search.prior[:, 0] = np.exp(search.logits[:, 0]) / np.exp(search.logits[:, 0]).sum(axis=1, keepdims=True)
    search.logits[:, 1] = 7.0
    search.prior[:, 1] = [0.1, 0.1, 0.8]
    search.raw_value[:, 0] = [-4.0, 2.0][:batch]
    search.raw_value[:, 1] = 50.0
    search.gumbel[...] = [[0.3, -0.2, 0.1], [0.0, 0.5, -1.0]][:batch]
    return search


def test_gumbel_root_scores_by_hand():
    """g + (logits - max logits) + sigma(q_hat) for the actions with the considered visit count,
    sigma from the ROOT's value and prior (completing unvisited actions), -inf for the others."""
    search = gumbel_root_search()
    visits = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0]])
    q = np.array([[0.5, -1.0, 0.0], [1.0, 0.2, 0.4]])
    scores = mcts_module.gumbel_root_scores(search, visits, q, np.array([[1.0], [1.0]]))
    # root 0: v_mix = (-4 + 2 (p0 0.5 + p1 (-1)) / (p0 + p1)) / 3 completes a2
    p = search.prior[0, 0]
    v_mix = (-4.0 + 2 * (p[0] * 0.5 - p[1]) / (p[0] + p[1])) / 3
    completed = np.array([0.5, -1.0, v_mix])
    sigma = (50 + 1) * 0.1 * (completed - completed.min()) / (completed.max() - completed.min())
    expected = np.array([0.3, -0.2, 0.1]) + np.array([1.0, 2.0, 0.5]) - 2.0 + sigma
    assert scores[0, :2] == pytest.approx(expected[:2], rel=1e-12) and scores[0, 2] == -np.inf
    # root 1: everything visited; only a1, a2 have the considered count 1
    sigma = (50 + 2) * 0.1 * (np.array([1.0, 0.2, 0.4]) - 0.2) / 0.8
    expected = np.array([0.0, 0.5, -1.0]) + np.array([-1.0, 0.0, 3.0]) - 3.0 + sigma
    assert scores[1, 0] == -np.inf and scores[1, 1:] == pytest.approx(expected[1:], rel=1e-12)


def test_gumbel_answer_is_the_best_of_each_roots_most_visited():
    """Root 0's most visited actions are a0 (2 visits) and a1 (2); root 1's only a1 (3). Root 0's
    a2 (unvisited, best logits) and root 1's a0 must not win though their scores are higher."""
    search = gumbel_root_search()
    search.logits[:, 0] = [[0.0, 0.0, 9.0], [9.0, 0.0, 0.0]]
    search.gumbel[...] = [[0.0, 0.1, 0.0], [0.0, 0.0, 0.0]]
    visits = np.array([[2.0, 2.0, 0.0], [1.0, 3.0, 0.0]])
    q = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    result = mcts_module.gumbel_answer(search, visits, q, np.zeros(2))
    assert result.action.tolist() == [1, 1]


def test_gumbel_halving_index_stays_in_the_schedule():
    """The schedule has num_simulations + 1 entries (the last, 0, is read only after the final
    simulation): every simulation of a search reads its own entry."""
    search = MCTS(SearchConfig(num_simulations=8, gumbel=True, max_considered_actions=4), 4)
    assert search.considered_visits.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 0]


# == pUCT's root noise and answer; action selection ==================================================
def test_dirichlet_noise_per_root_and_none_without_a_fraction():
    model = TableModel(3, lambda i: (0.0, [1 / 3] * 3, 0.0), {0: ([0.2, 0.3, 0.5], 0.0)})
    search = MCTS(SearchConfig(num_simulations=3), 3)
    search.run(model, np.array([0.0, 0.0]), np.random.default_rng(0), explore=True)
    assert not np.allclose(search.prior[0, 0], search.prior[1, 0])      # a draw of its own per root
    # exploration_fraction 0: training's search is evaluation's, random draws included
    quiet = MCTS(SearchConfig(num_simulations=3, exploration_fraction=0.0), 3)
    quiet.run(model, np.array([0.0, 0.0]), np.random.default_rng(0), explore=True)
    noise = quiet.tie_noise.copy()
    quiet.run(model, np.array([0.0, 0.0]), np.random.default_rng(0), explore=False)
    assert np.array_equal(noise, quiet.tie_noise) and np.allclose(quiet.prior[:, 0], [0.2, 0.3, 0.5])


def test_puct_policy_is_each_roots_visit_distribution():
    model = TableModel(2, random_table(2, seed=4), {0: ([0.9, 0.1], 0.0), 1: ([0.5, 0.5], 1.0)})
    result = MCTS(SearchConfig(num_simulations=6), 2).run(model, np.array([0.0, 1.0]), np.random.default_rng(0),
                                                         explore=False)
    assert result.policy == pytest.approx(result.visit_counts / 6.0, rel=1e-12)


def test_select_action_by_hand(rng):
    """T = 0: the most visited, even by one visit; T = 0.5: P ~ N^2, (1, 3) -> (0.1, 0.9); each
    row draws on its own."""
    counts = np.array([[5.0, 4.0, 0.0], [0.0, 0.0, 5.0]])
    for _ in range(200):
        assert select_action(counts, 0.0, rng).tolist() == [0, 2]
    samples = np.array([select_action(np.array([[1.0, 3.0], [1.0, 3.0]]), 0.5, rng) for _ in range(4000)])
    assert np.mean(samples == 1) == pytest.approx(0.9, abs=0.015)
    assert (samples[:, 0] != samples[:, 1]).mean() == pytest.approx(2 * 0.9 * 0.1, abs=0.03)   # independent
    assert (np.array([select_action(counts, 1.0, rng) for _ in range(200)])[:, 1] == 2).all()


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


# == Gumbel MuZero against a plain reference ===============================================================
def reference_gumbel_search(model, obs, simulations: int, discount: float, considered: int, gumbel: np.ndarray,
                            tie: np.ndarray):
    """Gumbel MuZero written the plain way for one root -- one dict per node, numbered in creation
    order -- with the search's Gumbel noise and tie-breaking offsets (``tie[node, action]``) handed in:
    the root's sequential halving on g + logits + sigma, the interior rule pi' - N / (1 + sum N),
    sigma from ``completed_q_sigma`` (hand-checked on its own)."""
    config = SearchConfig()
    state, logits, value = model.initial_inference(obs)
    A = model.A

    def node(state, logits, reward, value):
        logits = np.asarray(logits, dtype=np.float64)
        return {"state": state, "logits": logits, "prior": np.exp(logits) / np.exp(logits).sum(), "reward": reward,
                "raw": value, "visits": 0, "value_sum": 0.0, "children": {}}

    nodes = [node(state, logits[0], 0.0, float(value[0]))]
    root = nodes[0]
    root["visits"], root["value_sum"] = 1, float(value[0])

    def stats(n):
        visits = np.array([n["children"][a]["visits"] if a in n["children"] else 0 for a in range(A)], dtype=float)
        mean = n["value_sum"] / n["visits"]
        q = np.array([n["children"][a]["reward"] + discount * n["children"][a]["value_sum"] / n["children"][a]["visits"]
                      if a in n["children"] else mean for a in range(A)])
        return visits, q, completed_q_sigma(q, visits, np.array(n["raw"]), n["prior"], config)

    schedule = sequence_of_considered_visits(min(considered, A), simulations)
    for i in range(simulations):
        current, path = root, [root]
        while True:
            visits, q, sigma = stats(current)
            index = nodes.index(current)
            if current is root:
                score = gumbel + current["logits"] - current["logits"].max() + sigma
                score = np.where(visits == schedule[i], score, -np.inf)
            else:
                improved = np.exp(current["logits"] + sigma)
                score = improved / improved.sum() - visits / (1 + visits.sum())
            action = int(np.argmax(score + tie[index]))
            if action not in current["children"]:
                break
            current = current["children"][action]
            path.append(current)
        next_state, reward, child_logits, child_value = model.recurrent_inference(current["state"], np.array([action]))
        leaf = node(next_state, child_logits[0], float(reward[0]), float(child_value[0]))
        nodes.append(leaf)
        current["children"][action] = leaf
        path.append(leaf)
        g = float(child_value[0])
        for n in reversed(path):
            n["value_sum"] += g
            n["visits"] += 1
            g = n["reward"] + discount * g
    visits, q, sigma = stats(root)
    best = np.where(visits == visits.max(), gumbel + root["logits"] - root["logits"].max() + sigma, -np.inf)
    improved = np.exp(root["logits"] + sigma)
    return visits, int(np.argmax(best + tie[0])), improved / improved.sum(), root["value_sum"] / root["visits"]


@pytest.mark.parametrize("n_actions,considered", [(3, 16), (4, 3)])
def test_batched_gumbel_matches_reference(n_actions, considered):
    """Random trees, three roots, with Gumbel noise: visit counts, action, policy target and root
    value of the batched search equal the plain reference's, root by root."""
    roots = {i: (np.random.default_rng(300 + i).dirichlet(np.ones(n_actions)), 0.3 * i - 0.5) for i in range(3)}
    model = TableModel(n_actions, random_table(n_actions, seed=13), roots)
    search = MCTS(SearchConfig(num_simulations=14, discount=0.95, gumbel=True, max_considered_actions=considered),
                  n_actions)
    result = search.run(model, np.arange(3.0), np.random.default_rng(2), explore=True)
    assert np.abs(search.gumbel).sum() > 0
    for b in range(3):
        visits, action, policy, value = reference_gumbel_search(model, np.array([float(b)]), 14, 0.95, considered,
                                                                search.gumbel[b], search.tie_noise[b])
        assert np.array_equal(result.visit_counts[b], visits), b
        assert result.action[b] == action
        assert result.policy[b] == pytest.approx(policy, rel=1e-9)
        assert result.root_value[b] == pytest.approx(value, rel=1e-12)
    assert int(search.depth.max()) >= 3    # the interior rule was exercised several levels down


def test_search_arrays_follow_the_batch_and_the_model():
    """Arrays are allocated for a batch on first use and reused while the batch, the state's shape
    and its dtype stay; any change reallocates (a float32 network's states stay float32)."""
    search = MCTS(SearchConfig(num_simulations=3), 2)
    table = TableModel(2, random_table(2, seed=1), {0: ([0.5, 0.5], 0.0), 1: ([0.5, 0.5], 0.0)})
    search.run(table, np.array([0.0, 1.0]), np.random.default_rng(0), explore=False)
    arrays = search.visits
    search.run(table, np.array([1.0, 0.0]), np.random.default_rng(0), explore=False)
    assert search.visits is arrays and search.states.shape == (2, 5, 1) and search.states.dtype == np.float64
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2, reward_support=1)
    search.run(net, np.zeros((2, 3), np.float32), np.random.default_rng(0), explore=False)
    assert search.states.shape == (2, 5, 4) and search.states.dtype == np.float32
    wide = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2, reward_support=1)
    wide.astype(np.float64)
    search.run(wide, np.zeros((2, 3)), np.random.default_rng(0), explore=False)
    assert search.states.shape == (2, 5, 4) and search.states.dtype == np.float64
    search.run(net, np.zeros((3, 3), np.float32), np.random.default_rng(0), explore=False)
    assert search.states.shape == (3, 5, 4) and search.states.dtype == np.float32


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


def test_puct_ties_go_to_the_tie_noise():
    """A uniform prior and no values yet: every action scores the same, and each root's first
    simulation takes the action its own tie-breaking offsets rank first."""
    model = TableModel(4, lambda i: (0.0, [0.25] * 4, 0.0), {0: ([0.25] * 4, 0.0)})
    for seed in range(4):
        search = MCTS(SearchConfig(num_simulations=1), 4)
        result = search.run(model, np.zeros(3), np.random.default_rng(seed), explore=False)
        assert result.visit_counts.argmax(axis=1).tolist() == search.tie_noise[:, 0].argmax(axis=1).tolist()


def test_root_prior_is_a_float64_softmax():
    """A float32 network's root logits are turned into a prior in float64 (the prior's own dtype)."""
    net = MuZeroNet(3, 2, np.random.default_rng(0), state_dim=4, hidden=[5], value_support=2, reward_support=1)
    net.prediction.layers[-1].params["W"][...] = np.random.default_rng(1).standard_normal((2 + 5, 5))
    obs = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    search = MCTS(SearchConfig(num_simulations=2), 2)
    search.run(net, obs, np.random.default_rng(0), explore=False)
    logits = net.initial_inference(obs)[1].astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert np.array_equal(search.prior[:, 0], expected / expected.sum(axis=1, keepdims=True))


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
