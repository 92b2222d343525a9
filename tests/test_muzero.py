"""MuZero's batched search: golden trees computed by hand, agreement with a plain reference
implementation and between batched and single roots, and its pieces (min-max normalisation,
Dirichlet noise, sequential halving, completed Q, temperature). The fakes here (TableModel,
random_table) serve test_muzero_search_maths.py too. Model and loss: test_muzero_model.py; replay
and targets: test_muzero_replay.py; the agent: test_muzero_agent.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscratch.muzero.mcts import (
    MCTS,
    SearchConfig,
    completed_q_sigma,
    mixed_value,
    normalize_q,
    select_action,
    sequence_of_considered_visits,
    softmax,
)


# == search: fakes ===================================================================================
class TableModel:
    """A model whose hidden state is a node id: the root's id is the observation, and action a from
    node i leads to node i * A + a + 1, whose (reward, prior, value) the table gives."""

    def __init__(self, n_actions: int, table: dict, roots: dict) -> None:
        self.A, self.table, self.roots = n_actions, table, roots
        self.leaf_batches: list[int] = []

    def initial_inference(self, obs):
        ids = np.asarray(obs, dtype=np.float64).reshape(-1, 1)
        prior = np.array([self.roots[int(i)][0] for i in ids[:, 0]], dtype=np.float64)
        return ids, np.log(prior), np.array([self.roots[int(i)][1] for i in ids[:, 0]], dtype=np.float64)

    def recurrent_inference(self, state, action):
        self.leaf_batches.append(len(state))
        ids = state[:, 0].astype(np.int64) * self.A + np.asarray(action) + 1
        rows = [self.table(int(i)) if callable(self.table) else self.table[int(i)] for i in ids]
        reward = np.array([r[0] for r in rows], dtype=np.float64)
        logits = np.log(np.array([r[1] for r in rows], dtype=np.float64))
        value = np.array([r[2] for r in rows], dtype=np.float64)
        return ids[:, None].astype(np.float64), reward, logits, value


def random_table(n_actions: int, seed: int):
    """Deterministic pseudo-random (reward, prior, value) for any node id."""
    def row(node_id: int):
        g = np.random.default_rng([seed, node_id])
        return g.uniform(-1, 1), g.dirichlet(np.ones(n_actions)), g.uniform(-2, 2)
    return row


def reference_search(model, obs, num_simulations: int, discount: float, c1=1.25, c2=19652.0, delta=0.01):
    """MuZero's search written the plain way -- one dict per node, one root, the pseudocode's loops
    -- with this module's conventions (a node's value sum starts with its network value, which counts
    as a visit; unvisited children take the parent's mean; bounds over every Q on updated paths)."""
    state, logits, value = model.initial_inference(obs)
    root = {"state": state, "prior": softmax(logits[0]), "reward": 0.0, "visits": 1, "value_sum": float(value[0]),
            "children": {}}
    low, high = math.inf, -math.inf

    def mean(node):
        return node["value_sum"] / node["visits"]

    for _ in range(num_simulations):
        node, path = root, [root]
        while True:
            scores = []
            for a in range(model.A):
                child = node["children"].get(a)
                q = child["reward"] + discount * mean(child) if child else mean(node)
                qn = 0.0 if high < low else min(max((q - low) / max(high - low, delta), 0.0), 1.0)
                visits, n = (child["visits"] if child else 0), node["visits"]
                scores.append(qn + node["prior"][a] * math.sqrt(n) * (c1 + math.log((n + c2 + 1) / c2)) / (1 + visits))
            action = int(np.argmax(scores))
            if action not in node["children"]:
                break
            node = node["children"][action]
            path.append(node)
        next_state, reward, child_logits, child_value = model.recurrent_inference(node["state"], np.array([action]))
        leaf = {"state": next_state, "prior": softmax(child_logits[0]), "reward": float(reward[0]), "visits": 0,
                "value_sum": 0.0, "children": {}}
        node["children"][action] = leaf
        path.append(leaf)
        g = float(child_value[0])
        for n in reversed(path):
            n["value_sum"] += g
            n["visits"] += 1
            g = n["reward"] + discount * g
        for n in path[1:]:
            q = n["reward"] + discount * mean(n)
            low, high = min(low, q), max(high, q)
    visits = np.array([root["children"][a]["visits"] if a in root["children"] else 0 for a in range(model.A)])
    return visits, mean(root)


