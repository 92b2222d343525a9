"""LayerNorm2d and NormResidualBlock (rlscratch/nn/norm_block.py): float64 central-difference gradient
checks, and the forward pass against the definitions computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_gradients_ok
from test_nn_conv_norm import naive_conv

from rlscratch.nn import BatchNorm, LayerNorm2d, NormResidualBlock, ResidualBlock, check_module, map_norm


def by_hand_layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    out = np.empty_like(x)
    for n in range(len(x)):
        mu, var = x[n].mean(), x[n].var()
        out[n] = (x[n] - mu) / np.sqrt(var + eps) * gamma[:, None, None] + beta[:, None, None]
    return out


def by_hand_batch_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma[:, None, None] + beta[:, None, None]


def random_affine(norm, rng) -> None:
    norm.params["gamma"][:] = rng.uniform(0.5, 1.5, norm.params["gamma"].shape)
    norm.params["beta"][:] = rng.standard_normal(norm.params["beta"].shape)


# -- LayerNorm2d --------------------------------------------------------------------------------------
def test_layernorm2d_gradients():
    rng = np.random.default_rng(0)
    norm = LayerNorm2d(3).astype(np.float64)
    random_affine(norm, rng)
    # h = 1e-5: smooth (truncation ~h^2), and a larger step keeps roundoff off the small input gradients
    assert_gradients_ok(check_module(norm, rng.standard_normal((3, 3, 4, 5)) * 2.0 + 0.7, rng=rng, h=1e-5))


def test_layernorm2d_is_the_definition_per_sample():
    """Each sample standardised over its own C*H*W values, then gamma_c, beta_c per channel: a sample's
    output does not depend on the rest of its batch, and infer is forward."""
    rng = np.random.default_rng(1)
    norm = LayerNorm2d(2, dtype=np.float64)
    random_affine(norm, rng)
    x = rng.standard_normal((3, 2, 3, 4)) * np.array([1.0, 5.0])[:, None, None] + 2.0
    expected = by_hand_layer_norm(x, norm.params["gamma"], norm.params["beta"])
    np.testing.assert_allclose(norm.forward(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.infer(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.infer(x[1:2]), expected[1:2], rtol=1e-12, atol=1e-12)
    assert norm.saved_count() == 1
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        norm.infer(x.reshape(3, -1))


def test_map_norm_choices():
    assert map_norm("none", 3) is None
    assert isinstance(map_norm("layer", 3), LayerNorm2d) and isinstance(map_norm("batch", 3), BatchNorm)
    with pytest.raises(ValueError, match="unknown normalisation 'group'"):
        map_norm("group", 3)


# -- NormResidualBlock ----------------------------------------------------------------------------------
def norm_block(norm: str, rng: np.random.Generator, channels: int = 3) -> NormResidualBlock:
    block = NormResidualBlock(channels, rng, norm).astype(np.float64)
    for conv in (block.conv1, block.conv2):
        conv.params["b"][:] = 0.1 * rng.standard_normal(channels)
    for n in (block.norm1, block.norm2):
        random_affine(n, rng)
    return block


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_norm_residual_block_gradients(norm):
    """Training mode (BatchNorm: the batch's statistics). With a batch norm the conv biases get no
    gradient at all -- the batch mean removes any per-channel constant -- so they are checked to be
    zero rather than by relative error (finite differences there are pure roundoff)."""
    rng = np.random.default_rng(2)
    block = norm_block(norm, rng)
    # h = 1e-5: the normalisation's sums make roundoff dominate a smaller step; no ReLU kink of this
    # input lies within it (the error would jump to ~1 if one did)
    errors = check_module(block, rng.standard_normal((3, 3, 4, 4)), rng=rng, h=1e-5)
    if norm == "batch":
        for conv in (block.conv1, block.conv2):
            assert np.abs(conv.grads["b"]).max() < 1e-12
        errors = {k: v for k, v in errors.items() if not k.endswith(".b")}
    assert_gradients_ok(errors)


def test_norm_residual_block_batch_eval_gradients():
    """BatchNorm in eval mode: the running statistics are constants of the function."""
    rng = np.random.default_rng(3)
    block = norm_block("batch", rng)
    for n in (block.norm1, block.norm2):
        n.buffers["running_mean"][:] = rng.standard_normal(3)
        n.buffers["running_var"][:] = rng.uniform(0.5, 2.0, 3)
    block.eval()
    assert_gradients_ok(check_module(block, rng.standard_normal((2, 3, 4, 4)), rng=rng, h=1e-5))


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_norm_residual_block_is_conv_norm_relu_by_hand(norm):
    """y = relu(x + norm2(conv2(relu(norm1(conv1(x)))))), from naive convolutions and the norms'
    definitions; with a batch norm forward uses the batch's statistics and infer the running ones."""
    rng = np.random.default_rng(4)
    block = norm_block(norm, rng, channels=2)
    x = rng.standard_normal((3, 2, 4, 4))
    p1, p2 = block.conv1.params, block.conv2.params
    by_hand = by_hand_layer_norm if norm == "layer" else by_hand_batch_norm
    n1, n2 = block.norm1.params, block.norm2.params
    a = np.maximum(by_hand(naive_conv(x, p1["W"], p1["b"], 1, 1), n1["gamma"], n1["beta"]), 0)
    expected = np.maximum(x + by_hand(naive_conv(a, p2["W"], p2["b"], 1, 1), n2["gamma"], n2["beta"]), 0)
    np.testing.assert_allclose(block.forward(x), expected, rtol=1e-10, atol=1e-12)
    block.clear_saved()
    if norm == "layer":
        np.testing.assert_allclose(block.infer(x), expected, rtol=1e-10, atol=1e-12)
        return
    # infer: the running statistics (moved once by the forward above), so one sample alone gives the
    # same output as inside its batch
    mean, var = block.norm1.buffers["running_mean"], block.norm1.buffers["running_var"]
    assert np.abs(mean).max() > 0 and not np.allclose(var, 1.0)
    np.testing.assert_allclose(block.infer(x)[1:2], block.infer(x[1:2]), rtol=1e-12, atol=1e-12)
    assert not np.allclose(block.infer(x), expected)


def test_norm_residual_block_draws_the_plain_blocks_convolutions():
    """The same generator state gives the same convolution weights with or without a norm, and a norm
    block without input gradient returns None but still fills its weights' gradients."""
    plain = ResidualBlock(2, 3, np.random.default_rng(5))
    for norm in ("layer", "batch"):
        block = NormResidualBlock(2, np.random.default_rng(5), norm)
        for mine, theirs in ((block.conv1, plain.conv1), (block.conv2, plain.conv2)):
            assert np.array_equal(mine.params["W"], theirs.params["W"])
        block.input_grad = False
        block.forward(np.random.default_rng(6).standard_normal((2, 2, 4, 4)).astype(np.float32))
        assert block.backward(np.ones((2, 2, 4, 4), np.float32)) is None
        assert np.abs(block.conv1.grads["W"]).sum() > 0 and block.saved_count() == 0
    with pytest.raises(ValueError, match="needs a norm"):
        NormResidualBlock(2, np.random.default_rng(5), "none")
