"""MuZero's game-segment replay and its targets, by hand: n-step targets at terminations and
truncations, reanalysed and target-network values, prioritized sampling, and the rows a target
window reads (the rows a reanalysis must refresh)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscratch.muzero.replay import TERMINATED, TRUNCATED, W_BEYOND, W_FINAL, W_MISSING, W_STEP, GameReplay, rows_read
from rlscratch.muzero.targets import make_targets


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


def test_add_writes_into_the_streams_named():
    """``envs`` names the streams a vector step's rows go to (a distributed learner's actor writes its
    envs into streams of its own): rows 0, 1 of this step land in streams 3 and 1, in that order, and
    stream 3's termination puts its final row (value 0) into stream 3; streams 0 and 2 stay empty."""
    replay = GameReplay(40, 4, (1,), 2)
    replay.add(np.array([[1.0], [2.0]]), np.array([1, 0]), np.array([0.5, -0.5]), np.array([3.0, 4.0]),
               np.full((2, 2), 0.5), np.array([[9.0], [8.0]]), np.array([True, False]), np.array([False, False]),
               np.array([7.0, 6.0]), envs=np.array([3, 1]))
    assert replay.head.tolist() == [0, 1, 0, 2]
    assert replay.obs[3, :2, 0].tolist() == [1.0, 9.0] and replay.obs[1, 0, 0] == 2.0
    assert replay.rewards[3, 0] == 0.5 and replay.rewards[1, 0] == -0.5 and replay.actions[3, 0] == 1
    assert replay.values[3, :2].tolist() == [3.0, 0.0] and replay.kind[3, 1] == TERMINATED