# == search: golden trees, computed by hand =============================================================
def test_golden_tree_puct():
    """Three simulations, two actions, gamma = 0.9. Root: prior (0.6, 0.4), value 0.
    c(N) = 1.25 + log((N + 19653) / 19652).

    sim 1: nothing seen (all Qn = 0): scores 0.6 c(1) > 0.4 c(1) -> a0. Leaf 1: r = 0, v = 1.
           backup: node1 += 1; root += 0 + 0.9 * 1 = 0.9.  Q(root, a0) = 0.9; bounds [0.9, 0.9].
    sim 2: root N = 2, sqrt(2) c(2) = 1.76798.
           a0: Qn = 0 (range floored at 0.01), u = 0.6 * 1.76798 / 2 = 0.5304
           a1: unvisited, Q = root mean 0.9 / 2 = 0.45 -> Qn clipped to 0, u = 0.4 * 1.76798 = 0.7072 -> a1.
           Leaf 2: r = 0.5, v = -1. root += 0.5 + 0.9 * (-1) = -0.4.  Q(root, a1) = -0.4; bounds [-0.4, 0.9].
    sim 3: root N = 3, sqrt(3) c(3) = 2.16542.
           a0: Qn = (0.9 + 0.4) / 1.3 = 1, u = 0.6 * 2.16542 / 2 = 0.6496 -> 1.6496
           a1: Qn = 0, u = 0.4 * 2.16542 / 2 = 0.4331 -> a0.
           node1 (N = 1, prior (0.3, 0.7), children unvisited: Q = its mean 1 -> Qn clipped 1 for both):
           the prior decides -> a1. Leaf 3: r = 2, v = 0. node1 += 2 + 0.9 * 0 = 2; root += 0 + 0.9 * 2 = 1.8.
    Result: root visits (2, 1); root value (0 + 0.9 - 0.4 + 1.8) / 4 = 0.575;
            Q(root, a0) = 0 + 0.9 * (1 + 2) / 2 = 1.35, Q(root, a1) = -0.4.
    """
    table = {1: (0.0, [0.3, 0.7], 1.0), 2: (0.5, [0.5, 0.5], -1.0), 4: (2.0, [0.5, 0.5], 0.0)}
    model = TableModel(2, table, {0: ([0.6, 0.4], 0.0)})
    search = MCTS(SearchConfig(num_simulations=3, discount=0.9), 2)
    result = search.run(model, np.array([0.0]), np.random.default_rng(0), explore=False)
    assert np.array_equal(result.visit_counts, [[2, 1]])
    assert result.root_value == pytest.approx([0.575])
    assert result.q_values == pytest.approx(np.array([[1.35, -0.4]]))
    assert result.policy == pytest.approx(np.array([[2 / 3, 1 / 3]]))
    assert search.visits[0, :4].tolist() == [4, 2, 1, 1] and search.value_sum[0, :4] == pytest.approx([2.3, 3, -1, 0])


def test_golden_tree_gumbel():
    """Gumbel MuZero, four simulations, two actions, no Gumbel noise (evaluation), gamma = 1.
    Root: logits log(0.7), log(0.3) (prior 0.7/0.3), value 0. Leaves: a0 -> r = 0, v = 1;
    a1 -> r = 0, v = 3; every deeper node: r = 0, v = 2, prior (0.5, 0.5).

    Sequential halving with m = 2, n = 4: one phase, 4 / (1 * 2) = 2 visits each: [0, 0, 1, 1].
    sim 1: both unvisited -> completed Qs equal -> sigma = 0 -> larger logit: a0. Q(a0) = 1.
    sim 2: only a1 has 0 visits -> a1. Q(a1) = 3.
    sim 3: both have 1 visit; sigma = (50 + 1) * 0.1 * rescaled Q = (0, 5.1): a1 wins (5.1 + log 0.3 >
           log 0.7). Below a1 (a fresh node, no visits): argmax softmax(logits) - 0 -> tie (0.5, 0.5),
           broken at random; either leaf has v = 2, so Q(a1) = (3 + 2) / 2 = 2.5.
    sim 4: only a0 has 1 visit -> a0; its child: Q(a0) = (1 + 2) / 2 = 1.5.
    Result: visits (2, 2); the action is the best of the most visited: a1 (Q 2.5 > 1.5, sigma = (0, 5.2));
            policy target softmax(log(0.7, 0.3) + (0, 5.2)); root value (0 + 1 + 3 + 2 + 2) / 5 = 1.6.
    """
    table = {1: (0.0, [0.5, 0.5], 1.0), 2: (0.0, [0.5, 0.5], 3.0)}
    model = TableModel(2, lambda i: table.get(i, (0.0, [0.5, 0.5], 2.0)), {0: ([0.7, 0.3], 0.0)})
    search = MCTS(SearchConfig(num_simulations=4, discount=1.0, gumbel=True), 2)
    result = search.run(model, np.array([0.0]), np.random.default_rng(0), explore=False)
    assert np.array_equal(result.visit_counts, [[2, 2]])
    assert result.q_values == pytest.approx(np.array([[1.5, 2.5]]))
    assert result.action.tolist() == [1]
    assert result.policy == pytest.approx(softmax(np.log([[0.7, 0.3]]) + np.array([[0.0, 5.2]])))
    assert result.root_value == pytest.approx([1.6])


