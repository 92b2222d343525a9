"""Replay buffers and n-step returns: hand-computed targets (terminations and truncations inside the
window, several envs), the ring's wraparound, the sum-tree's sampling law and edge cases, prioritized
replay's weights, and exact save/restore."""

import numpy as np
import pytest

from rlscratch.buffers import NStepQueue, PrioritizedReplayBuffer, ReplayBuffer, SumTree
from rlscratch.returns import n_step_returns


# -- rlscratch.returns.n_step_returns --------------------------------------------------------------
def test_n_step_returns_without_episode_ends():
    # gamma 0.5, n 3; the last two windows run out of data and bootstrap early
    G, discount, last = n_step_returns([1, 2, 3, 4, 5], [0] * 5, [0] * 5, gamma=0.5, n=3)
    assert np.allclose(G, [1 + 1 + 0.75, 2 + 1.5 + 1, 3 + 2 + 1.25, 4 + 2.5, 5])
    assert np.allclose(discount, [0.125, 0.125, 0.125, 0.25, 0.5])
    assert list(last) == [2, 3, 4, 4, 4]


def test_n_step_returns_stop_at_termination_and_truncation():
    rewards = np.array([[1, 1], [2, 2], [3, 3], [4, 4]], dtype=float)  # two envs, same rewards
    terminated = np.array([[0, 0], [1, 0], [0, 0], [0, 0]], dtype=bool)  # env 0 terminates at t=1
    truncated = np.array([[0, 0], [0, 1], [0, 0], [0, 0]], dtype=bool)  # env 1 is cut at t=1
    G, discount, last = n_step_returns(rewards, terminated, truncated, gamma=0.5, n=3)
    # The sums stop at the episode end in both envs, and the new episode starts at t=2.
    assert np.allclose(G[:, 0], [1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4]) and np.allclose(G[:, 1], G[:, 0])
    assert list(last[:, 0]) == [1, 1, 3, 3] and list(last[:, 1]) == [1, 1, 3, 3]
    # termination: nothing to bootstrap; truncation: bootstrap from the final observation
    assert np.allclose(discount[:, 0], [0, 0, 0.25, 0.5])
    assert np.allclose(discount[:, 1], [0.25, 0.5, 0.25, 0.5])


def test_one_step_returns_are_the_td_target_terms():
    G, discount, last = n_step_returns([1.0, 2.0, 3.0], [0, 1, 0], [0, 0, 1], gamma=0.9, n=1)
    assert np.allclose(G, [1, 2, 3]) and np.allclose(discount, [0.9, 0, 0.9]) and list(last) == [0, 1, 2]


# -- n-step folding in the buffer --------------------------------------------------------------------
def _obs(env, t, final=False):
    """Observation ids: 100 * env + t for the state at time t; +0.5 marks a next_obs (s_{t+1})."""
    return 100.0 * env + t + (0.5 if final else 0.0)


