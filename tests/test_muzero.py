"""MuZero: support transform, model and unrolled-loss gradients, batched search (golden trees
computed by hand, a plain reference implementation, Gumbel's sequential halving), replay targets,
and a short learning run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import write_config as write_yaml_config
from threadpoolctl import threadpool_limits

from rlscratch import nn
from rlscratch.config import load_config
from rlscratch.muzero.loss import UnrollBatch, unrolled_loss
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
from rlscratch.muzero.model import MinMaxScale, MuZeroNet
from rlscratch.muzero.replay import (
    TERMINATED,
    TRUNCATED,
    W_BEYOND,
    W_FINAL,
    W_MISSING,
    W_STEP,
    GameReplay,
    rows_read,
)
from rlscratch.muzero.support import (
    inverse_transform,
    inverse_transform_scalar,
    logits_to_scalar,
    scalar_to_support,
    support_to_scalar,
    transform,
)
from rlscratch.muzero.targets import make_targets
from rlscratch.trainer import train


# == support =========================================================================================
def test_transform_round_trip():
    x = np.concatenate([np.linspace(-500, 500, 1001), [0.0, 1e-6, -1e-6, 3.7, 1e4]])
    assert np.allclose(inverse_transform(transform(x)), x, rtol=1e-9, atol=1e-9)
    assert transform(np.array(0.0)) == 0.0
    # h(x) = sign(x)(sqrt(|x|+1)-1) + eps x at a hand-checked point: h(3) = 2 - 1 + 0.003
    assert transform(np.array(3.0)) == pytest.approx(1.003)


@pytest.mark.parametrize("support_size", [1, 5, 20])
def test_scalar_support_round_trip(support_size):
    limit = inverse_transform(np.array(float(support_size)))
    x = np.linspace(-limit, limit, 301)
    dist = scalar_to_support(x, support_size)
    assert dist.shape == (301, 2 * support_size + 1)
    assert np.allclose(dist.sum(axis=-1), 1.0) and (dist >= 0).all()
    assert (np.count_nonzero(dist, axis=-1) <= 2).all()   # two-hot
    assert np.allclose(support_to_scalar(dist, support_size), x, atol=1e-9)
    # and through logits, as the network's outputs are read
    assert np.allclose(logits_to_scalar(np.log(np.maximum(dist, 1e-300)), support_size), x, atol=1e-6)


def test_two_hot_by_hand():
    # h(3) = 1.003: mass 0.997 on category 1 and 0.003 on category 2 (indices 3 and 4 for S = 2)
    dist = scalar_to_support(np.array([3.0, 0.0, 1e9, -1e9]), 2)
    assert np.allclose(dist[0], [0, 0, 0, 0.997, 0.003])
    assert np.allclose(dist[1], [0, 0, 1, 0, 0])
    assert np.allclose(dist[2], [0, 0, 0, 0, 1]) and np.allclose(dist[3], [1, 0, 0, 0, 0])  # clipped


# == model and loss ==================================================================================
def test_min_max_scale_gradient_and_range(rng):
    scale = MinMaxScale()
    x = rng.standard_normal((5, 7))
    y = scale.infer(x)
    assert np.allclose(y.min(axis=1), 0.0) and np.allclose(y.max(axis=1), 1.0, atol=1e-4)
    errors = nn.check_module(scale, x, rng=rng)
    assert max(errors.values()) <= 1e-6


def tiny_net(rng, dtype=np.float64) -> MuZeroNet:
    net = MuZeroNet(3, 2, rng, state_dim=4, hidden=[5], value_support=2, reward_support=1).astype(dtype)
    net.flat_params[:] = rng.standard_normal(net.flat_params.size) * 0.5  # no zero-initialised heads
    return net


def random_batch(rng, n=4, K=3, A=2, obs_dim=3) -> UnrollBatch:
    return UnrollBatch(
        obs=rng.standard_normal((n, obs_dim)), actions=rng.integers(0, A, (n, K)),
        target_policy=rng.dirichlet(np.ones(A), (n, K + 1)), policy_mask=(rng.random((n, K + 1)) < 0.8) * 1.0,
        target_value=rng.uniform(-3, 3, (n, K + 1)), value_mask=(rng.random((n, K + 1)) < 0.9) * 1.0,
        target_reward=rng.uniform(-1, 1, (n, K + 1)), reward_mask=np.ones((n, K + 1)),
        weights=rng.uniform(0.5, 1.5, n))


def test_inference_matches_training_path(rng):
    net = tiny_net(rng)
    obs, actions = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    state, logits, value = net.initial_inference(obs)
    train_state = net.represent(obs)
    train_logits, value_logits = net.predict(train_state)
    assert np.allclose(state, train_state) and np.allclose(logits, train_logits)
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support))
    next_state, reward, logits, value = net.recurrent_inference(state, actions)
    train_next, reward_logits = net.dynamics(train_state, actions)
    train_logits, value_logits = net.predict(train_next)
    net.clear_saved()
    assert np.allclose(next_state, train_next) and np.allclose(logits, train_logits)
    assert np.allclose(reward, logits_to_scalar(reward_logits, net.reward_support))
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support))
    assert net.saved_count() == 0


def test_one_root_inference_matches_batched(rng):
    """recurrent_inference_one (1-D, reused buffers, Python-float scalars) gives what the batched
    call gives row by row, writes the next state into the slot it is handed, and leaves no buffer
    shared between the state it wrote and the logits it returned."""
    net = tiny_net(rng)
    for layer in (net.dynamics_net.layers[-1], net.prediction.layers[-1]):   # heads away from zero
        layer.params["W"][...] = rng.standard_normal(layer.params["W"].shape)
    state, _, _ = net.initial_inference(rng.standard_normal((4, 3)))
    actions = np.array([0, 1, 1, 0])
    next_state, reward, logits, value = net.recurrent_inference(state, actions)
    slots = np.zeros_like(state)
    for i in range(4):
        r, policy_logits, v = net.recurrent_inference_one(state[i], int(actions[i]), slots[i])
        assert isinstance(r, float) and isinstance(v, float)
        assert np.allclose(policy_logits, logits[i], rtol=1e-5, atol=1e-6)
        assert r == pytest.approx(reward[i], rel=1e-5, abs=1e-6) and v == pytest.approx(value[i], rel=1e-5, abs=1e-6)
    assert np.allclose(slots, next_state, rtol=1e-5, atol=1e-6)


def test_inverse_transform_scalar_matches_array():
    y = np.concatenate([np.linspace(-25, 25, 501), [0.0, -0.0, 1e-9, -3.3]])
    assert [inverse_transform_scalar(float(v)) for v in y] == pytest.approx(inverse_transform(y), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("state_grad_scale", [1.0, 0.5])
def test_unrolled_loss_gradient_check(rng, state_grad_scale):
    """The whole K-step loss (policy, value and reward cross-entropies over supports, 1/K scaling,
    masks, importance weights, min-max scaled states) against central differences. With the
    gradient scaling of the states (0.5), the finite differences are taken of the function whose
    true gradient is the scaled one: each dynamics input c s_k + (1 - c) s_k(theta_0)."""
    net = tiny_net(rng)
    batch = random_batch(rng)
    net.zero_grad()
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=state_grad_scale)
    analytic = net.flat_grads.copy()
    assert net.saved_count() == 0

    def loss() -> float:
        return unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=state_grad_scale, backward=False,
                             detached_states=result.states).loss

    assert loss() == pytest.approx(result.loss, rel=1e-12)
    errors = nn.check_gradients(loss, {"params": (net.flat_params, analytic)}, h=1e-5)
    assert errors["params"] <= 1e-6


def test_state_gradient_is_halved_per_step(rng):
    """Only the gradient changes with the scale: the loss is the same, and the representation's
    gradient differs, while a K = 1 unroll (no produced state feeds a dynamics call) is unaffected."""
    net = tiny_net(rng)
    batch = random_batch(rng, K=3)
    grads = {}
    for c in (1.0, 0.5):
        net.zero_grad()
        loss = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=c).loss
        grads[c] = (loss, net.flat_grads.copy())
    assert grads[1.0][0] == grads[0.5][0]
    assert not np.allclose(grads[1.0][1], grads[0.5][1])
    short = random_batch(rng, K=1)
    for c in (1.0, 0.5):
        net.zero_grad()
        unrolled_loss(net, short, value_coef=0.25, state_grad_scale=c)
        grads[c] = net.flat_grads.copy()
    assert np.array_equal(grads[1.0], grads[0.5])


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


# == replay and targets ===================================================================================
def fill(replay: GameReplay, episodes: list[tuple[list[float], list[float], str | None, float]]) -> None:
    """Write episodes into a one-env replay: (rewards, search values, ending, final value); each step's
    action is its index in the episode, its policy (0.25, 0.75); ending None leaves it in progress."""
    for rewards, values, ending, final_value in episodes:
        for t, (r, v) in enumerate(zip(rewards, values)):
            last = t == len(rewards) - 1 and ending is not None
            replay.add(np.array([[float(t)]]), np.array([t % 2]), np.array([r]), np.array([v]),
                       np.array([[0.25, 0.75]]), np.array([[-1.0]]), np.array([last and ending == "terminated"]),
                       np.array([last and ending == "truncated"]), np.array([final_value]))


def targets_at(replay, start, K, n, discount, values=None):
    window = replay.window(np.array([0]), np.array([start]), K + n + 1)
    return window, make_targets(window, K, n, discount, np.random.default_rng(0), values)


def test_targets_by_hand_termination_and_in_progress():
    """Rows: episode 1 = steps 0, 1, 2 (rewards 1, 2, 3; search values 10, 20, 30) then its final
    (terminated) row 3; episode 2 = steps 4, 5 (rewards 4, 5; values 40, 50), still being played.
    K = 2, n = 2, gamma = 0.5."""
    replay = GameReplay(50, 1, (1,), 2)
    fill(replay, [([1, 2, 3], [10, 20, 30], "terminated", 0.0), ([4, 5], [40, 50], None, 0.0)])
    assert replay.kind[0, :6].tolist() == [0, 0, 0, TERMINATED, 0, 0] and replay.head[0] == 6

    # from row 0: z0 = 1 + .5 * 2 + .25 * V2 = 9.5;  z1 = 2 + .5 * 3 (step 2 terminates) = 3.5;  z2 = 3
    window, b = targets_at(replay, 0, K=2, n=2, discount=0.5)
    assert window.status[0].tolist() == [W_STEP, W_STEP, W_STEP, W_FINAL, W_BEYOND]
    assert b.target_value[0] == pytest.approx([9.5, 3.5, 3.0]) and b.value_mask[0].tolist() == [1, 1, 1]
    assert b.policy_mask[0].tolist() == [1, 1, 1] and np.allclose(b.target_policy[0], [0.25, 0.75])
    assert b.target_reward[0, 1:].tolist() == [1, 2] and b.reward_mask[0, 1:].tolist() == [1, 1]
    assert b.actions[0].tolist() == [0, 1] and b.obs[0].tolist() == [0.0]

    # from row 2: z0 = 3; k = 1 is the final row of a termination: 0; k = 2 is past it: absorbing, 0
    window, b = targets_at(replay, 2, K=2, n=2, discount=0.5)
    assert window.status[0].tolist() == [W_STEP, W_FINAL, W_BEYOND, W_BEYOND, W_BEYOND]
    assert b.target_value[0].tolist() == [3.0, 0.0, 0.0] and b.value_mask[0].tolist() == [1, 1, 1]
    assert b.policy_mask[0].tolist() == [1, 0, 0] and b.target_policy[0, 1:].sum() == 0
    # u1 = r2 = 3; u2 is the reward of the absorbing state after the end: 0, and it is trained
    assert b.target_reward[0, 1:].tolist() == [3, 0] and b.reward_mask[0, 1:].tolist() == [1, 1]
    assert b.actions[0, 0] == 0  # row 2's action (t = 2 -> 2 % 2); b.actions[0, 1] is random

    # from row 4 (in progress; row 5 is the last written): z0 = 4 + .5 * V5 = 29; row 5 has a reward
    # but no successor yet, so its value target is masked; rows 6.. are missing
    window, b = targets_at(replay, 4, K=2, n=2, discount=0.5)
    assert window.status[0].tolist() == [W_STEP, W_STEP, W_MISSING, W_MISSING, W_MISSING]
    assert b.target_value[0].tolist() == pytest.approx([29.0, 0, 0]) and b.value_mask[0].tolist() == [1, 0, 0]
    assert b.policy_mask[0].tolist() == [1, 1, 0]
    assert b.target_reward[0, 1:].tolist() == [4, 5] and b.reward_mask[0, 1:].tolist() == [1, 1]


def test_targets_by_hand_truncation():
    """Two steps (rewards 1, 1; values 10, 20) cut by a time limit; the final observation's value is
    100. K = 2, n = 3, gamma = 0.5: a truncation bootstraps from the final observation."""
    replay = GameReplay(50, 1, (1,), 2)
    fill(replay, [([1, 1], [10, 20], "truncated", 100.0)])
    assert replay.kind[0, :3].tolist() == [0, 0, TRUNCATED] and replay.values[0, 2] == 100
    window, b = targets_at(replay, 0, K=2, n=3, discount=0.5)
    assert window.status[0, :3].tolist() == [W_STEP, W_STEP, W_FINAL] and not window.terminated[0]
    # z0 = 1 + .5 * 1 + .25 * 100;  z1 = 1 + .5 * 100;  k = 2 is the final observation itself: 100
    assert b.target_value[0] == pytest.approx([26.5, 51.0, 100.0]) and b.value_mask[0].tolist() == [1, 1, 1]
    window, b = targets_at(replay, 1, K=2, n=3, discount=0.5)
    # past a truncation nothing is known: value and reward masked (not absorbing)
    assert b.target_value[0] == pytest.approx([51.0, 100.0, 0.0]) and b.value_mask[0].tolist() == [1, 1, 0]
    assert b.reward_mask[0, 1:].tolist() == [1, 0]


def test_targets_use_reanalyzed_and_target_network_values():
    replay = GameReplay(50, 1, (1,), 2)
    fill(replay, [([1, 2, 3], [10, 20, 30], "terminated", 0.0), ([4, 5], [40, 50], None, 0.0)])
    # reanalyze refreshed row 2's search value 30 -> 99: z0 = 1 + .5 * 2 + .25 * 99
    replay.refresh(np.array([0]), np.array([2]), np.array([99.0]), np.array([[0.5, 0.5]]))
    _, b = targets_at(replay, 0, K=2, n=2, discount=0.5)
    assert b.target_value[0, 0] == pytest.approx(26.75)
    assert np.allclose(b.target_policy[0, 2], [0.5, 0.5])
    # a target network's values replace the stored ones (a terminal row stays worth 0)
    _, b = targets_at(replay, 0, K=2, n=2, discount=0.5, values=np.array([[0.0, 0.0, 8.0, 7.0, 0.0]]))
    assert b.target_value[0].tolist() == pytest.approx([1 + 1 + 0.25 * 8, 3.5, 3.0])


def test_replay_sampling_priorities_and_ring(rng):
    replay = GameReplay(12, 2, (1,), 2, alpha=1.0)
    for t in range(9):   # two envs, one episode each of 9 steps (env 0 terminates at the end)
        replay.add(np.full((2, 1), float(t)), np.zeros(2, int), np.ones(2), np.zeros(2), np.full((2, 2), 0.5),
                   np.full((2, 1), -1.0), np.array([t == 8, False]), np.zeros(2, bool))
    # 6 slots per env: env 0 wrote 10 rows (its last is the final row), env 1 wrote 9
    assert replay.head.tolist() == [10, 9] and len(replay) == 12
    sample = replay.sample(2000, rng, beta=0.4)
    rows = replay.kind[sample.env, sample.start % replay.per_env]
    assert (rows == 0).all()                                       # final rows are never drawn
    assert (sample.start >= replay.head[sample.env] - replay.per_env).all()   # nor overwritten ones
    assert np.allclose(sample.weights, 1.0)                        # equal priorities: equal weights
    # a large error makes its row likely, and its importance weight small
    leaf = np.array([1 * replay.per_env + 3])
    replay.update_priorities(leaf, np.array([50.0]))
    sample = replay.sample(1000, rng, beta=1.0)
    hits = sample.leaf == leaf[0]
    assert hits.mean() > 0.5 and sample.weights[hits].max() < sample.weights[~hits].min()


# == the agent: checkpoints and learning ======================================================================
def muzero_config(folder, agent: dict | None = None, **train_section) -> object:
    data = {
        "env": {"id": "CartPole-v1", "num_envs": 2},
        "agent": {"name": "muzero", "num_simulations": 6, "state_dim": 8, "batch_size": 16, "warmup_steps": 100,
                  "train_ratio": 0.25, "unroll_steps": 3, "td_steps": 4, "value_support": 5, "reward_support": 2,
                  "value_target": "target", "target_update_interval": 10, "reanalyze_fraction": 0.25,
                  **(agent or {})},
        "model": {"hidden": [16]},
        "train": {"total_steps": 400, "eval_every": 0, "eval_episodes": 2, "checkpoint_every": 200, "log_every": 100,
                  **train_section},
        "log": {"tensorboard": False},
        "seed": 5,
    }
    return load_config(str(write_yaml_config(folder, data, "muzero.yaml")))[0]


@pytest.mark.parametrize("agent", [{}, {"name": "gumbel_muzero", "num_simulations": 4, "value_target": "search"}])
def test_resume_is_exact(tmp_path, agent):
    """Stopping mid-run and resuming from the checkpoint (network, optimizer, target network, replay
    with priorities, counters, random generator) ends with exactly the parameters of an unbroken run."""
    config = muzero_config(tmp_path, agent)
    full = train(config, tmp_path / "full")
    assert full["updates"] == (400 - 100) // 4
    interrupted = train(config, tmp_path / "split", stop_at=250)
    assert interrupted["interrupted"]
    resumed = train(config, tmp_path / "split", resume=True)
    assert np.array_equal(resumed["agent"].net.flat_params, full["agent"].net.flat_params)
    assert np.array_equal(resumed["agent"].replay.tree.priorities, full["agent"].replay.tree.priorities)
    assert resumed["eval_mean"] == full["eval_mean"]


def test_reanalyze_refreshes_stored_targets(tmp_path):
    """Reanalysis searches the rows the targets read -- with a target network only the K + 1 policy
    rows -- with the current model, and overwrites exactly those rows' values and policies."""
    config = muzero_config(tmp_path, {"reanalyze_fraction": 0.0}, total_steps=200)
    agent = train(config, tmp_path / "run")["agent"]
    replay = agent.replay
    env, start = np.array([0, 1]), np.array([3, 5])
    window = replay.window(env, start, agent.window)
    before = replay.values.copy()
    searched = agent.reanalyze(env, start, count=2)
    K = agent.config.unroll_steps
    rows = np.zeros_like(window.status, dtype=bool)
    rows[:, :K + 1] = window.status[:, :K + 1] == W_STEP
    assert rows.sum() == 2 * (K + 1) and searched == rows.sum()   # (these two windows do not overlap)
    changed = replay.values != before
    assert changed[env[:, None], window.slots][rows].all()
    assert changed.sum() == searched
    # the refreshed values are the current model's search values at those observations
    obs = replay.obs[env[:, None], window.slots][rows]
    fresh = MCTS(agent.search_config, 2).run(agent.net, obs, np.random.default_rng(0), explore=False)
    assert np.allclose(replay.values[env[:, None], window.slots][rows], fresh.root_value, atol=1e-4)


