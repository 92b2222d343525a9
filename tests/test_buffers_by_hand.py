"""Replay buffers: the cases mutation testing (benchmarks/mutation.sh) showed the older tests let through --
when the n-step queue first emits, the dtypes it stores in (its memory), the defaults, prioritized replay's
discounts and weights, stratified sampling drawn by hand, and every error message in full."""

import numpy as np
import pytest

from rlscratch.buffers import NStepQueue, PrioritizedReplayBuffer, ReplayBuffer, SumTree


def push_plain(queue_or_buffer, t: int, num_envs: int = 1):
    """Step t of ``num_envs`` envs, no episode ends: obs = t (+ env / 10), reward 2^t."""
    obs = np.full((num_envs, 1), t, np.float32) + np.arange(num_envs, dtype=np.float32)[:, None] / 10
    flags = np.zeros(num_envs, bool)
    args = (obs, np.full(num_envs, t), np.full(num_envs, 2.0 ** t), obs + 1, flags, flags)
    return queue_or_buffer.push(*args) if isinstance(queue_or_buffer, NStepQueue) else queue_or_buffer.add(*args)


# -- the n-step queue ----------------------------------------------------------------------------------------
def test_queue_emits_nothing_until_its_first_window_is_full():
    """n = 3, no episode ends: steps 0 and 1 complete nothing; from step 2 on, the window of step t - 2."""
    queue = NStepQueue(3, 0.5, 1, (1,), np.dtype(np.float32))
    emitted = [[np.copy(a) for a in push_plain(queue, t)] for t in range(5)]  # the queue returns views
    assert [len(out[2]) for out in emitted] == [0, 0, 1, 1, 1]
    for t in (2, 3, 4):
        obs, actions, G, next_obs, discount = emitted[t]
        start = t - 2
        assert obs.tolist() == [[start]] and actions.tolist() == [start] and next_obs.tolist() == [[t + 1]]
        assert G.tolist() == [2.0 ** start * (1 + 0.5 * 2 + 0.25 * 4)] and discount.tolist() == [0.125]


def test_queue_stores_in_the_buffer_dtypes():
    """Image observations stay uint8 in the queue as in the ring (4x less memory than float32)."""
    buffer = ReplayBuffer(16, obs_shape=(2, 2), obs_dtype=np.uint8, action_dtype=np.uint8, n_step=3)
    assert buffer.queue.obs.dtype == buffer.queue.next_obs.dtype == np.uint8
    assert buffer.queue.actions.dtype == np.uint8 and buffer.queue.rewards.dtype == np.float64
    assert buffer.obs.dtype == np.uint8 and buffer.rewards.dtype == buffer.discounts.dtype == np.float32


def test_defaults():
    buffer = ReplayBuffer(4, obs_shape=(1,))
    assert (buffer.queue.n, buffer.queue.gamma, buffer.queue.num_envs) == (1, 0.99, 1)
    assert buffer.obs.dtype == np.float32 and buffer.actions.dtype == np.int64
    prioritized = PrioritizedReplayBuffer(4, obs_shape=(1,))
    assert (prioritized.queue.n, prioritized.queue.gamma, prioritized.queue.num_envs) == (1, 0.99, 1)
    assert (prioritized.alpha, prioritized.eps) == (0.6, 1e-6) and prioritized.obs.dtype == np.float32


def test_capacity_of_exactly_one_flush_is_enough():
    assert ReplayBuffer(6, obs_shape=(1,), num_envs=2, n_step=3).capacity == 6
    with pytest.raises(ValueError, match=r"^capacity 5 is below one flush of the n-step queues \(6\)$"):
        ReplayBuffer(5, obs_shape=(1,), num_envs=2, n_step=3)
    with pytest.raises(ValueError, match=r"^n must be at least 1, got 0$"):
        NStepQueue(0, 0.9, 1, (1,), np.dtype(np.float32))


def test_prioritized_buffer_folds_n_steps_with_its_own_gamma():
    buffer = PrioritizedReplayBuffer(8, obs_shape=(1,), n_step=2, gamma=0.5)
    for t in range(3):
        push_plain(buffer, t)
    assert buffer.rewards[:2].tolist() == [1 + 0.5 * 2, 2 + 0.5 * 4] and buffer.discounts[:2].tolist() == [0.25] * 2