def test_buffer_n_step_transitions_by_hand():
    """Two envs, gamma 0.5, n 3. Env 0 terminates at t=1, env 1 is truncated at t=3."""
    buffer = ReplayBuffer(100, obs_shape=(1,), num_envs=2, n_step=3, gamma=0.5)
    rewards = [[1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60]]
    terminated = [[0, 0], [1, 0], [0, 0], [0, 0], [0, 0], [0, 0]]
    truncated = [[0, 0], [0, 0], [0, 0], [0, 1], [0, 0], [0, 0]]
    written_at = {}
    for t in range(6):
        obs = np.array([[_obs(0, t)], [_obs(1, t)]], dtype=np.float32)
        next_obs = obs + 0.5
        slots = buffer.add(obs, np.array([t, t]), np.array(rewards[t], float), next_obs,
                           np.array(terminated[t], bool), np.array(truncated[t], bool))
        for slot in slots:
            written_at[float(buffer.obs[slot, 0])] = t
    stored = {float(buffer.obs[i, 0]): (int(buffer.actions[i]), float(buffer.rewards[i]),
                                        float(buffer.next_obs[i, 0]), float(buffer.discounts[i]))
              for i in range(len(buffer))}
    expected = {
        # env 0: the termination closes both of its windows at t=1, with no bootstrap
        _obs(0, 0): (0, 1 + 0.5 * 2, _obs(0, 1, True), 0.0),
        _obs(0, 1): (1, 2.0, _obs(0, 1, True), 0.0),
        # the next episode: full windows
        _obs(0, 2): (2, 3 + 0.5 * 4 + 0.25 * 5, _obs(0, 4, True), 0.125),
        _obs(0, 3): (3, 4 + 0.5 * 5 + 0.25 * 6, _obs(0, 5, True), 0.125),
        # env 1: full windows, then the truncation flushes the rest, each bootstrapping from s_4
        _obs(1, 0): (0, 10 + 0.5 * 20 + 0.25 * 30, _obs(1, 2, True), 0.125),
        _obs(1, 1): (1, 20 + 0.5 * 30 + 0.25 * 40, _obs(1, 3, True), 0.125),
        _obs(1, 2): (2, 30 + 0.5 * 40, _obs(1, 3, True), 0.25),
        _obs(1, 3): (3, 40.0, _obs(1, 3, True), 0.5),
    }
    assert stored == expected  # every value here is exact in binary floating point
    # each transition is written the moment its window closes, not later
    assert written_at == {_obs(0, 0): 1, _obs(0, 1): 1, _obs(0, 2): 4, _obs(0, 3): 5,
                          _obs(1, 0): 2, _obs(1, 1): 3, _obs(1, 2): 3, _obs(1, 3): 3}


@pytest.mark.parametrize("n", [1, 2, 4])
def test_buffer_n_step_matches_returns_on_random_episodes(n):
    """Streamed through the per-env queues, a long random run stores exactly the transitions that
    n_step_returns computes on the whole trajectory at once (minus the windows still open)."""
    rng = np.random.default_rng(n)
    T, E, gamma = 300, 3, 0.9
    rewards = rng.standard_normal((T, E))
    terminated = rng.random((T, E)) < 0.05
    truncated = ~terminated & (rng.random((T, E)) < 0.05)
    obs = np.arange(T * E, dtype=np.float32).reshape(T, E, 1)
    next_obs = -obs - 1  # a distinct id for each step's next observation
    buffer = ReplayBuffer(T * E, obs_shape=(1,), num_envs=E, n_step=n, gamma=gamma)
    for t in range(T):
        buffer.add(obs[t], np.zeros(E, int), rewards[t], next_obs[t], terminated[t], truncated[t])

    G, discount, last = n_step_returns(rewards, terminated, truncated, gamma, n)
    done = terminated | truncated
    expected = {}
    for t in range(T):
        for e in range(E):
            closed = last[t, e] - t == n - 1 or done[last[t, e], e]  # not cut short by the data's end
            if closed:
                expected[float(obs[t, e, 0])] = (G[t, e], float(next_obs[last[t, e], e, 0]), discount[t, e])
    stored = {float(buffer.obs[i, 0]): (float(buffer.rewards[i]), float(buffer.next_obs[i, 0]),
                                        float(buffer.discounts[i])) for i in range(len(buffer))}
    assert stored.keys() == expected.keys()
    for key, (g, nxt, disc) in expected.items():
        assert stored[key] == pytest.approx((g, nxt, disc), rel=1e-5, abs=1e-5)


def test_queue_rejects_n_zero():
    with pytest.raises(ValueError):
        NStepQueue(0, 0.9, 1, (1,), np.float32)


# -- the ring ---------------------------------------------------------------------------------------
def _add_steps(buffer, values, num_envs=1):
    for v in values:
        obs = np.full((num_envs, 1), v, dtype=np.float32) + np.arange(num_envs)[:, None] / 10
        buffer.add(obs, np.zeros(num_envs, int), np.full(num_envs, v, float), obs + 1,
                   np.zeros(num_envs, bool), np.zeros(num_envs, bool))


