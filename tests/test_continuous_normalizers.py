"""The running moments behind both normalisers (envs/wrappers.py merge_moments): merging batch after batch
gives the mean and variance of all the data, and its inlined batch mean and variance are numpy's own
``batch.mean(axis=0)`` and ``batch.var(axis=0)`` to the bit -- a seeded run's parameters must not depend
on how those two are spelled."""

from __future__ import annotations

import numpy as np
import pytest
from rlscratch.envs.wrappers import ObservationNormalizer, merge_moments


def merge_with_numpys_methods(mean, var, count, batch):
    """merge_moments as first written, with numpy's mean and var methods: the reference for the bits."""
    n = batch.shape[0]
    batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
    total = count + n
    delta = batch_mean - mean
    return (mean + delta * n / total, (var * count + batch_var * n + delta ** 2 * count * n / total) / total,
            np.array(total))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
@pytest.mark.parametrize("shape", [(16,), (16, 3), (7, 2, 5)])
def test_merge_moments_gives_the_bits_of_numpys_mean_and_var(dtype, shape):
    rng = np.random.default_rng(0)
    for _ in range(200):
        scale = rng.uniform(1e-3, 1e3)
        batch = (rng.standard_normal(shape) * scale + rng.uniform(-10, 10) * scale).astype(dtype)
        mean, var = rng.standard_normal(shape[1:]), rng.uniform(0.1, 10.0, shape[1:])
        count = np.array(rng.uniform(1e-4, 1e6))
        got, want = merge_moments(mean, var, count, batch), merge_with_numpys_methods(mean, var, count, batch)
        for g, w in zip(got, want):
            g, w = np.asarray(g), np.asarray(w)
            assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes()


def test_merging_batch_after_batch_gives_the_moments_of_all_the_data():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=(n, 2)) for n in (5, 1, 16, 9)]
    mean, var, count = np.zeros(2), np.zeros(2), np.array(0.0)
    for batch in batches:
        mean, var, count = merge_moments(mean, var, count, batch)
    everything = np.concatenate(batches)
    assert count == len(everything)
    np.testing.assert_allclose(mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, everything.var(axis=0), rtol=1e-12)


def test_observation_normalizer_by_hand():
    """Two observations (1, 10) and (3, 30): mean (2, 20), var (1, 100) (the prior count 1e-4 barely counts);
    normalised, each is one standard deviation from the mean; clipped at +-clip."""
    norm = ObservationNormalizer((2,), clip=5.0, eps=0.0)
    norm.update(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32))
    np.testing.assert_allclose(norm.mean, [2.0, 20.0], rtol=1e-4)
    np.testing.assert_allclose(norm.var, [1.0, 100.0], rtol=1e-3)
    out = norm.normalize(np.array([[3.0, 10.0], [2.0, 1000.0]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[1.0, -1.0], [0.0, 5.0]], rtol=1e-3, atol=1e-3)