def test_reanalyze_picks_a_random_subset_balanced_over_envs(rng):
    """The sum tree returns a batch ordered by env; the reanalysed windows must not be its first
    rows (with 8 envs and a quarter of the batch, only envs 0-1 would ever be refreshed)."""
    replay = GameReplay(8 * 40, 8, (1,), 2)
    for t in range(40):
        replay.add(np.full((8, 1), float(t)), np.zeros(8, int), np.ones(8), np.zeros(8), np.full((8, 2), 0.5),
                   np.zeros((8, 1)), np.zeros(8, bool), np.zeros(8, bool))
    counts = np.zeros(8)
    for _ in range(200):
        sample = replay.sample(128, rng, beta=1.0)
        assert (np.diff(sample.env) >= 0).all()    # ordered by env: the trap the old code fell into
        envs, slots = replay.reanalyze_rows(sample.env, sample.start, 32, 1, 1, rng, stored_values=False)
        counts += np.bincount(envs, minlength=8)
    share = counts / counts.sum()
    assert np.allclose(share, 1 / 8, atol=0.02), share


def test_rows_read_by_hand():
    """Episode 1: steps 0-2 then its terminated final row 3; episode 2: steps 4-9, final
    (truncated) row 10; episode 3: steps 11, 12 still being played."""
    replay = GameReplay(60, 1, (1,), 2)
    fill(replay, [([1, 2, 3], [0, 0, 0], "terminated", 0.0), ([1] * 6, [0] * 6, "truncated", 5.0),
                  ([1, 1], [0, 0], None, 0.0)])

    def read(start, K, n, stored=True):
        window = replay.window(np.array([0]), np.array([start]), K + n + 1)
        return np.flatnonzero(rows_read(window, K, n, stored)[0]) + start

    # K = 1, n = 2 inside episode 2: policies at 4, 5; z_0, z_1 bootstrap from 6, 7
    assert read(4, 1, 2).tolist() == [4, 5, 6, 7]
    assert read(4, 1, 2, stored=False).tolist() == [4, 5]
    # from 0: policies 0-2 (row 3 is final); z_0 -> 2, z_1, z_2 -> the terminated final row 3: no value
    assert read(0, 2, 2).tolist() == [0, 1, 2]
    # from 8 (K = 2, n = 3): policies 8, 9 (10 is final); z_0, z_1 -> the truncated final row 10, read
    assert read(8, 2, 3).tolist() == [8, 9, 10]
    # from 11: the last written row 12 ends the sums; nothing past it
    assert read(11, 2, 3).tolist() == [11, 12]
    # two windows at once, one crossing the truncation at row 10 and one not: each its own end
    for starts in ([8, 4], [4, 8]):     # (K = 1, n = 3)
        read_both = rows_read(replay.window(np.array([0, 0]), np.array(starts), 5), 1, 3, True)
        rows = {start: (np.flatnonzero(read_row) + start).tolist() for start, read_row in zip(starts, read_both)}
        assert rows == {8: [8, 9, 10], 4: [4, 5, 7, 8]}


