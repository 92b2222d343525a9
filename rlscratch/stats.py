"""Aggregates over seeds that are fit to publish, after rliable (Agarwal et al. 2021, "Deep RL at the
Edge of the Statistical Precipice"): point estimates with stratified-bootstrap confidence intervals.

Scores come as a matrix ``scores[run, task]`` (a 1-D array is one task). With a handful of seeds a
mean hides how the runs spread, and a median throws most of them away; the interquartile mean
(IQM) -- the mean of the middle half of all scores, trimming a quarter from each end -- is robust to
an outlying run yet uses half the data. Every estimate gets a 95% interval from the stratified
bootstrap: resample the runs of each task with replacement (tasks are never mixed: each keeps its
own number of runs), recompute the statistic, repeat ``reps`` times, and take the 2.5th and 97.5th
percentiles of what comes out (the percentile method, rliable's default).

    iqm([1, 2, 3, 4, 5, 6, 7, 100])  # sorted, trim int(0.25 * 8) = 2 from each end: mean(3, 4, 5, 6) = 4.5
    stratified_bootstrap_ci(scores, iqm, reps=2000, rng=np.random.default_rng(0))  # -> (low, high)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]


def _flat(scores: np.ndarray) -> np.ndarray:
    """(..., runs, tasks) or (runs,) -> (..., runs * tasks): every statistic here pools all scores."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores if scores.ndim == 1 else scores.reshape(scores.shape[:-2] + (-1,))


def mean(scores: np.ndarray) -> np.ndarray:
    """The mean of all scores (with equal runs per task: the mean over tasks of each task's mean)."""
    return _flat(scores).mean(axis=-1)


def median(scores: np.ndarray) -> np.ndarray:
    """The median of all scores. (rliable's aggregate median is the median over tasks of each task's
    mean; with one task -- a sweep's usual case -- that would just be the mean again.)"""
    return np.median(_flat(scores), axis=-1)


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean: sort all N scores, drop the lowest and the highest int(N / 4), average the rest
    (scipy.stats.trim_mean(scores, 0.25) on the flattened scores, as rliable computes it)."""
    flat = np.sort(_flat(scores), axis=-1)
    n = flat.shape[-1]
    cut = int(0.25 * n)
    return flat[..., cut:n - cut].mean(axis=-1)


def stratified_bootstrap_ci(scores: np.ndarray, statistic: Statistic, reps: int = 2000,
                            rng: np.random.Generator | None = None, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile-bootstrap interval of ``statistic`` over ``scores[run, task]``: each replicate
    draws, for every task on its own, as many runs as it has, with replacement."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be (runs, tasks) with at least one run; got shape {scores.shape}")
    rng = rng if rng is not None else np.random.default_rng(0)
    runs, tasks = scores.shape
    picks = rng.integers(0, runs, size=(reps, runs, tasks))  # replicate b, slot i of task t: run picks[b, i, t]
    resampled = scores[picks, np.arange(tasks)]  # (reps, runs, tasks): task t only ever draws its own runs
    values = statistic(resampled)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def steps_to(evals: list[list[float]], threshold: float) -> int | None:
    """The first evaluation step whose mean return reaches ``threshold`` (None if none did)."""
    for step, value in evals:
        if value >= threshold:
            return int(step)
    return None
