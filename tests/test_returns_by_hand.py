"""rlscratch.returns, computed by hand: the cases mutation testing (benchmarks/mutation.sh) showed the older
tests let through -- the ``out`` arrays, the result dtypes, MuZero's n-step value targets at terminations,
truncations and the end of the data, and the recursions' masks at episode ends in the middle of a rollout."""

import numpy as np
import pytest

from rlscratch.returns import bootstrapped_returns, gae_advantages, n_step_returns, n_step_value_targets


# -- bootstrapped_returns: R_t = r_t + gamma R_{t+1} (1 - d_t), R_T = V(s_T) -----------------------------
def test_bootstrapped_returns_two_envs_by_hand():
    rewards = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    dones = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # env 0's episode ends at t=1
    R = bootstrapped_returns(rewards, dones, np.array([10.0, 20.0]), gamma=0.5)
    # env 0: R_2 = 5 + .5 * 10 = 10;  R_1 = 3 (done: nothing flows back);  R_0 = 1 + .5 * 3 = 2.5
    # env 1: R_2 = 6 + .5 * 20 = 16;  R_1 = 4 + .5 * 16 = 12;              R_0 = 2 + .5 * 12 = 8
    assert R.tolist() == [[2.5, 8.0], [3.0, 12.0], [10.0, 16.0]]


def test_bootstrapped_returns_write_into_out():
    out = np.full((2, 1), -1.0)
    R = bootstrapped_returns(np.array([[1.0], [2.0]]), np.zeros((2, 1)), np.array([4.0]), 0.5, out=out)
    assert R is out and out.tolist() == [[1 + 0.5 * (2 + 0.5 * 4)], [2 + 0.5 * 4]]


@pytest.mark.parametrize("rewards_dtype, values_dtype, expected", [
    (np.float32, np.float32, np.float32),  # a float32 rollout stays float32 (half the memory)
    (np.float32, np.float64, np.float64),  # otherwise the wider of the two, as numpy promotes
    (np.float64, np.float32, np.float64),
])
def test_bootstrapped_returns_dtype_is_the_promotion_of_rewards_and_values(rewards_dtype, values_dtype, expected):
    R = bootstrapped_returns(np.ones((2, 3), rewards_dtype), np.zeros((2, 3)), np.ones(3, values_dtype), 0.9)
    assert R.dtype == expected


# -- GAE: A_t = delta_t + gamma lam (1 - d_t) A_{t+1} ------------------------------------------------------
def test_gae_by_hand_across_an_episode_end():
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [1.0], [2.0]])
    dones = np.array([[0.0], [1.0], [0.0]])
    gamma, lam, last = 0.5, 0.5, np.array([4.0])
    A = gae_advantages(rewards, values, dones, last, gamma, lam)
    d2 = 3 + 0.5 * 4 - 2.0  # = 3
    d1 = 2 - 1.0  # done: no bootstrap from V_2  = 1
    d0 = 1 + 0.5 * 1.0 - 0.5  # = 1
    assert A[:, 0].tolist() == [d0 + 0.25 * d1, d1, d2]  # A_1 takes nothing from A_2 (a new episode)


def test_gae_writes_into_out_and_keeps_the_values_dtype():
    out = np.zeros((2, 2), np.float32)
    values = np.ones((2, 2), np.float32)
    A = gae_advantages(np.ones((2, 2), np.float32), values, np.zeros((2, 2), np.float32), np.ones(2, np.float32),
                       0.5, 1.0, out=out)
    assert A is out and out.tolist() == [[0.5 + 0.5 * 0.5] * 2, [0.5] * 2]  # delta = 0.5 at both steps
    assert gae_advantages(np.ones((2, 2)), values, np.zeros((2, 2)), np.ones(2), 0.5, 1.0).dtype == np.float32


# -- MuZero's n-step value targets: z_t = G_t + discount_t * values[last_t + 1] ------------------------------
def test_n_step_value_targets_by_hand():
    """Two envs, T = 4, gamma 0.5, n 2. Env 0 terminates at t=2; env 1 is truncated at t=0."""
    rewards = np.array([[1, 10], [2, 20], [3, 30], [4, 40]], dtype=float)
    terminated = np.array([[0, 0], [0, 0], [1, 0], [0, 0]], dtype=bool)
    truncated = np.array([[0, 1], [0, 0], [0, 0], [0, 0]], dtype=bool)
    values = np.array([[100, 1000], [200, 2000], [300, 3000], [400, 4000], [500, 5000]], dtype=float)
    z = n_step_value_targets(rewards, terminated, truncated, values, gamma=0.5, n=2)
    env0 = [1 + 0.5 * 2 + 0.25 * 300,  # a full window, bootstrapped from the state two steps on
            2 + 0.5 * 3,  # its window ends in the termination at t=2: no bootstrap
            3,  # the terminating step itself
            4 + 0.5 * 500]  # the data runs out after one step: bootstrap from values[T]
    env1 = [10 + 0.5 * 2000,  # truncated at once: bootstrap from the state after it (its final observation)
            20 + 0.5 * 30 + 0.25 * 4000,
            30 + 0.5 * 40 + 0.25 * 5000,
            40 + 0.5 * 5000]
    assert z.dtype == np.float64 and z.tolist() == [list(pair) for pair in zip(env0, env1)]


def test_n_step_value_targets_take_integer_values_as_floats():
    z = n_step_value_targets([1.0], [False], [False], np.array([0, 3]), gamma=0.5, n=1)
    assert z.tolist() == [2.5]


def test_n_step_value_targets_need_one_more_value_row():
    with pytest.raises(ValueError, match=r"^values needs one row more than rewards: 3 vs 3$"):
        n_step_value_targets(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), 0.9, 2)


# -- n_step_returns: the window's last step, and n longer than the data ------------------------------------
def test_n_step_returns_with_n_beyond_the_data():
    G, discount, last = n_step_returns([1.0, 2.0], [False, False], [False, False], gamma=0.5, n=5)
    assert G.tolist() == [2.0, 2.0] and discount.tolist() == [0.25, 0.5] and last.tolist() == [1, 1]
