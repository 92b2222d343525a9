"""Aggregates over seeds (rlscratch/stats.py): the IQM and the stratified bootstrap, computed by hand.

The bootstrap cases are small enough that the exact distribution of the resampled statistic is known:
with many replicates the 2.5th and 97.5th percentiles land on values worked out below, and a
resampler that permuted instead of drawing with replacement, or mixed tasks, gives other intervals."""

import numpy as np
import pytest

from rlscratch import stats


# -- point estimates ------------------------------------------------------------------------------
def test_iqm_trims_a_quarter_from_each_end():
    # 8 scores: drop int(8 / 4) = 2 from each end of the sorted list -> mean(3, 4, 5, 6)
    assert stats.iqm(np.array([7, 1, 100, 3, 2, 6, 5, 4])) == pytest.approx(4.5)
    # Wrong trims give other numbers: no trim 16, only the top half trimmed 2.5, the middle dropped 27.5
    # 10 scores: int(2.5) = 2 from each end -> mean(2..7) = 4.5 (not 1000's pull: the mean is 103.6)
    assert stats.iqm(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 1000])) == pytest.approx(4.5)
    # 5 scores: int(1.25) = 1 from each end -> mean(2, 3, 4) = 3
    assert stats.iqm(np.array([-50, 2, 3, 4, 50])) == pytest.approx(3.0)
    # 3 scores: int(0.75) = 0 -> the plain mean, as scipy.stats.trim_mean(x, 0.25) gives
    assert stats.iqm(np.array([0.0, 0.0, 3.0])) == pytest.approx(1.0)


def test_iqm_pools_runs_and_tasks():
    # scores[run, task]; all 8 pooled: sorted 1 2 3 4 10 20 30 40 -> mean(3, 4, 10, 20) = 9.25
    scores = np.array([[1, 10], [2, 20], [3, 30], [4, 40]])
    assert stats.iqm(scores) == pytest.approx(9.25)
    assert stats.mean(scores) == pytest.approx(13.75)
    assert stats.median(scores) == pytest.approx(7.0)  # (4 + 10) / 2


def test_statistics_run_over_a_batch_of_replicates():
    batch = np.stack([np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([[10.0], [0.0], [0.0], [10.0]])])
    np.testing.assert_allclose(stats.iqm(batch), [2.5, 5.0])
    np.testing.assert_allclose(stats.mean(batch), [2.5, 5.0])
    np.testing.assert_allclose(stats.median(batch), [2.5, 5.0])


# -- the bootstrap --------------------------------------------------------------------------------
def test_bootstrap_draws_with_replacement():
    # Two runs {0, 1}: a resample's mean is 0 (p 1/4), 0.5 (p 1/2) or 1 (p 1/4): the 95% interval is
    # [0, 1]. A permutation instead of a draw with replacement would always give 0.5: [0.5, 0.5].
    low, high = stats.stratified_bootstrap_ci(np.array([0.0, 1.0]), stats.mean, reps=4000,
                                              rng=np.random.default_rng(0))
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_percentiles_by_hand():
    # Runs {0, 0, 0, 8}: k, the number of 8s in a resample of 4, is Binomial(4, 1/4).
    # mean = 2k: P(k=4) = 0.4% < 2.5% <= P(k>=3) = 5.1%, so the 97.5th percentile is 6 and the 2.5th is 0.
    # IQM = mean of the middle two of the sorted 4: 0 for k <= 1, 4 for k = 2, 8 for k >= 3 -> [0, 8].
    scores = np.array([0.0, 0.0, 0.0, 8.0])
    assert stats.stratified_bootstrap_ci(scores, stats.mean, reps=20000, rng=np.random.default_rng(1)) == (0.0, 6.0)
    assert stats.stratified_bootstrap_ci(scores, stats.iqm, reps=20000, rng=np.random.default_rng(1)) == (0.0, 8.0)


def test_bootstrap_is_stratified_by_task():
    # Task 0 always scores 0, task 1 always 10: resampling within each task, every replicate's mean is
    # exactly 5. Pooling the tasks before resampling would give means from 0 to 10.
    scores = np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0]])
    assert stats.stratified_bootstrap_ci(scores, stats.mean, reps=500, rng=np.random.default_rng(2)) == (5.0, 5.0)
    # Task 0 {0, 1}, task 1 {100, 100}: the mean of 4 is (a + b + 200) / 4 with a + b in {0, 1, 2}.
    scores = np.array([[0.0, 100.0], [1.0, 100.0]])
    low, high = stats.stratified_bootstrap_ci(scores, stats.mean, reps=4000, rng=np.random.default_rng(3))
    assert (low, high) == (50.0, 50.5)


def test_bootstrap_is_reproducible_from_its_seed():
    scores = np.random.default_rng(4).normal(size=(10, 1))
    first = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=300, rng=np.random.default_rng(5))
    again = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=300, rng=np.random.default_rng(5))
    other = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=300, rng=np.random.default_rng(6))
    assert first == again and first != other
    assert first[0] < stats.iqm(scores) < first[1]


def test_steps_to_threshold():
    evals = [[1000, 10.0], [2000, 480.0], [3000, 470.0], [4000, 500.0]]
    assert stats.steps_to(evals, 475.0) == 2000
    assert stats.steps_to(evals, 501.0) is None
