"""MuZero's search where a one-line slip would go unnoticed: Gumbel MuZero's root scores, answer,
interior rule and small-spread rescaling by hand, and the whole Gumbel search against a plain
reference; pUCT's root noise, ties and policy; action selection with a temperature; the search's
arrays. Each case is small and fast (mutation testing runs them many times)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_muzero import TableModel, random_table  # tests/ is on sys.path (pytest prepend import mode)

import rlscratch.muzero.mcts as mcts_module
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


def test_softmax_per_row_at_any_scale():
    out = mcts_module.softmax(np.array([[0.0, 1000.0], [-1000.0, -999.0]]))
    assert out == pytest.approx(np.array([[0.0, 1.0], [1 / (1 + math.e), math.e / (1 + math.e)]]), abs=1e-12)


def test_exploration_coefficient_by_hand():
    """sqrt(N) (c1 + log((N + c2 + 1) / c2)), with c2 = 2 so that the log term is large."""
    search = MCTS(SearchConfig(num_simulations=3, pb_c_init=1.25, pb_c_base=2.0), 2)
    expected = [math.sqrt(n) * (1.25 + math.log((n + 3) / 2)) for n in range(6)]
    assert search.exploration_coef == pytest.approx(expected, rel=1e-12)


def test_sequential_halving_schedule_for_16_actions():
    """m = 16, n = 64, log2 m = 4: 16 x 1 visit, then 8 x 2 more, 4 x 4 more, 2 x 8 more."""
    expected = [0] * 16 + [1] * 8 + [2] * 8 + [v for v in range(3, 7) for _ in range(4)] + \
        [v for v in range(7, 15) for _ in range(2)]
    assert sequence_of_considered_visits(16, 64) == expected