def test_ring_wraparound_overwrites_the_oldest():
    buffer = ReplayBuffer(5, obs_shape=(1,))
    _add_steps(buffer, range(7))
    assert len(buffer) == 5 and buffer.pos == 2
    assert list(buffer.rewards) == [5, 6, 2, 3, 4]
    assert np.array_equal(buffer.next_obs[:, 0], buffer.obs[:, 0] + 1)
    batch = buffer.sample(1000, np.random.default_rng(0))
    assert set(batch.rewards.tolist()) == {2, 3, 4, 5, 6}
    assert np.array_equal(batch.obs[:, 0], batch.rewards)  # fields of one slot stay together


def test_vector_insertion_wraps_inside_one_step():
    buffer = ReplayBuffer(5, obs_shape=(1,), num_envs=2)
    _add_steps(buffer, [0, 1, 2], num_envs=2)  # slots 0,1 | 2,3 | 4,0
    assert buffer.pos == 1 and len(buffer) == 5
    assert np.allclose(buffer.obs[:, 0], [2.1, 0.1, 1.0, 1.1, 2.0])


def test_sampling_is_uniform_over_filled_slots():
    buffer = ReplayBuffer(10, obs_shape=(1,))
    _add_steps(buffer, range(4))
    counts = np.bincount(buffer.sample(40_000, np.random.default_rng(1)).indices, minlength=10)
    assert counts[4:].sum() == 0
    assert np.allclose(counts[:4] / 40_000, 0.25, atol=0.01)


def test_empty_buffer_and_too_small_capacity():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, obs_shape=(1,)).sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(5, obs_shape=(1,), num_envs=2, n_step=3)


def test_bytes_per_transition():
    # CartPole: obs and next_obs 4 float32 each, a uint8 action, float32 return and discount
    buffer = ReplayBuffer(1000, obs_shape=(4,), action_dtype=np.uint8)
    assert buffer.bytes_per_transition == 16 + 16 + 1 + 4 + 4


# -- the sum-tree -----------------------------------------------------------------------------------
def test_sum_tree_sums_and_prefix_search():
    tree = SumTree(5)  # not a power of two: 8 leaves, 3 of them padding
    tree.update(np.arange(5), [1.0, 2.0, 3.0, 4.0, 0.0])
    assert tree.total == 10.0 and tree.first_leaf == 8
    u = np.array([0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999])
    assert list(tree.find(u)) == [0, 0, 1, 1, 2, 2, 3, 3]
    # at or past the total (roundoff), the last positive leaf -- never the zero leaf 4 or padding
    assert list(tree.find(np.array([10.0, 1e9, -5.0]))) == [3, 3, 0]


def test_sum_tree_sampling_follows_priorities():
    tree = SumTree(6)
    priorities = np.array([0.5, 0.0, 2.0, 1.0, 0.25, 4.25])
    tree.update(np.arange(6), priorities)
    rng = np.random.default_rng(0)
    draws = np.concatenate([tree.sample(64, rng) for _ in range(2000)])
    freq = np.bincount(draws, minlength=6) / len(draws)
    assert freq[1] == 0  # zero priority: never drawn
    assert np.allclose(freq, priorities / priorities.sum(), atol=0.005)


def test_sum_tree_updates_and_repeated_indices():
    tree = SumTree(4)
    tree.update(np.arange(4), 1.0)
    tree.update(np.array([2, 2, 0]), np.array([5.0, 5.0, 0.0]))
    assert list(tree.priorities) == [0.0, 1.0, 5.0, 1.0] and tree.total == 7.0
    rebuilt = SumTree(4)
    rebuilt.load_state_dict(tree.state_dict())
    assert np.array_equal(rebuilt.nodes, tree.nodes)
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([np.nan]))