def test_rows_read_are_exactly_the_rows_targets_depend_on(rng):
    """A row is in ``rows_read`` if and only if changing its stored value or policy changes a
    target -- over windows that cross a termination, a truncation and an episode in progress."""
    replay = GameReplay(80, 1, (1,), 2)
    fill(replay, [([1, 2, 3, 4], [1, 2, 3, 4], "terminated", 0.0),
                  ([1, 0, 2, 1, 3], [5, 6, 7, 8, 9], "truncated", 7.0), ([2, 2, 2], [3, 1, 2], None, 0.0)])
    K, n, W = 2, 3, 6

    def targets(window, values):
        b = make_targets(window, K, n, 0.9, np.random.default_rng(0), values)
        return np.concatenate([b.target_value.ravel(), b.target_policy.ravel()])

    for start in [0, 2, 3, 5, 8, 9, 11, 13]:
        for stored in (True, False):
            values = None if stored else rng.uniform(-1, 1, (1, W))
            window = replay.window(np.array([0]), np.array([start]), W)
            read = rows_read(window, K, n, stored)[0]
            base = targets(window, values)
            for j in range(W):
                depends = False
                for field, bump in (("values", 1.0), ("policies", np.array([0.5, -0.5]))):
                    changed = replay.window(np.array([0]), np.array([start]), W)
                    getattr(changed, field)[0, j] += bump
                    depends |= not np.array_equal(targets(changed, values), base)
                assert depends == read[j], (start, stored, j)


