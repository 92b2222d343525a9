"""rlscratch.muzero.fast -- the speed paths -- equal to the readable code they stand in for, in every
array they leave behind: the one-root search on Python lists against the batched search (the whole
tree: statistics, rewards, network values, links, the min-max bounds), with a table model and with a
real network through recurrent_inference_one; FastInference against the training path for every
activation, two hidden layers and different min-max eps for the first and later states; the value
prefix's fast calls (FastPrefixInference, MLP and conv) against value_prefix.PrefixInference, call by
call and as whole pUCT, Gumbel and one-root searches. Mutation
testing (benchmarks/mutation.sh rlscratch/muzero/fast.py) asks each of these to notice a one-line slip."""

from __future__ import annotations

import numpy as np
import pytest
from test_muzero import TableModel, random_table  # tests/ is on sys.path (pytest prepend import mode)

from rlscratch import nn
from rlscratch.muzero.conv_model import ConvMuZeroNet
from rlscratch.muzero.fast import one_at_a_time
from rlscratch.muzero.mcts import MCTS, SearchConfig, select_action
from rlscratch.muzero.model import MuZeroNet
from rlscratch.muzero.support import logits_to_scalar
from rlscratch.muzero.value_prefix import PrefixInference

NODE_ARRAYS = ("visits", "value_sum", "reward", "raw_value", "depth")
EDGE_ARRAYS = ("prior", "edge_visits", "edge_q")


def assert_same_tree(single: MCTS, batched: MCTS, i: int, rtol: float = 1e-12, atol: float = 0.0) -> None:
    """Root i of a batched search and the only root of a one-root search hold the same tree. Links
    are global indices in the batched arrays (node i * N + n, edge (i * N + n) * A + a)."""
    N, A = batched.num_nodes, batched.n_actions
    nodes = slice(0, N - 1)   # every real node; the last one is UNEXPANDED, the batched search's padding
    for name in NODE_ARRAYS + EDGE_ARRAYS:
        got, want = getattr(single, name)[0, nodes], getattr(batched, name)[i, nodes]
        assert np.allclose(got, want, rtol=rtol, atol=atol), (name, got, want)
    assert np.array_equal(single.children[0, nodes], batched.children[i, nodes] - i * N)
    assert np.array_equal(single.in_edge[0, 1:N - 1], batched.in_edge[i, 1:N - 1] - i * N * A)
    assert single.low[0] == pytest.approx(batched.low[i], rel=rtol, abs=atol)
    assert single.high[0] == pytest.approx(batched.high[i], rel=rtol, abs=atol)
    assert np.isfinite([single.low[0], single.high[0]]).all() and single.low[0] < single.high[0]


def same_answer(one, many, i: int, rtol: float = 1e-12) -> None:
    assert np.array_equal(one.visit_counts[0], many.visit_counts[i])
    assert np.allclose(one.q_values[0], many.q_values[i], rtol=rtol)
    assert np.allclose(one.policy[0], many.policy[i], rtol=rtol)
    assert one.root_value[0] == pytest.approx(many.root_value[i], rel=rtol)


@pytest.mark.parametrize("config", [
    SearchConfig(num_simulations=30, discount=0.9),
    # a wide min-max floor (most Q ranges below it), a strong, quickly growing exploration term
    SearchConfig(num_simulations=24, discount=0.8, value_delta=1.5, pb_c_init=3.0, pb_c_base=4.0),
], ids=["defaults", "wide-delta-strong-exploration"])
def test_one_root_search_leaves_the_batched_tree(config):
    A = 3
    roots = {i: (np.random.default_rng(300 + i).dirichlet(np.ones(A)), 1.5 * i - 2.0) for i in range(4)}
    model = TableModel(A, random_table(A, seed=11), roots)
    obs = np.arange(4.0)
    batched = MCTS(config, A)
    many = batched.run(model, obs, np.random.default_rng(5), explore=False)
    for i in range(4):
        single = MCTS(config, A)
        one = single.run(model, obs[i:i + 1], np.random.default_rng(6), explore=False)
        assert_same_tree(single, batched, i)
        same_answer(one, many, i)
        assert single.depth[0].max() >= 3   # deep enough that the discounted backup matters


