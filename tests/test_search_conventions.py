"""The search's settable conventions (rlscratch/muzero/mcts.py, "Conventions") by hand: Q normalised
per node (mctx) or by tree-wide bounds (MuZero, EfficientZero), the bounds taking mean Qs (EZ V1) or
sampled returns (EZ V2's ctree), the value of an unvisited child, root noise handed in; and the
one-root fast path equal to the batched search under every combination."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from test_muzero import TableModel, random_table  # tests/ is on sys.path (pytest prepend import mode)

from rlscratch.muzero.mcts import MCTS, SearchConfig, completed_q_sigma, gumbel_answer, gumbel_scores, puct_scores


def hand_filled_puct(config: SearchConfig) -> MCTS:
    """One root, no model: mean value 2.0 / 4 = 0.5, children visited (2, 1, 0) with Q (0.2, 0.9, -),
    prior (0.2, 0.3, 0.5); tree-wide bounds [-1, 1]."""
    search = MCTS(config, 3)
    search._allocate(1, (1,), np.dtype(np.float64))
    search.visits[0, 0], search.value_sum[0, 0] = 4.0, 2.0
    search.edge_visits[0, 0] = [2.0, 1.0, 0.0]
    search.edge_q[0, 0] = [0.2, 0.9, 0.0]
    search.prior[0, 0] = [0.2, 0.3, 0.5]
    search.low[0], search.high[0] = -1.0, 1.0
    return search


def exploration(prior, edge_visits, n=4.0, c1=1.25, c2=19652.0):
    return np.array(prior) * math.sqrt(n) * (c1 + math.log((n + c2 + 1) / c2)) / (1.0 + np.array(edge_visits))


@pytest.mark.parametrize("normalization,unvisited,value_part", [
    # tree-wide [-1, 1]: (0.2 + 1) / 2, (0.9 + 1) / 2; unvisited at the parent's mean (0.5 + 1) / 2 or 0
    ("tree", "parent_mean", [0.6, 0.95, 0.75]),
    ("tree", "lowest", [0.6, 0.95, 0.0]),
    # per node (mctx): bounds of {0.5 (the node's mean), 0.2, 0.9} = [0.2, 0.9]
    ("node", "parent_mean", [0.0, 1.0, 0.3 / 0.7]),
    ("node", "lowest", [0.0, 1.0, 0.0]),
])
def test_puct_scores_by_hand(normalization, unvisited, value_part):
    search = hand_filled_puct(SearchConfig(num_simulations=4, q_normalization=normalization, unvisited_q=unvisited))
    visits, q = search._edge_stats(1)
    scores = puct_scores(search, 1, visits, q)
    assert scores[0, 0] == pytest.approx(np.array(value_part) + exploration([0.2, 0.3, 0.5], [2, 1, 0]), abs=1e-12)


def test_puct_node_bounds_take_the_nodes_own_mean_and_the_delta_floor():
    """All children visited with Qs above the node's mean: the mean is still the low end. And a
    spread below value_delta is divided by value_delta, not stretched to [0, 1]."""
    search = hand_filled_puct(SearchConfig(num_simulations=4, q_normalization="node"))
    search.edge_visits[0, 0] = [1.0, 1.0, 1.0]
    search.edge_q[0, 0] = [0.6, 0.8, 0.7]
    visits, q = search._edge_stats(1)
    scores = puct_scores(search, 1, visits, q)[0, 0] - exploration([0.2, 0.3, 0.5], [1, 1, 1])
    assert scores == pytest.approx([(0.6 - 0.5) / 0.3, 1.0, (0.7 - 0.5) / 0.3], abs=1e-12)
    search.edge_q[0, 0] = [0.5 + 1e-4, 0.5 + 2e-4, 0.5]
    visits, q = search._edge_stats(1)
    scores = puct_scores(search, 1, visits, q)[0, 0] - exploration([0.2, 0.3, 0.5], [1, 1, 1])
    assert scores == pytest.approx([0.01, 0.02, 0.0], abs=1e-12)   # / 0.01, not / 2e-4


def test_completed_q_sigma_with_tree_bounds_by_hand():
    """EZ V2: completed Qs normalised by the tree's bounds [0, 2] (clipped to [0, 1]), not their own
    spread (3.0 clips to 1); the unvisited action takes v_mix = (1.0 + 3 (0.5 * 1 + 0.25 * 3) / 0.75) / 4 = 1.5."""
    q = np.array([1.0, 3.0, 0.0])
    visits = np.array([2.0, 1.0, 0.0])
    prior = np.array([0.5, 0.25, 0.25])
    v_mix = (1.0 + 3 * (0.5 * 1.0 + 0.25 * 3.0) / 0.75) / 4
    sigma = completed_q_sigma(q, visits, np.array(1.0), prior, SearchConfig(), (np.array(0.0), np.array(2.0)))
    assert sigma == pytest.approx((50 + 2) * 0.1 * np.array([0.5, 1.0, v_mix / 2]), abs=1e-12)
    own = completed_q_sigma(q, visits, np.array(1.0), prior, SearchConfig())
    assert own == pytest.approx((50 + 2) * 0.1 * np.array([0.0, 1.0, (v_mix - 1.0) / 2]), abs=1e-12)


# A tiny Gumbel tree searched to the end, by hand (discount 0.5, two actions, both considered,
# three simulations: halving visits a0, a1, then the better one again).
#   root 0: prior (0.6, 0.4), value 0.2
#   node 1 = root --a0-->: reward 0.3, value 0.4, prior (0.7, 0.3)  Q(root, a0) = 0.3 + 0.5 * 0.4 = 0.5
#   node 2 = root --a1-->: reward -0.1, value 0.8                    Q(root, a1) = -0.1 + 0.5 * 0.8 = 0.3
#   simulation 3 goes root -a0-> node 1 -a0-> node 3 (table id 3): reward 0.6, value 1.0
#   Q(1, a0) = 0.6 + 0.5 * 1.0 = 1.1; node 1's mean (0.4 + 1.1) / 2 = 0.75; Q(root, a0) = 0.3 + 0.5 * 0.75 = 0.675
# Tree bounds, "q" (mean Qs as backed up): {0.5}, {0.3}, {1.1, 0.675} -> [0.3, 1.1].
# "returns" (EZ V2's ctree: r + gamma G of every node on the path, the root's (r = 0) too):
#   sim 1: 0.5, 0.5 * 0.5 = 0.25; sim 2: 0.3, 0.15; sim 3: 1.1, 0.3 + 0.5 * 1.1 = 0.85, 0.425 -> [0.15, 1.1].
# Final root: visits (2, 1), Qs (0.675, 0.3), sigma = (50 + 2) 0.1 * normalised.
TINY_ROOTS = {0: ([0.6, 0.4], 0.2)}
TINY_TABLE = {1: (0.3, [0.7, 0.3], 0.4), 2: (-0.1, [0.5, 0.5], 0.8), 3: (0.6, [0.5, 0.5], 1.0)}


@pytest.mark.parametrize("normalization,bounds,low,high,normalised", [
    ("node", "q", math.inf, -math.inf, [1.0, 0.0]),
    ("tree", "q", 0.3, 1.1, [(0.675 - 0.3) / 0.8, 0.0]),
    ("tree", "returns", 0.15, 1.1, [(0.675 - 0.15) / 0.95, (0.3 - 0.15) / 0.95]),
])
def test_gumbel_tree_normalisation_on_a_tiny_tree_by_hand(normalization, bounds, low, high, normalised):
    model = TableModel(2, TINY_TABLE, TINY_ROOTS)
    config = SearchConfig(num_simulations=3, discount=0.5, gumbel=True, max_considered_actions=2,
                          q_normalization=normalization, tree_bounds=bounds)
    search = MCTS(config, 2)
    result = search.run(model, np.array([0.0]), np.random.default_rng(0), explore=False)
    assert result.visit_counts.tolist() == [[2, 1]]
    assert search.depth[0, 3] == 2 and search.in_edge[0, 3] == 1 * 2 + 0   # node 3 hangs off node 1, action 0
    assert result.q_values[0] == pytest.approx([0.675, 0.3], abs=1e-12)
    assert (search.low[0], search.high[0]) == pytest.approx((low, high), abs=1e-12)
    logits = np.log([0.6, 0.4]) + 5.2 * np.array(normalised)
    assert result.policy[0] == pytest.approx(np.exp(logits) / np.exp(logits).sum(), abs=1e-12)


def test_puct_tree_bounds_from_returns_by_hand():
    """pUCT, two simulations on the tiny table, discount 0.5; the first goes to a0 (prior 0.6).
    Mean-Q bounds {0.5}: a one-value range, so Q(a0) and a1's parent mean (0.2 + 0.5) / 2 = 0.35 both
    score 0 and the prior term sends simulation 2 to a1 -> bounds {0.5, 0.3}. Return bounds
    {0.5, 0.25}: Q(a0) scores 1, a1's 0.35 scores 0.4; with c = sqrt(2) (1.25 + log(19655 / 19652)),
    1 + 0.6 c / 2 > 0.4 + 0.4 c, so simulation 2 goes to a0 again and on to node 3: returns 1.1,
    0.3 + 0.5 * 1.1 = 0.85 and 0.425 above the root -> bounds [0.25, 1.1]."""
    model = TableModel(2, TINY_TABLE, TINY_ROOTS)
    c = math.sqrt(2) * (1.25 + math.log(19655 / 19652))
    assert 1 + 0.6 * c / 2 > 0.4 + 0.4 * c and 0.4 * c > 0.6 * c / 2
    for bounds, visits, expected in [("returns", [2, 0], (0.25, 1.1)), ("q", [1, 1], (0.3, 0.5))]:
        for roots in (np.array([0.0]), np.array([0.0, 0.0])):   # the one-root fast path and the batched search
            search = MCTS(SearchConfig(num_simulations=2, discount=0.5, tree_bounds=bounds), 2)
            result = search.run(model, roots, np.random.default_rng(0), explore=False)
            assert result.visit_counts[0].tolist() == visits, (bounds, len(roots))
            assert (search.low[0], search.high[0]) == pytest.approx(expected, abs=1e-12), (bounds, len(roots))


@pytest.mark.parametrize("normalization,unvisited,bounds",
                         list(itertools.product(["tree", "node"], ["parent_mean", "lowest"], ["q", "returns"])))
def test_one_root_fast_path_leaves_the_batched_tree(normalization, unvisited, bounds):
    """Every combination of conventions: a pUCT search over one root (rlscratch.muzero.fast, Python
    lists) leaves exactly the tree the batched search leaves for that root."""
    n_actions, simulations = 3, 25
    roots = {i: (np.random.default_rng(300 + i).dirichlet(np.ones(n_actions)), 0.3 * i - 0.5) for i in range(4)}
    model = TableModel(n_actions, random_table(n_actions, seed=11), roots)
    config = SearchConfig(num_simulations=simulations, discount=0.9, q_normalization=normalization,
                          unvisited_q=unvisited, tree_bounds=bounds)
    obs = np.arange(4.0)
    batched = MCTS(config, n_actions)
    batched.run(model, obs, np.random.default_rng(1), explore=False)
    single = MCTS(config, n_actions)
    nodes = slice(0, simulations + 1)
    for i in range(4):
        single.run(model, obs[i:i + 1], np.random.default_rng(2), explore=False)
        for name in ("visits", "depth", "edge_visits", "in_edge"):
            ours, theirs = getattr(single, name)[0, nodes], getattr(batched, name)[i, nodes]
            if name == "in_edge":   # global indices: make them local to each tree
                theirs = theirs - batched.root_index[i] * n_actions
            assert np.array_equal(ours[1:], theirs[1:]), name
        for name in ("value_sum", "edge_q"):
            assert np.allclose(getattr(single, name)[0, nodes], getattr(batched, name)[i, nodes], rtol=1e-12), name
        assert (single.low[0], single.high[0]) == pytest.approx((batched.low[i], batched.high[i]), rel=1e-12)


def test_root_noise_handed_in():
    """pUCT mixes the given Dirichlet sample into the prior with exploration_fraction even without
    ``explore``; Gumbel takes the given g as it is (already scaled)."""
    model = TableModel(3, lambda i: (0.0, [1 / 3] * 3, 0.0), {0: ([0.2, 0.3, 0.5], 0.0), 1: ([0.6, 0.3, 0.1], 0.0)})
    noise = np.array([[0.1, 0.0, 0.9], [0.5, 0.5, 0.0]])
    search = MCTS(SearchConfig(num_simulations=2, exploration_fraction=0.25), 3)
    search.run(model, np.array([0.0, 1.0]), np.random.default_rng(0), explore=False, noise=noise)
    assert search.prior[:, 0] == pytest.approx(0.75 * np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]) + 0.25 * noise,
                                               abs=1e-12)
    search.run(model, np.array([0.0, 1.0]), np.random.default_rng(0), explore=False)
    assert search.prior[:, 0] == pytest.approx(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]), abs=1e-12)
    gumbel = MCTS(SearchConfig(num_simulations=2, gumbel=True, gumbel_scale=3.0), 3)
    gumbel.run(model, np.array([0.0, 1.0]), np.random.default_rng(0), explore=True, noise=noise)
    assert gumbel.gumbel.tolist() == noise.tolist()


@pytest.mark.parametrize("field,value", [("q_normalization", "global"), ("unvisited_q", "zero"),
                                         ("tree_bounds", "values")])
def test_unknown_convention_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        MCTS(SearchConfig(**{field: value}), 3)


def test_agent_config_reaches_the_search():
    """agent.q_normalization / tree_bounds / unvisited_q of a MuZero config set its searches'
    conventions; a value outside the choices is a config error naming the key."""
    import gymnasium as gym

    from rlscratch.agent import EnvSpec, agent_config, resolve_agent
    from rlscratch.config import ModelConfig
    from rlscratch.errors import ConfigError

    cls = resolve_agent("gumbel_muzero")
    config = agent_config(cls, {"q_normalization": "tree", "tree_bounds": "returns", "unvisited_q": "lowest"})
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2), 1)
    agent = cls(config, spec, ModelConfig(hidden=[8]), np.random.default_rng(0))
    search = MCTS(agent.search_config, 2)
    assert (search.q_normalization, search.config.tree_bounds, search.config.unvisited_q) == ("tree", "returns",
                                                                                              "lowest")
    default = cls(agent_config(cls, {}), spec, ModelConfig(hidden=[8]), np.random.default_rng(0))
    assert MCTS(default.search_config, 2).q_normalization == "node"   # auto: Gumbel's own
    with pytest.raises(ConfigError, match="q_normalization"):
        agent_config(cls, {"q_normalization": "global"})


def test_gumbel_scores_with_tree_bounds_per_root_by_hand():
    """Gumbel with q_normalization="tree" over TWO roots whose bounds differ ([0, 2] and [-1, 1]): each
    root's nodes -- the root and interior node 1 -- are normalised by their own tree's bounds.

    root 0, node 1: visits (1, 0, 0), Q(a0) = 1.5, value 0.5 -> v_mix = (0.5 + 1.5) / 2 = 1; completed
        (1.5, 1, 1) -> (0.75, 0.5, 0.5) by [0, 2] (by its own spread it would be (1, 0, 0)); sigma = 5.1 x.
    root 1, node 1: visits (0, 2, 0), Q(a1) = -0.5, value 0 -> v_mix = -1/3; (x + 1) / 2 ->
        (1/3, 0.25, 1/3); sigma = 5.2 x.
    The roots (3 simulations spent: every action with 1 visit competes): root 0 visits (1, 1, 1),
    Qs (0.5, 1, 2.5) -> (0.25, 0.5, 1 (clipped)); root 1 visits (2, 1, 0): only a1, Q 0.5 -> 0.75."""
    search = MCTS(SearchConfig(num_simulations=4, gumbel=True, q_normalization="tree"), 3)
    search._allocate(2, (1,), np.dtype(np.float64))
    search.low[:], search.high[:] = [0.0, -1.0], [2.0, 1.0]
    node_prior = np.array([0.5, 0.3, 0.2])
    search.prior[:, 1], search.logits[:, 1] = node_prior, np.log(node_prior)
    search.raw_value[:, 1] = [0.5, 0.0]
    root_logits = np.array([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]])
    search.logits[:, 0] = root_logits
    search.prior[:, 0] = np.exp(root_logits) / np.exp(root_logits).sum(axis=1, keepdims=True)
    search.gumbel[...] = [[0.3, -0.2, 0.1], [0.0, 0.5, -1.0]]
    visits = np.array([[[1.0, 1, 1], [1, 0, 0]], [[2, 1, 0], [0, 2, 0]]])
    q = np.array([[[0.5, 1.0, 2.5], [1.5, 0, 0]], [[-0.5, 0.5, 0], [0, -0.5, 0]]])
    assert search.considered_visits[3] == 1
    scores = gumbel_scores(search, 2, visits, q)
    for b, sigma, visit_term in [(0, 5.1 * np.array([0.75, 0.5, 0.5]), [0.5, 0.0, 0.0]),
                                 (1, 5.2 * np.array([1 / 3, 0.25, 1 / 3]), [0.0, 2 / 3, 0.0])]:
        improved = node_prior * np.exp(sigma)
        assert scores[b, 1] == pytest.approx(improved / improved.sum() - visit_term, abs=1e-12), b
    expected_root0 = np.array([0.3, -0.2, 0.1]) + root_logits[0] - 2.0 + 5.1 * np.array([0.25, 0.5, 1.0])
    assert scores[0, 0] == pytest.approx(expected_root0, abs=1e-12)
    assert scores[1, 0, [0, 2]].tolist() == [-np.inf, -np.inf]
    assert scores[1, 0, 1] == pytest.approx(0.5 + 0.0 - 3.0 + 5.2 * 0.75, abs=1e-12)


def test_gumbel_answer_with_tree_bounds_per_root_by_hand():
    """The answer's action with q_normalization="tree" over TWO roots (bounds [0, 2] and [-1, 1]), A = 2,
    both actions visited once (both compete), no Gumbel noise; sigma = (50 + 1) 0.1 q_hat = 5.1 q_hat.
    (gumbel_scores hands the root its nodes' sigma; the answer is the one caller that rescales itself.)

    root 0: logits (1, 0) -> (0, -1) after the max; Q (1.0, 1.2) -> q_hat (0.5, 0.6) -> sigma (2.55, 3.06);
        scores (2.55, 2.06): a0.  By the root's own spread q_hat would be (0, 1): scores (0, 4.1), a1.
    root 1: logits (0, 2) -> (-2, 0); Q (0.4, -0.2) -> q_hat (0.7, 0.4) -> sigma (3.57, 2.04);
        scores (1.57, 2.04): a1.  By its own spread (1, 0): scores (3.1, 0), a0.
    The policy target: softmax(logits + sigma) = softmax(3.55, 3.06) and softmax(3.57, 4.04)."""
    search = MCTS(SearchConfig(num_simulations=4, gumbel=True, q_normalization="tree"), 2)
    search._allocate(2, (1,), np.dtype(np.float64))
    search.low[:], search.high[:] = [0.0, -1.0], [2.0, 1.0]
    logits = np.array([[1.0, 0.0], [0.0, 2.0]])
    search.logits[:, 0] = logits
    search.prior[:, 0] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    search.raw_value[:, 0] = [1.1, 0.1]
    search.gumbel[...] = 0.0
    visits, q = np.ones((2, 2)), np.array([[1.0, 1.2], [0.4, -0.2]])
    result = gumbel_answer(search, visits, q, np.array([1.1, 0.1]))
    assert result.action.tolist() == [0, 1]
    expected = np.array([[3.55, 3.06], [3.57, 4.04]])
    expected = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    assert result.policy == pytest.approx(expected, rel=1e-12)