# -- error messages name the problem and the fix --------------------------------------------------------------
def test_load_errors_name_the_field_and_the_shapes():
    buffer = ReplayBuffer(8, obs_shape=(2,), num_envs=1, n_step=2)
    for t in range(4):
        obs = np.full((1, 2), t, np.float32)
        buffer.add(obs, np.array([t]), np.array([1.0]), obs + 1, np.zeros(1, bool), np.zeros(1, bool))
    state = buffer.state_dict()
    bad_shape = {**state, "obs": np.zeros((3, 3), np.float32)}  # right dtype, wrong shape
    with pytest.raises(ValueError, match=r"^replay buffer 'obs': saved float32\[3, 3\], expected float32\[3, 2\]$"):
        ReplayBuffer(8, obs_shape=(2,), n_step=2).load_state_dict(bad_shape)
    bad_dtype = {**state, "rewards": state["rewards"].astype(np.float64)}  # right shape, wrong dtype
    with pytest.raises(ValueError, match=r"^replay buffer 'rewards': saved float64\[3\], expected float32\[3\]$"):
        ReplayBuffer(8, obs_shape=(2,), n_step=2).load_state_dict(bad_dtype)
    bad_queue = {**state, "queue/obs": np.zeros((2, 1, 3), np.float32)}
    with pytest.raises(ValueError, match=r"^n-step queue 'obs': saved float32\[2, 1, 3\], "
                                         r"expected float32\[2, 1, 2\]$"):
        ReplayBuffer(8, obs_shape=(2,), n_step=2).load_state_dict(bad_queue)
    with pytest.raises(ValueError, match=r"^the saved replay buffer has 8 slots, this one 9 "
                                         r"\(keep the run's buffer_size when resuming\)$"):
        ReplayBuffer(9, obs_shape=(2,), n_step=2).load_state_dict(state)


def test_empty_and_zero_priority_errors():
    for cls in (ReplayBuffer, PrioritizedReplayBuffer):
        with pytest.raises(ValueError, match=r"^cannot sample from an empty replay buffer$"):
            cls(4, obs_shape=(1,)).sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^cannot sample: every priority is zero$"):
        SumTree(3).sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^capacity must be at least 1, got 0$"):
        SumTree(0)
    with pytest.raises(ValueError, match=r"^priorities must be finite and non-negative$"):
        SumTree(2).update(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError, match=r"^sum tree: saved \[5\] priorities, capacity 4$"):
        SumTree(4).load_state_dict({"priorities": np.ones(5)})


def test_a_one_slot_prioritized_buffer_samples_its_transition():
    buffer = PrioritizedReplayBuffer(4, obs_shape=(1,))
    push_plain(buffer, 0)
    batch = buffer.sample(3, np.random.default_rng(0))
    assert batch.indices.tolist() == [0, 0, 0] and batch.weights.tolist() == [1.0, 1.0, 1.0]


# -- the sum-tree ------------------------------------------------------------------------------------------------
def test_sum_tree_size_is_two_nodes_per_leaf():
    """16 bytes per slot with the capacity rounded up to a power of two (the buffers' docstring)."""
    for capacity, leaves in ((1, 1), (4, 4), (5, 8), (8, 8), (9, 16)):
        tree = SumTree(capacity)
        assert tree.first_leaf == leaves and tree.nodes.shape == (2 * leaves,) and tree.nodes.dtype == np.float64


def test_negative_prefix_sums_skip_leading_zero_priorities():
    tree = SumTree(4)
    tree.update(np.arange(4), [0.0, 0.0, 1.0, 1.0])
    assert tree.find(np.array([-1.0, 0.0, 0.5, 1.5])).tolist() == [2, 2, 2, 3]


def test_stratified_sampling_draws_one_uniform_per_segment(monkeypatch):
    tree = SumTree(4)
    tree.update(np.arange(4), [1.0, 2.0, 3.0, 2.0])  # total 8, prefix sums 0 | 1 | 3 | 6 | 8
    searched = []
    monkeypatch.setattr(tree, "find", lambda u: searched.append(u) or SumTree.find(tree, u))
    drawn = tree.sample(4, np.random.default_rng(7))
    u = (np.arange(4) + np.random.default_rng(7).random(4)) * 2.0  # segment k of [0, 8) is [2k, 2k + 2)
    assert searched[0].tolist() == u.tolist()  # an independent uniform in each segment
    assert drawn.tolist() == np.searchsorted(np.array([1.0, 3.0, 6.0, 8.0]), u, side="right").tolist()


# -- prioritized replay's numbers ----------------------------------------------------------------------------------
def test_importance_weights_are_float32_and_default_beta_is_0_4():
    buffer = PrioritizedReplayBuffer(4, obs_shape=(1,), alpha=1.0, eps=0.0)
    for t in range(4):
        push_plain(buffer, t)
    buffer.update_priorities(np.arange(4), np.array([1.0, 1.0, 2.0, 4.0]))  # P = 1/8, 1/8, 2/8, 4/8
    batch = buffer.sample(8, np.random.default_rng(0))
    P = np.array([1, 1, 2, 4])[batch.indices] / 8
    w = (4 * P) ** -0.4
    assert batch.weights.dtype == np.float32 and np.allclose(batch.weights, w / w.max(), rtol=1e-6)


def test_priorities_are_computed_in_float64():
    """|delta| + eps with a float32 delta: 1 + 1e-9 is 1 in float32, but not in the float64 priority."""
    buffer = PrioritizedReplayBuffer(4, obs_shape=(1,), alpha=1.0, eps=1e-9)
    push_plain(buffer, 0)
    buffer.update_priorities(np.array([0]), np.array([1.0], np.float32))
    assert buffer.tree.get(np.array([0]))[0] == 1.0 + 1e-9 and buffer.max_priority == 1.0 + 1e-9