def test_one_root_search_explores_like_the_batched_one():
    """With exploration on, the one-root search's root prior carries Dirichlet noise; from there it is
    the search the batched code runs on two copies of the root handed that same (noised) prior."""
    A, config = 4, SearchConfig(num_simulations=20, discount=0.95)
    model = TableModel(A, random_table(A, seed=2), {0: (np.array([0.4, 0.3, 0.2, 0.1]), 0.5)})
    single = MCTS(config, A)
    one = single.run(model, np.zeros(1), np.random.default_rng(9), explore=True)
    assert not np.allclose(single.prior[0, 0], [0.4, 0.3, 0.2, 0.1])   # the noise is there
    # the same root prior (noise included) handed to the batched search over two copies of the root
    batched = MCTS(config, A)
    state, _, value = model.initial_inference(np.zeros(2))
    logits = np.log(np.repeat(single.prior[:1, 0], 2, axis=0))
    many = batched.run_from_root(model, state, logits, value, np.random.default_rng(9), explore=False)
    for i in range(2):
        assert_same_tree(single, batched, i, rtol=1e-9)
        same_answer(one, many, i, rtol=1e-9)


def real_net(rng, activation: str = "relu", hidden=(6,), dtype=np.float64) -> MuZeroNet:
    net = MuZeroNet(3, 3, rng, state_dim=5, hidden=list(hidden), value_support=3, reward_support=2,
                    activation=activation).astype(dtype)
    net.flat_params[:] = rng.standard_normal(net.flat_params.size) * 0.6   # no zero-initialised heads
    return net


class BatchedOnly:
    """A network seen through the batched calls only: the one-root search then goes one_at_a_time."""

    def __init__(self, net: MuZeroNet) -> None:
        self.net = net

    def initial_inference(self, obs):
        return self.net.initial_inference(obs)

    def recurrent_inference(self, state, actions):
        return self.net.recurrent_inference(state, actions)


def test_one_root_search_with_a_network(rng):
    """A real MuZeroNet: the one-root search calls recurrent_inference_one (1-D buffers, the state
    written into the tree's slot); it leaves the tree of the same search run through the batched
    call one leaf at a time, and the tree of the batched search over several roots."""
    net = real_net(rng)
    obs = rng.standard_normal((3, 3))
    config = SearchConfig(num_simulations=25, discount=0.97)
    batched = MCTS(config, 3)
    many = batched.run(net, obs, np.random.default_rng(0), explore=False)
    for i in range(3):
        single, reference = MCTS(config, 3), MCTS(config, 3)
        one = single.run(net, obs[i:i + 1], np.random.default_rng(1), explore=False)
        reference.run(BatchedOnly(net), obs[i:i + 1], np.random.default_rng(1), explore=False)
        assert_same_tree(single, reference, 0, rtol=1e-9, atol=1e-12)
        assert np.allclose(single.states[0, :-1], reference.states[0, :-1], rtol=1e-9, atol=1e-12)
        assert_same_tree(single, batched, i, rtol=1e-9, atol=1e-12)
        assert np.allclose(single.states[0, :-1], batched.states[i, :-1], rtol=1e-9, atol=1e-12)
        same_answer(one, many, i, rtol=1e-9)


def test_one_at_a_time_is_the_batched_call_for_one_row(rng):
    net = real_net(rng)
    state, _, _ = net.initial_inference(rng.standard_normal((1, 3)))
    slot = np.full(5, np.nan)
    reward, logits, value = one_at_a_time(net)(state[0], 2, slot)
    next_state, rewards, all_logits, values = net.recurrent_inference(state, np.array([2]))
    assert isinstance(reward, float) and isinstance(value, float) and logits.dtype == np.float64
    assert reward == rewards[0] and value == values[0]
    assert np.array_equal(logits, all_logits[0]) and np.array_equal(slot, next_state[0])


@pytest.mark.parametrize("activation,hidden", [("relu", (6, 4)), ("tanh", (6,)), ("elu", (4, 6)),
                                               ("sigmoid", (6,)), ("leaky_relu", (5, 5))])