def test_sum_tree_edge_cases():
    single = SumTree(1)
    single.update(np.array([0]), 3.0)
    assert single.total == 3.0 and list(single.find(np.array([0.0, 2.9, 3.0]))) == [0, 0, 0]
    empty = SumTree(3)
    with pytest.raises(ValueError, match="zero"):
        empty.sample(2, np.random.default_rng(0))
    last_only = SumTree(7)
    last_only.update(np.array([6]), 1e-12)  # the last leaf, with a tiny priority
    assert set(last_only.sample(100, np.random.default_rng(0))) == {6}
    with pytest.raises(ValueError):
        SumTree(0)


# -- prioritized replay -----------------------------------------------------------------------------
def test_prioritized_weights_and_priority_updates():
    buffer = PrioritizedReplayBuffer(8, obs_shape=(1,), alpha=0.5, eps=0.0)
    _add_steps(buffer, range(4))
    assert np.allclose(buffer.tree.priorities[:4], 1.0)  # new transitions: the max priority so far
    buffer.update_priorities(np.arange(4), np.array([1.0, -4.0, 9.0, 0.0]))  # |delta|^alpha: 1, 2, 3, 0
    assert np.allclose(buffer.tree.priorities[:4], [1, 2, 3, 0]) and buffer.max_priority == 9.0
    batch = buffer.sample(600, np.random.default_rng(0), beta=0.5)
    assert 3 not in batch.indices
    p = np.array([1, 2, 3, 0])[batch.indices] / 6
    w = (4 * p) ** -0.5
    assert np.allclose(batch.weights, w / w.max()) and batch.weights.max() == 1.0
    assert np.array_equal(batch.rewards, batch.indices)  # the slots' own transitions
    _add_steps(buffer, [4])  # a new transition enters at the largest priority seen: 9^0.5
    assert buffer.tree.priorities[4] == pytest.approx(3.0)


def test_prioritized_overwrite_resets_priority():
    buffer = PrioritizedReplayBuffer(2, obs_shape=(1,), alpha=1.0)
    _add_steps(buffer, range(2))
    buffer.update_priorities(np.array([0, 1]), np.array([0.0, 0.0]))
    _add_steps(buffer, [2])  # overwrites slot 0
    assert buffer.tree.priorities[0] == pytest.approx(1.0) and buffer.tree.priorities[1] == pytest.approx(1e-6)


# -- checkpoints ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ReplayBuffer, PrioritizedReplayBuffer])
def test_state_dict_round_trip_saves_filled_part_and_pending_windows(cls):
    rng = np.random.default_rng(0)
    kwargs = dict(obs_shape=(3,), action_dtype=np.uint8, num_envs=2, n_step=3, gamma=0.9)
    steps = [(rng.standard_normal((2, 3)).astype(np.float32), rng.integers(0, 4, 2).astype(np.uint8),
              rng.standard_normal(2), rng.standard_normal((2, 3)).astype(np.float32),
              rng.random(2) < 0.1, rng.random(2) < 0.1) for _ in range(40)]
    original = cls(60, **kwargs)
    for step in steps[:20]:
        original.add(*step)
    if cls is PrioritizedReplayBuffer:
        original.update_priorities(np.arange(10), rng.standard_normal(10))
    state = original.state_dict()
    assert state["obs"].shape[0] == len(original) < 60  # only the filled slots
    restored = cls(60, **kwargs)
    restored.load_state_dict(state)
    for step in steps[20:]:  # the pending n-step windows came back too (and the ring wraps)
        assert np.array_equal(original.add(*step), restored.add(*step))
    for name in ("obs", "actions", "rewards", "next_obs", "discounts"):
        assert np.array_equal(getattr(original, name), getattr(restored, name)), name
    assert original.pos == restored.pos and len(original) == len(restored) == 60
    if cls is PrioritizedReplayBuffer:
        assert np.array_equal(original.tree.nodes, restored.tree.nodes)
    a, b = original.sample(16, np.random.default_rng(5)), restored.sample(16, np.random.default_rng(5))
    assert np.array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="60 slots, this one 10"):
        cls(10, **kwargs).load_state_dict(state)