# == search: agreement ==================================================================================
@pytest.mark.parametrize("n_actions,simulations", [(2, 20), (3, 25)])
def test_batched_search_matches_reference(n_actions, simulations):
    """Random trees: the batched search over five roots gives, root by root, the visit counts and
    values of the plain one-root reference implementation, and of itself run on each root alone."""
    roots = {i: (np.random.default_rng(100 + i).dirichlet(np.ones(n_actions)), float(i) - 2.0) for i in range(5)}
    model = TableModel(n_actions, random_table(n_actions, seed=7), roots)
    obs = np.arange(5.0)
    config = SearchConfig(num_simulations=simulations, discount=0.95)
    batched_search = MCTS(config, n_actions)
    batched = batched_search.run(model, obs, np.random.default_rng(1), explore=False)
    assert set(model.leaf_batches) == {5}   # every simulation: one model call for all five leaves
    single = MCTS(config, n_actions)
    for i in range(5):
        alone = single.run(model, obs[i:i + 1], np.random.default_rng(2), explore=False)
        # one root runs on Python lists (fast.simulate_one_root): it must leave the same tree behind
        # (the real nodes: the batched search also parks its padding on UNEXPANDED, the last one)
        nodes = slice(0, simulations + 1)
        for name in ("visits", "depth", "edge_visits"):
            assert np.array_equal(getattr(single, name)[0, nodes], getattr(batched_search, name)[i, nodes]), name
        for name in ("value_sum", "edge_q", "prior"):
            assert np.allclose(getattr(single, name)[0, nodes], getattr(batched_search, name)[i, nodes],
                               rtol=1e-12), name
        visits, value = reference_search(model, obs[i:i + 1], simulations, 0.95)
        assert np.array_equal(batched.visit_counts[i], visits)
        assert np.array_equal(alone.visit_counts[0], visits)
        assert batched.root_value[i] == pytest.approx(value, abs=1e-12)
        assert alone.root_value[0] == pytest.approx(value, abs=1e-12)
        assert batched.visit_counts[i].sum() == simulations


def test_batched_gumbel_matches_single_roots():
    roots = {i: (np.random.default_rng(200 + i).dirichlet(np.ones(4)), 0.5 * i) for i in range(4)}
    model = TableModel(4, random_table(4, seed=3), roots)
    config = SearchConfig(num_simulations=12, discount=0.97, gumbel=True)
    obs = np.arange(4.0)
    batched = MCTS(config, 4).run(model, obs, np.random.default_rng(0), explore=False)
    for i in range(4):
        alone = MCTS(config, 4).run(model, obs[i:i + 1], np.random.default_rng(0), explore=False)
        assert np.array_equal(batched.visit_counts[i], alone.visit_counts[0])
        assert batched.action[i] == alone.action[0]
        assert np.allclose(batched.policy[i], alone.policy[0])


# == search: pieces =====================================================================================
def test_normalize_q_edge_cases():
    q = np.array([1.0, 2.0, 3.0])
    # nothing seen yet: every value maps to 0, whatever it is
    assert np.array_equal(normalize_q(q, np.inf, -np.inf, 0.01), [0, 0, 0])
    # a single value seen (low == high): the range is the floor delta; the value itself maps to 0,
    # anything more than delta above it to 1, anything below to 0
    assert np.allclose(normalize_q(np.array([2.0, 2.005, 5.0, -1.0]), 2.0, 2.0, 0.01), [0, 0.5, 1, 0])
    # all equal
    assert np.array_equal(normalize_q(np.full(3, 7.0), 7.0, 7.0, 0.01), [0, 0, 0])
    # ordinary range, and clipping outside it
    assert np.allclose(normalize_q(np.array([0.0, 5.0, 10.0, 12.0, -3.0]), 0.0, 10.0, 0.01), [0, 0.5, 1, 1, 0])