def test_fast_inference_is_the_training_path(rng, activation, hidden):
    """Every inference path -- batched initial and recurrent, and the one-row recurrent call -- gives
    the training path's states, logits, rewards and values, for every activation and two hidden
    layers, with different min-max eps for the first state and the later ones."""
    net = real_net(rng, activation, hidden)
    net.scale_initial.eps, net.scale_next.eps = 0.3, 0.05   # before the first inference builds its plans
    obs, actions = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2])
    state, logits, value = net.initial_inference(obs)
    train_state = net.represent(obs)
    train_logits, value_logits = net.predict(train_state)
    assert np.allclose(state, train_state, rtol=1e-12) and np.allclose(logits, train_logits, rtol=1e-12)
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support), rtol=1e-12)
    h = net.representation.infer(obs)   # s_0 = (h - min h) / (max h - min h + 0.3), row by row
    low, high = h.min(axis=1, keepdims=True), h.max(axis=1, keepdims=True)
    assert np.allclose(state, (h - low) / (high - low + 0.3), rtol=1e-12)
    next_state, reward, logits, value = net.recurrent_inference(state, actions)
    train_next, reward_logits = net.dynamics(train_state, actions)
    train_logits, value_logits = net.predict(train_next)
    net.clear_saved()
    train_reward = logits_to_scalar(reward_logits, net.reward_support)
    train_value = logits_to_scalar(value_logits, net.value_support)
    assert np.allclose(next_state, train_next, rtol=1e-12) and np.allclose(logits, train_logits, rtol=1e-12)
    assert np.allclose(reward, train_reward, rtol=1e-12) and np.allclose(value, train_value, rtol=1e-12)
    assert np.ptp(reward) > 1e-3 and np.ptp(value) > 1e-3   # the heads are not flat
    slots = np.zeros_like(state)
    for i in range(4):
        r, one_logits, v = net.recurrent_inference_one(state[i], int(actions[i]), slots[i])
        assert np.allclose(one_logits, train_logits[i], rtol=1e-12)
        assert r == pytest.approx(train_reward[i], rel=1e-12) and v == pytest.approx(train_value[i], rel=1e-12)
    assert np.allclose(slots, train_next, rtol=1e-12)


def test_fast_inference_follows_the_parameters(rng):
    """The plans hold views of the flat buffer: a parameter update is seen by the next call, and
    moving the parameters to a new buffer (astype) rebuilds them."""
    net = real_net(rng)
    obs = rng.standard_normal((2, 3))
    before = net.initial_inference(obs)[1].copy()
    net.flat_params *= 1.5
    after = net.initial_inference(obs)[1]
    assert not np.allclose(before, after)
    assert np.allclose(after, net.predict(net.represent(obs))[0], rtol=1e-12)
    net.clear_saved()
    net32 = net.astype(np.float32)
    state, logits, _ = net32.initial_inference(obs.astype(np.float32))
    assert state.dtype == np.float32 and logits.dtype == np.float32
    assert np.allclose(logits, after, rtol=1e-4, atol=1e-5)


def test_support_means_survive_logits_far_from_zero(rng):
    """Each head's softmax subtracts its own maximum, over all its bins, before exp: a first reward
    bin near +900 and value logits near -900 give the training path's finite rewards and values, in
    the batched and the one-row call (a maximum shared by the heads, added, doubled, or taken without
    the first bin overflows exp)."""
    net = real_net(rng)
    D, A = net.state_dim, net.n_actions
    net.dynamics_net.layers[-1].params["b"][D] += 900.0
    net.prediction.layers[-1].params["b"][A:] -= 900.0
    state, _, _ = net.initial_inference(rng.standard_normal((3, 3)))
    actions = np.array([2, 0, 1])
    with np.errstate(over="raise", invalid="raise"):
        next_state, reward, _, value = net.recurrent_inference(state, actions)
        one = [net.recurrent_inference_one(state[i], int(actions[i]), np.zeros(D)) for i in range(3)]
    train_next, reward_logits = net.dynamics(state, actions)
    _, value_logits = net.predict(train_next)
    net.clear_saved()
    assert np.allclose(reward, logits_to_scalar(reward_logits, net.reward_support), rtol=1e-9)
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support), rtol=1e-9)
    assert np.allclose([r for r, _, _ in one], reward, rtol=1e-9) and np.allclose([v for _, _, v in one], value,
                                                                                   rtol=1e-9)


