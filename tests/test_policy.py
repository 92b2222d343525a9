"""rlscratch/policy.py: the categorical policy's maths, by hand and against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscratch import nn
from rlscratch.policy import entropy, log_prob, policy_gradient_loss, sample_categorical


def test_two_action_policy_by_hand():
    """z = [0, ln 3]: pi = [1/4, 3/4]. Action 1 with weight 2 and action 0 with weight -1, B = 2:
    L = -(2 ln 3/4 - ln 1/4) / 2,  dL/dz_t = w_t (pi - onehot(a_t)) / 2."""
    logits = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    actions = np.array([1, 0])
    weights = np.array([2.0, -1.0])
    assert np.allclose(log_prob(logits, actions), [math.log(0.75), math.log(0.25)])
    loss, dlogits = policy_gradient_loss(logits, actions, weights)
    assert loss == pytest.approx(-(2 * math.log(0.75) - math.log(0.25)) / 2)
    assert np.allclose(dlogits, [[2 * 0.25 / 2, 2 * -0.25 / 2], [-1 * -0.75 / 2, -1 * 0.75 / 2]])
    h, dh = entropy(logits)
    assert h == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # dH/dz_j = -pi_j (log pi_j + H) / B
    expected = -np.array([0.25 * (math.log(0.25) + h), 0.75 * (math.log(0.75) + h)]) / 2
    assert np.allclose(dh, [expected, expected])


def test_gradients_match_finite_differences(rng):
    logits = rng.standard_normal((7, 5))
    actions = rng.integers(0, 5, 7)
    weights = rng.standard_normal(7)
    _, dpg = policy_gradient_loss(logits, actions, weights)
    _, dh = entropy(logits)
    errors = nn.check_gradients(lambda: policy_gradient_loss(logits, actions, weights)[0], {"z": (logits, dpg)})
    errors |= {"H": nn.check_gradients(lambda: entropy(logits)[0], {"z": (logits, dh)})["z"]}
    assert max(errors.values()) <= 1e-6, errors


def test_float32_logits_keep_their_dtype(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    _, dlogits = policy_gradient_loss(logits, np.array([0, 1, 2, 0]), np.ones(4))
    assert dlogits.dtype == np.float32 and entropy(logits)[1].dtype == np.float32


def test_sampling_follows_the_softmax_and_never_picks_an_impossible_action():
    probs = np.array([0.1, 0.6, 0.3, 0.0])
    with np.errstate(divide="ignore"):
        logits = np.tile(np.log(probs), (40_000, 1))  # -inf: probability 0
    actions = sample_categorical(logits, np.random.default_rng(0))
    counts = np.bincount(actions, minlength=4) / len(actions)
    assert counts[3] == 0
    # binomial standard error at n = 40,000 is at most 0.0025: 4 of them
    assert np.allclose(counts, probs, atol=0.01), counts


def test_sampling_is_reproducible_from_the_generator(rng):
    logits = rng.standard_normal((50, 6))
    first = sample_categorical(logits, np.random.default_rng(3))
    assert np.array_equal(first, sample_categorical(logits, np.random.default_rng(3)))
    assert not np.array_equal(first, sample_categorical(logits, np.random.default_rng(4)))