def test_dirichlet_noise_only_at_root_and_only_in_training():
    model = TableModel(3, random_table(3, seed=11), {0: ([0.2, 0.3, 0.5], 0.0)})
    search = MCTS(SearchConfig(num_simulations=10), 3)
    search.run(model, np.array([0.0]), np.random.default_rng(0), explore=False)
    assert np.allclose(search.prior[0, 0], [0.2, 0.3, 0.5])
    clean_interior = search.prior[0, 1:11].copy()
    search.run(model, np.array([0.0]), np.random.default_rng(0), explore=True)
    noisy_root = search.prior[0, 0]
    assert not np.allclose(noisy_root, [0.2, 0.3, 0.5]) and noisy_root.sum() == pytest.approx(1.0)
    # the mix keeps (1 - 0.25) of the prior: no entry can fall below 0.75 p
    assert (noisy_root >= 0.75 * np.array([0.2, 0.3, 0.5]) - 1e-12).all()
    # every interior node's prior is its network's softmax, untouched (compared node by node, by id)
    for node in range(1, 11):
        node_id = int(search.states[0, node, 0])
        assert np.allclose(search.prior[0, node], random_table(3, 11)(node_id)[1])
    assert clean_interior.shape == (10, 3)
    # Gumbel MuZero explores with Gumbel noise instead: no Dirichlet at its root
    gumbel = MCTS(SearchConfig(num_simulations=10, gumbel=True), 3)
    gumbel.run(model, np.array([0.0]), np.random.default_rng(0), explore=True)
    assert np.allclose(gumbel.prior[0, 0], [0.2, 0.3, 0.5])
    assert np.abs(gumbel.gumbel).sum() > 0
    gumbel.run(model, np.array([0.0]), np.random.default_rng(0), explore=False)
    assert np.abs(gumbel.gumbel).sum() == 0


def test_sequential_halving_budget():
    # mctx's table: m = 4, n = 16 -> phase 1 gives each of the 4 actions 16 / (2 * 4) = 2 visits,
    # phase 2 gives each of the best 2 another 16 / (2 * 2) = 4
    assert sequence_of_considered_visits(4, 16) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert sequence_of_considered_visits(2, 8) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert sequence_of_considered_visits(1, 3) == [0, 1, 2]
    for m, n in [(16, 50), (4, 7), (8, 200), (2, 5), (16, 8)]:
        seq = sequence_of_considered_visits(m, n)
        assert len(seq) == n
        # visit counts implied by the schedule: each simulation raises one action's count by one
        counts: list[int] = []
        for target in seq:
            if target == 0:
                counts.append(1)
            else:
                counts[counts.index(target)] += 1
        assert sum(counts) == n and len(counts) == min(m, n)
    # in a search over 4 actions with 16 simulations: the budget is spent exactly, as (2, 2, 6, 6),
    # and the action played is one of the halving's two survivors
    roots = {0: (np.array([0.4, 0.3, 0.2, 0.1]), 0.0)}
    model = TableModel(4, random_table(4, seed=5), roots)
    for seed in range(5):
        result = MCTS(SearchConfig(num_simulations=16, gumbel=True, max_considered_actions=4), 4).run(
            model, np.array([0.0]), np.random.default_rng(seed), explore=True)
        assert sorted(result.visit_counts[0].tolist()) == [2, 2, 6, 6]
        assert result.visit_counts[0, result.action[0]] == 6


def test_gumbel_completed_q_pieces():
    # mixed value: (v + sum N * sum_visited pi q / sum_visited pi) / (1 + sum N)
    q, visits, prior = np.array([1.0, 4.0, 0.0]), np.array([2.0, 1.0, 0.0]), np.array([0.5, 0.25, 0.25])
    expected = (0.3 + 3 * (0.5 * 1 + 0.25 * 4) / 0.75) / 4
    assert mixed_value(np.array(0.3), q, visits, prior) == pytest.approx(expected)
    sigma = completed_q_sigma(q, visits, np.array(0.3), prior, SearchConfig())
    # completed (1, 4, v_mix = 1.575) rescaled to (0, 1, 0.19167), times (50 + 2) * 0.1
    assert sigma == pytest.approx(5.2 * np.array([0.0, 1.0, (expected - 1.0) / 3.0]))


def test_select_action_temperature(rng):
    visits = np.array([[1.0, 3.0, 0.0], [5.0, 5.0, 0.0]])
    greedy = np.array([select_action(visits, 0.0, rng) for _ in range(200)])
    assert (greedy[:, 0] == 1).all()
    assert set(greedy[:, 1]) == {0, 1}   # ties broken at random
    samples = np.array([select_action(visits[:1], 1.0, rng)[0] for _ in range(4000)])
    assert np.mean(samples == 1) == pytest.approx(0.75, abs=0.03) and not (samples == 2).any()