def test_fast_inference_keeps_float32(rng):
    """A float32 network computes in float32, whatever the observations' dtype."""
    net = real_net(rng, dtype=np.float32)
    state, logits, value = net.initial_inference(rng.standard_normal((2, 3)))   # float64 observations
    next_state, reward, logits, value2 = net.recurrent_inference(state, np.array([0, 1]))
    for array in (state, logits, value, next_state, reward, value2):
        assert array.dtype == np.float32
    # the one-row call of a one-root search: its reused float32 buffers, the batched call's numbers
    slot = np.zeros(net.state_dim, np.float32)
    r, one_logits, v = net.recurrent_inference_one(state[1], 1, slot)
    assert np.allclose(slot, next_state[1], rtol=1e-5) and np.allclose(one_logits, logits[1], rtol=1e-5)
    assert r == pytest.approx(reward[1], abs=1e-4) and v == pytest.approx(value2[1], abs=1e-4)   # float32 roundoff


class OneAtATimeCounted(TableModel):
    """A table model that also offers the one-root call, counting who is asked what."""

    def __init__(self, *args, shift: float = 0.0) -> None:
        super().__init__(*args)
        self.one_calls = 0
        self.shift = shift   # added to every policy logit: softmax ignores it, exp without the max does not

    def recurrent_inference(self, state, action):
        next_state, reward, logits, value = super().recurrent_inference(state, action)
        return next_state, reward, logits + self.shift, value

    def recurrent_inference_one(self, state, action, next_state_out):
        self.one_calls += 1
        next_state, reward, logits, value = self.recurrent_inference(state[None], np.array([action]))
        self.leaf_batches.pop()
        next_state_out[...] = next_state[0]
        return float(reward[0]), logits[0], float(value[0])


def test_one_root_search_calls_recurrent_inference_one():
    model = OneAtATimeCounted(3, random_table(3, seed=4), {0: (np.array([0.5, 0.3, 0.2]), 0.0)})
    MCTS(SearchConfig(num_simulations=15), 3).run(model, np.zeros(1), np.random.default_rng(0), explore=False)
    assert model.one_calls == 15 and model.leaf_batches == []


def test_one_root_priors_survive_large_logits():
    """Policy logits near +800 (a shift softmax ignores): the one-root search's priors, computed on
    Python floats, subtract the largest logit first and leave the batched search's tree. (This table
    has exact ties, so each root goes first in its batch and both searches draw the same tie noise.)"""
    roots = {0: (np.array([0.6, 0.3, 0.1]), 0.2), 1: (np.array([0.2, 0.2, 0.6]), -0.4)}
    config = SearchConfig(num_simulations=12, discount=0.9)
    model = OneAtATimeCounted(3, random_table(3, seed=8), roots, shift=800.0)
    for first, other in ((0, 1), (1, 0)):
        batched = MCTS(config, 3)
        many = batched.run(model, np.array([first, other], dtype=float), np.random.default_rng(0), explore=False)
        single = MCTS(config, 3)
        one = single.run(model, np.array([float(first)]), np.random.default_rng(0), explore=False)
        assert_same_tree(single, batched, 0, rtol=1e-9)
        same_answer(one, many, 0, rtol=1e-9)


def test_one_root_ties_go_the_way_of_the_tie_noise():
    """Every action alike (uniform prior, equal values and rewards): the root's first choice is the
    action whose tie noise is largest, and its second the largest of the others."""
    A = 4

    def flat(node_id):
        return 0.0, np.full(A, 1 / A), 0.0

    for seed in range(3):
        search = MCTS(SearchConfig(num_simulations=2), A)
        search.run(TableModel(A, flat, {0: (np.full(A, 1 / A), 0.0)}), np.zeros(1), np.random.default_rng(seed),
                   explore=False)
        order = np.argsort(-search.tie_noise[0, 0])
        assert search.in_edge[0, 1] == order[0] and search.in_edge[0, 2] == order[1]