@pytest.mark.parametrize("name", ["muzero", "gumbel_muzero"])
@pytest.mark.slow
def test_learns_cartpole(tmp_path, name):
    """A short seeded run: the greedy policy of the searched model beats random play (about 22)
    by a wide margin. One gradient update per env step (batch 64, K = 5) after 400 warm-up steps;
    MuZero searches 16 simulations per move for 2,000 steps, Gumbel MuZero its own 8 for 2,500.

    BLAS runs on one thread, as in ``rlscratch.train``: faster for these small matrices, and it
    fixes the summation order -- a two-thread BLAS rounds differently, and a short RL run amplifies
    that into a different run. Final 5-episode evaluations measured for this setting at seeds
    5 (the test's), 0, 1, 2, 3: MuZero 500, 193, 80, 64, 132; Gumbel MuZero 500, 500, 410, 138, 305.
    (With half an update per env step instead, both were far less reliable: MuZero 434, 34, 52, 136,
    144; Gumbel 57, 54, 131, 104, 154.)"""
    agent = {"name": name, "num_simulations": 16 if name == "muzero" else 8, "state_dim": 32, "batch_size": 64,
             "warmup_steps": 400, "train_ratio": 1.0, "unroll_steps": 5, "td_steps": 10, "value_support": 20,
             "reward_support": 5, "reanalyze_fraction": 0.0, "optim": {"lr": 3e-3}}
    steps = 2000 if name == "muzero" else 2500   # (Gumbel's 8 simulations per move cost less)
    config = muzero_config(tmp_path, agent, total_steps=steps, eval_episodes=5, checkpoint_every=0)
    config.env.num_envs = 8
    config.model.hidden = [64]
    with threadpool_limits(1):
        summary = train(config, tmp_path / "run")
    print(name, "greedy evaluation after", steps, "steps:", summary["eval_mean"])
    assert summary["eval_mean"] > 100, summary["eval_mean"]


def test_bench_mcts_runs():
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "rlscratch.bench", "mcts", "--roots", "1,3", "--simulations", "5",
                          "--rounds", "1", "--block", "0.01", "--warmup", "0.01", "--json"],
                         capture_output=True, text=True, check=True).stdout
    results = json.loads(out)["results"]
    assert [(r["search"], r["roots"]) for r in results] == [("puct", 1), ("puct", 3), ("gumbel", 1), ("gumbel", 3)]
    assert all(r["sims_per_s"] > 0 and r["simulations"] == 5 for r in results)