# -- the value prefix's search calls (fast.FastPrefixInference) against value_prefix.PrefixInference --------
def prefix_net(rng, network: str, horizon: int = 2):
    """A float64 network with a value prefix (LSTM horizon 2, so the searches below cross resets),
    every head non-zero: an MLP MuZeroNet or a small conv net (with a layer or batch norm in its blocks)."""
    if network == "mlp":
        net = MuZeroNet(3, 3, rng, state_dim=5, hidden=[6], value_support=3, reward_support=2,
                        value_prefix_hidden=4, lstm_horizon=horizon).astype(np.float64)
        obs = rng.standard_normal((3, 3))
    else:   # conv, conv-layer, conv-batch: the block_norm after the dash
        net = ConvMuZeroNet((4, 4, 2), 3, rng, channels=2, blocks=1, reduced_channels=1, head_hidden=3,
                            value_support=3, reward_support=2, value_prefix_hidden=4, lstm_horizon=horizon,
                            block_norm=(network.split("-") + ["none"])[1]).astype(np.float64)
        obs = (rng.random((3, 32)) < 0.4) * 1.0
    net.flat_params[:] = rng.standard_normal(net.flat_params.size) * 0.6
    for _, module in net.modules():   # a batch norm's running statistics, away from (0, 1)
        if isinstance(module, nn.BatchNorm):
            module.buffers["running_mean"][:] = rng.standard_normal(module.buffers["running_mean"].shape)
            module.buffers["running_var"][:] = rng.uniform(0.5, 2.0, module.buffers["running_var"].shape)
    return net, obs


class ReadablePrefix:
    """A value-prefix network seen through the readable search calls only (value_prefix.PrefixInference),
    with no one-row call: a one-root search then goes one_at_a_time through them."""

    def __init__(self, net) -> None:
        self.calls = PrefixInference(net)

    def initial_inference(self, obs):
        return self.calls.initial_inference(obs)

    def recurrent_inference(self, state, actions):
        return self.calls.recurrent_inference(state, actions)


@pytest.mark.parametrize("network,horizon", [("mlp", 2), ("conv", 2), ("conv-layer", 2), ("conv-batch", 2),
                                             ("mlp", 3)])
def test_fast_prefix_calls_are_the_readable_ones(rng, network, horizon):
    """Five model steps from three roots (horizon 2: resets after depths 2 and 4; horizon 3, where
    depth + 1 and depth - 1 are not the same modulo the horizon: after depth 3): the fast calls give
    the readable calls' node rows [s | h | c | prefix | depth], edge rewards, logits and values, and the
    one-row call the same row, reward, logits and value."""
    net, obs = prefix_net(rng, network, horizon)
    readable = ReadablePrefix(net)
    node, logits, value = net.initial_inference(obs)
    ref_node, ref_logits, ref_value = readable.initial_inference(obs)
    assert np.allclose(node, ref_node, rtol=1e-12) and np.allclose(logits, ref_logits, rtol=1e-12)
    assert np.allclose(value, ref_value, rtol=1e-12)
    rewards = []
    for d in range(5):
        actions = rng.integers(0, 3, 3)
        slots = np.full_like(node, np.nan)
        one = [net.recurrent_inference_one(node[i], int(actions[i]), slots[i]) for i in range(3)]
        node, reward, logits, value = net.recurrent_inference(node, actions)
        ref_node, ref_reward, ref_logits, ref_value = readable.recurrent_inference(ref_node, actions)
        for got, want in ((node, ref_node), (reward, ref_reward), (logits, ref_logits), (value, ref_value),
                          (slots, ref_node)):
            assert np.allclose(got, want, rtol=1e-10, atol=1e-13), (d, got, want)
        assert np.allclose([r for r, _, _ in one], ref_reward, rtol=1e-10, atol=1e-13)
        assert np.allclose([v for _, _, v in one], ref_value, rtol=1e-10, atol=1e-13)
        assert np.allclose([lg for _, lg, _ in one], ref_logits, rtol=1e-10, atol=1e-13)
        assert np.all(node[:, -1] == d + 1)
        rewards.append(reward)
    H = net.value_prefix.hidden
    assert np.all(node[:, -2 - 2 * H:-2] != 0.0)          # depth 5: the LSTM state is carried
    assert np.ptp(rewards) > 1e-3                          # the prefix head is not flat


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_fast_prefix_calls_keep_float32(rng, network):
    """A float32 value-prefix network's fast calls compute in float32 (as the readable ones do): the
    node rows, edge rewards, logits and values, at the readable calls' numbers."""
    net, obs = prefix_net(rng, network)
    net = net.astype(np.float32)
    readable = ReadablePrefix(net)
    node, logits, value = net.initial_inference(obs)
    new, reward, logits2, value2 = net.recurrent_inference(node, np.array([0, 1, 2]))
    for array in (node, logits, value, new, reward, logits2, value2):
        assert array.dtype == np.float32
    ref_node, _, ref_value = readable.initial_inference(obs)
    _, ref_reward, _, ref_value2 = readable.recurrent_inference(ref_node, np.array([0, 1, 2]))
    for got, want in ((value, ref_value), (reward, ref_reward), (value2, ref_value2)):
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("network", ["mlp", "conv", "conv-layer", "conv-batch"])
@pytest.mark.parametrize("gumbel", [False, True], ids=["puct", "gumbel"])
def test_value_prefix_search_on_the_fast_path_is_the_readable_search(rng, network, gumbel):
    """The batched search over three roots, with exploration noise, on the fast calls and on the
    readable ones (the same generator seed): the same visit counts, root values, Q-values, policies and
    chosen actions, and the same tree (statistics, edge rewards, node rows) -- deep enough to cross
    the LSTM's resets."""
    net, obs = prefix_net(rng, network)
    config = SearchConfig(num_simulations=24, discount=0.95, gumbel=gumbel, max_considered_actions=3)
    fast, readable = MCTS(config, 3), MCTS(config, 3)
    got = fast.run(net, obs, np.random.default_rng(4), explore=True)
    want = readable.run(ReadablePrefix(net), obs, np.random.default_rng(4), explore=True)
    assert np.array_equal(got.visit_counts, want.visit_counts)
    assert np.allclose(got.root_value, want.root_value, rtol=1e-10)
    assert np.allclose(got.q_values, want.q_values, rtol=1e-10)
    assert np.allclose(got.policy, want.policy, rtol=1e-10)
    if gumbel:
        assert np.array_equal(got.action, want.action)
    else:
        assert got.action is None and want.action is None
        chosen = [select_action(r.visit_counts, 1.0, np.random.default_rng(7)) for r in (got, want)]
        assert np.array_equal(*chosen)
    for name in NODE_ARRAYS + EDGE_ARRAYS + ("states",):
        assert np.allclose(getattr(fast, name), getattr(readable, name), rtol=1e-10, atol=1e-13), name
    for name in ("children", "in_edge"):
        assert np.array_equal(getattr(fast, name), getattr(readable, name)), name
    assert fast.depth.max() > 2 and np.ptp(fast.reward[:, 1:-1]) > 1e-3


@pytest.mark.parametrize("network", ["mlp", "conv", "conv-layer", "conv-batch"])
def test_one_root_value_prefix_search_is_the_readable_search(rng, network):
    """A pUCT search over ONE root runs on Python lists (simulate_one_root) through the fast one-row
    call: it leaves the tree the readable calls leave one leaf at a time, and the tree of the batched
    readable search over several roots."""
    net, obs = prefix_net(rng, network)
    config = SearchConfig(num_simulations=25, discount=0.97)
    batched = MCTS(config, 3)
    many = batched.run(ReadablePrefix(net), obs, np.random.default_rng(0), explore=False)
    for i in range(3):
        single, reference = MCTS(config, 3), MCTS(config, 3)
        one = single.run(net, obs[i:i + 1], np.random.default_rng(1), explore=False)
        reference.run(ReadablePrefix(net), obs[i:i + 1], np.random.default_rng(1), explore=False)
        for other, j in ((reference, 0), (batched, i)):
            assert_same_tree(single, other, j, rtol=1e-9, atol=1e-12)
            assert np.allclose(single.states[0, :-1], other.states[j, :-1], rtol=1e-9, atol=1e-12)
        same_answer(one, many, i, rtol=1e-9)
        assert single.depth[0].max() > 2
