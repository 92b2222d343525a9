"""Conv2d, MaxPool2d, LayerNorm and BatchNorm: finite-difference gradient checks in float64, and
behaviour checks against direct (slow, obviously correct) computations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_gradients_ok

from rlscratch.nn import BatchNorm, Conv2d, LayerNorm, MaxPool2d, ResidualBlock, check_module
from rlscratch.nn import conv as conv_module
from rlscratch.nn.winograd import POINTS, WinogradConv3x3, winograd_matrices

# finite-difference step for functions that are linear in the perturbed array (conv) or piecewise
# linear with no kink within h (max pooling of well-separated values): see the tests that use it
LINEAR_H = 1e-4


def naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """The definition, one output element at a time."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    xp[:, :, padding:padding + h, padding:padding + wd] = x
    h_out, w_out = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, h_out, w_out))
    for i in range(n):
        for f in range(o):
            for a in range(h_out):
                for bb in range(w_out):
                    patch = xp[i, :, a * stride:a * stride + kh, bb * stride:bb * stride + kw]
                    y[i, f, a, bb] = np.sum(patch * w[f]) + b[f]
    return y


def naive_maxpool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    n, c, h, w = x.shape
    h_out, w_out = (h - k) // s + 1, (w - k) // s + 1
    y = np.zeros((n, c, h_out, w_out))
    for a in range(h_out):
        for b in range(w_out):
            y[:, :, a, b] = x[:, :, a * s:a * s + k, b * s:b * s + k].max(axis=(2, 3))
    return y


def distinct_values(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random permutation of evenly spaced values in [-1, 1]: no ties, and a perturbation h well
    below the spacing never changes which entry of a pooling window is largest."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) * (2.0 / (size - 1)) - 1.0)


# -- Conv2d -----------------------------------------------------------------------------------------
CONV_CASES = [
    # (in_ch, out_ch, kernel, stride, padding, input (H, W))
    (1, 1, 3, 1, 0, (5, 5)),
    (2, 3, 3, 1, 1, (5, 6)),
    (3, 2, 3, 2, 1, (7, 5)),
    (2, 4, 2, 2, 0, (6, 6)),
    (3, 2, (2, 3), 2, 0, (6, 7)),
    (2, 3, 4, 3, 2, (8, 5)),
    (4, 3, 1, 1, 0, (3, 4)),
]


# Conv2d picks its internal layout by the patch matrix's rows and the map width; every check runs in
# each layout, forced by the thresholds (PER_SAMPLE_MAX_ROWS, BATCH_LAST_BELOW_WIDTH): "per_sample"
# everywhere (rows threshold above any layer here), else "fold" (width threshold 0) or "batch_last"
# (width threshold above any map here).
LAYOUTS = {"fold": (0, 0), "batch_last": (0, 10_000), "per_sample": (10_000, 0)}


def force_layout(monkeypatch, name: str) -> None:
    rows, width = LAYOUTS[name]
    monkeypatch.setattr(conv_module, "PER_SAMPLE_MAX_ROWS", rows)
    monkeypatch.setattr(conv_module, "BATCH_LAST_BELOW_WIDTH", width)


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request, monkeypatch):
    force_layout(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("in_ch,out_ch,kernel,stride,padding,hw", CONV_CASES)
def test_conv2d_gradients(in_ch, out_ch, kernel, stride, padding, hw, layout):
    rng = np.random.default_rng(0)
    conv = Conv2d(in_ch, out_ch, kernel, rng, stride=stride, padding=padding).astype(np.float64)
    conv.params["b"][:] = rng.standard_normal(out_ch)
    x = rng.standard_normal((2, in_ch, *hw))
    # y is linear in x and in W separately, so central differences carry no truncation error and h
    # only trades against roundoff (~|L| 1e-16 / h): at h = 1e-6 the 1x1 case reached 6e-7 relative
    # on an entry with a small gradient; h = 1e-4 keeps every case far below the tolerance.
    assert_gradients_ok(check_module(conv, x, rng=rng, h=LINEAR_H))


def test_conv2d_without_bias_gradients(layout):
    rng = np.random.default_rng(1)
    conv = Conv2d(2, 3, 3, rng, stride=2, padding=1, bias=False).astype(np.float64)
    assert "b" not in conv.params
    assert_gradients_ok(check_module(conv, rng.standard_normal((2, 2, 5, 4)), rng=rng, h=LINEAR_H))


@pytest.mark.parametrize("kernel", [3, (2, 3)])
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1), (3, 2), (2, 0)])
def test_conv2d_matches_direct_loop(stride, padding, layout, kernel):
    rng = np.random.default_rng(2)
    conv = Conv2d(3, 4, kernel, rng, stride=stride, padding=padding, dtype=np.float64)
    conv.params["b"][:] = rng.standard_normal(4)
    x = rng.standard_normal((2, 3, 7, 6))
    expected = naive_conv(x, conv.params["W"], conv.params["b"], stride, padding)
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.infer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1])
def test_conv2d_reads_a_non_contiguous_input(padding, layout):
    """An input that is a view with gaps (here every other channel of a bigger batch) gives the same y
    as the definition: the per-sample layout's patch copy reads x's memory directly (conv.py)."""
    rng = np.random.default_rng(12)
    conv = Conv2d(3, 4, 3, rng, padding=padding, dtype=np.float64)
    conv.params["b"][:] = rng.standard_normal(4)
    x = rng.standard_normal((2, 6, 7, 6))[:, ::2]
    expected = naive_conv(x, conv.params["W"], conv.params["b"], 1, padding)
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.infer(x), expected, rtol=1e-12, atol=1e-12)


def test_conv2d_layouts_agree_on_a_wide_map(monkeypatch):
    """The three layouts are the same function and gradient, here on a 20-pixel-wide map with stride 2
    and padding (float64, so any difference is a bug, not rounding)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 9, 20))
    g = rng.standard_normal((3, 4, 5, 10))
    results = []
    for name in LAYOUTS:
        force_layout(monkeypatch, name)
        conv = Conv2d(2, 4, 3, np.random.default_rng(8), stride=2, padding=1, dtype=np.float64)
        y = conv.forward(x)
        results.append((y, conv.backward(g), conv.grads["W"].copy(), conv.grads["b"].copy()))
    for a, b, c in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_conv2d_without_input_grad_returns_none_with_the_same_weight_gradients(layout):
    rng = np.random.default_rng(9)
    x, g = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 4, 6, 6))
    full = Conv2d(3, 4, 3, np.random.default_rng(1), padding=1, dtype=np.float64)
    first = Conv2d(3, 4, 3, np.random.default_rng(1), padding=1, dtype=np.float64)
    first.input_grad = False
    full.forward(x)
    first.forward(x)
    assert full.backward(g).shape == x.shape
    assert first.backward(g) is None
    np.testing.assert_allclose(first.grads["W"], full.grads["W"], rtol=1e-12)
    np.testing.assert_allclose(first.grads["b"], full.grads["b"], rtol=1e-12)


def test_conv2d_float32_shapes_and_dtype():
    rng = np.random.default_rng(3)
    conv = Conv2d(1, 16, 3, rng, padding=1)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = conv.forward(x)
    assert y.shape == (4, 16, 28, 28) and y.dtype == np.float32
    dx = conv.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert conv.grads["W"].dtype == np.float32


def test_conv2d_layout_choice():
    """Few patch rows (the layers near the input) go per-sample; the others by map width."""
    rng = np.random.default_rng(5)
    assert Conv2d(1, 16, 3, rng, padding=1)._layout((2, 1, 28, 28)) == conv_module.PER_SAMPLE
    assert Conv2d(4, 16, 3, rng)._layout((2, 4, 10, 10)) == conv_module.PER_SAMPLE
    assert Conv2d(16, 32, 3, rng, padding=1)._layout((2, 16, 10, 10)) == conv_module.BATCH_LAST
    assert Conv2d(16, 16, 3, rng, padding=1)._layout((2, 16, 28, 28)) == conv_module.FOLD


def test_conv2d_float64_input_stays_float32(layout):
    """A float64 observation into a float32 layer computes in float32 (no silent upcast)."""
    rng = np.random.default_rng(6)
    conv = Conv2d(1, 4, 3, rng, padding=1)
    y = conv.forward(rng.standard_normal((2, 1, 5, 5)))
    assert y.dtype == np.float32 and conv.infer(rng.standard_normal((2, 1, 5, 5))).dtype == np.float32
    for layer in (WinogradConv3x3(1, 4, rng), ResidualBlock(1, 3, rng)):
        x = rng.standard_normal((2, 1, 5, 5))
        assert layer.forward(x).dtype == layer.infer(x).dtype == np.float32


def test_conv2d_weights_are_views_after_flatten():
    rng = np.random.default_rng(4)
    conv = Conv2d(2, 3, 3, rng).flatten()
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    conv.zero_grad()
    conv.backward(np.ones_like(conv.forward(x)))
    assert np.shares_memory(conv.grads["W"], conv.flat_grads)
    assert np.abs(conv.flat_grads).sum() > 0


def test_conv2d_accumulates_over_repeated_calls():
    """Two forwards then two backwards (as an unrolled model does) sum both calls' gradients."""
    rng = np.random.default_rng(5)
    conv = Conv2d(2, 3, 3, rng, padding=1, dtype=np.float64)
    x1, x2 = rng.standard_normal((2, 2, 2, 4, 4))
    g1, g2 = rng.standard_normal((2, 2, 3, 4, 4))
    conv.forward(x1)
    conv.forward(x2)
    dx2, dx1 = conv.backward(g2), conv.backward(g1)
    together = conv.grads["W"].copy()

    single = Conv2d(2, 3, 3, np.random.default_rng(5), padding=1, dtype=np.float64)
    single.forward(x1)
    np.testing.assert_allclose(single.backward(g1), dx1)
    single.forward(x2)
    np.testing.assert_allclose(single.backward(g2), dx2)
    np.testing.assert_allclose(single.grads["W"], together)


# -- WinogradConv3x3 ---------------------------------------------------------------------------------
def test_winograd_matrices_of_f2_are_lavin_and_grays():
    """The Toom-Cook construction at points (0, 1, -1, inf) gives the published F(2, 3) matrices, up to
    the signs of position 0 (in G and B^T) and of infinity (in A^T and B^T), which cancel in pairs."""
    at, g, bt = winograd_matrices(2)
    bt_signs, g_signs, at_signs = np.diag([-1, 1, 1, -1]), np.diag([-1, 1, 1, 1]), np.diag([1, 1, 1, -1])
    np.testing.assert_array_equal(bt_signs @ bt, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    np.testing.assert_array_equal(g_signs @ g, [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_array_equal(at @ at_signs, [[1, 1, 1, 0], [0, 1, -1, -1]])


@pytest.mark.parametrize("m", sorted(POINTS))
def test_winograd_matrices_compute_a_3_tap_correlation(m):
    """y = A^T [(G g) * (B^T d)] is y_i = sum_k g_k d_{i+k}, for random g and d (float64 roundoff)."""
    rng = np.random.default_rng(m)
    at, g_mat, bt = winograd_matrices(m)
    for _ in range(5):
        g, d = rng.standard_normal(3), rng.standard_normal(m + 2)
        expected = [g @ d[i:i + 3] for i in range(m)]
        np.testing.assert_allclose(at @ ((g_mat @ g) * (bt @ d)), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tile", sorted(POINTS))
@pytest.mark.parametrize("n,c,o,hw", [(2, 3, 4, (6, 6)), (2, 2, 3, (5, 7)), (1, 1, 1, (1, 1)), (3, 4, 2, (4, 3)),
                                      (2, 2, 2, (13, 8))])
def test_winograd_conv_is_conv2d_padding_1(n, c, o, hw, tile):
    """The same function, input gradient and parameter gradients as Conv2d(c, o, 3, padding=1), in
    float64 to roundoff, for every tile size (one tile, several, and tiles overhanging the map)."""
    rng = np.random.default_rng(12)
    wino = WinogradConv3x3(c, o, np.random.default_rng(1), dtype=np.float64, tile=tile)
    plain = Conv2d(c, o, 3, np.random.default_rng(1), padding=1, dtype=np.float64)
    wino.params["b"][:] = plain.params["b"][:] = rng.standard_normal(o)
    x, g = rng.standard_normal((n, c, *hw)), rng.standard_normal((n, o, *hw))
    np.testing.assert_allclose(wino.forward(x), plain.forward(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(wino.infer(x), plain.infer(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(wino.backward(g), plain.backward(g), rtol=0, atol=1e-12)
    for name in ("W", "b"):
        np.testing.assert_allclose(wino.grads[name], plain.grads[name], rtol=0, atol=1e-11)


@pytest.mark.parametrize("tile,tolerance", [(2, 1e-6), (6, 1e-4)])
def test_winograd_conv_float32_roundoff(tile, tolerance):
    """In float32 the transforms' roundoff stays small next to the outputs (the module docstring's
    figures), and everything stays float32."""
    rng = np.random.default_rng(14)
    wino = WinogradConv3x3(16, 16, np.random.default_rng(1), tile=tile)
    plain = Conv2d(16, 16, 3, np.random.default_rng(1), padding=1, dtype=np.float64)
    x, g = rng.standard_normal((4, 16, 6, 6)), rng.standard_normal((4, 16, 6, 6))
    y = wino.forward(x.astype(np.float32))
    dx = wino.backward(g.astype(np.float32))
    assert y.dtype == dx.dtype == wino.grads["W"].dtype == np.float32
    for ours, exact in ((y, plain.forward(x)), (dx, plain.backward(g)), (wino.grads["W"], plain.grads["W"])):
        assert np.abs(ours - exact).max() < tolerance * np.abs(exact).max()


@pytest.mark.parametrize("tile", sorted(POINTS))
def test_winograd_conv_gradients(tile):
    rng = np.random.default_rng(13)
    conv = WinogradConv3x3(2, 3, rng, dtype=np.float64, tile=tile)
    conv.params["b"][:] = rng.standard_normal(3)
    assert_gradients_ok(check_module(conv, rng.standard_normal((2, 2, 5, 4)), rng=rng, h=LINEAR_H))
    conv.input_grad = False
    conv.forward(rng.standard_normal((2, 2, 5, 4)))
    assert conv.backward(rng.standard_normal((2, 3, 5, 4))) is None
    with pytest.raises(ValueError, match="tile must be one of"):
        WinogradConv3x3(2, 3, rng, tile=3)


# -- ResidualBlock ----------------------------------------------------------------------------------
def test_residual_block_gradients(layout):
    rng = np.random.default_rng(10)
    block = ResidualBlock(3, 3, rng).astype(np.float64)
    for conv in (block.conv1, block.conv2):
        conv.params["b"][:] = 0.1 * rng.standard_normal(3)
    # h = 1e-6: the block has ReLU kinks, and a random input sits far from them at this step
    assert_gradients_ok(check_module(block, rng.standard_normal((2, 3, 5, 5)), rng=rng, h=1e-6))


def test_residual_block_is_relu_of_x_plus_the_body(layout, kernel=3):
    rng = np.random.default_rng(11)
    block = ResidualBlock(2, kernel, rng, dtype=np.float64)
    for conv in (block.conv1, block.conv2):
        conv.params["b"][:] = rng.standard_normal(2)
    x = rng.standard_normal((2, 2, 4, 4))
    p1, p2, pad = block.conv1.params, block.conv2.params, kernel // 2
    body = naive_conv(np.maximum(naive_conv(x, p1["W"], p1["b"], 1, pad), 0), p2["W"], p2["b"], 1, pad)
    np.testing.assert_allclose(block.forward(x), np.maximum(x + body, 0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(block.infer(x), np.maximum(x + body, 0), rtol=1e-12, atol=1e-12)
    block.input_grad = False
    assert block.backward(np.ones((2, 2, 4, 4))) is None
    assert np.abs(block.conv1.grads["W"]).sum() > 0
    with pytest.raises(ValueError, match="3x3"):
        ResidualBlock(2, 5, rng)


# -- MaxPool2d --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,stride,hw", [
    (2, None, (4, 6)),   # non-overlapping tiles
    (2, None, (5, 7)),   # non-overlapping, a row and a column left over
    (3, 1, (5, 6)),      # overlapping: one pixel can win several windows
    (3, 2, (7, 6)),
    (2, 3, (8, 8)),      # gaps between windows
])
def test_maxpool_gradients_and_values(kernel, stride, hw):
    rng = np.random.default_rng(6)
    pool = MaxPool2d(kernel, stride)
    x = distinct_values((2, 3, *hw), rng)
    s = kernel if stride is None else stride
    expected = naive_maxpool(x, kernel, s)
    np.testing.assert_array_equal(pool.forward(x), expected)
    pool.clear_saved()
    np.testing.assert_array_equal(pool.infer(x), expected)
    # Max pooling is piecewise linear, so central differences have no truncation error as long as
    # no window changes its winner; h only trades against roundoff (~|L| 1e-16 / h), largest on
    # entries whose random upstream gradient is small. Inputs of size ~25 (an unscaled permutation)
    # gave 2.6e-6 at h = 1e-6; inputs in [-1, 1] give 1.4e-7 there, and h = 1e-4 (still far below
    # their spacing, >= 2/383 here) gives <= 1e-9.
    assert_gradients_ok(check_module(pool, x, rng=rng, h=LINEAR_H))


@pytest.mark.parametrize("stride", [None, 1])
def test_maxpool_ties_route_gradient_to_one_entry(stride):
    pool = MaxPool2d(2, stride)
    x = np.zeros((1, 1, 2, 2))  # one window, all four entries tied
    pool.forward(x)
    dx = pool.backward(np.array([[[[5.0]]]]))
    assert dx.sum() == 5.0 and np.count_nonzero(dx) == 1
    assert dx[0, 0, 0, 0] == 5.0  # the first entry in row-major order


def test_maxpool_overlapping_winner_collects_every_window():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0  # the centre is the max of all four 2x2 windows (stride 1)
    pool = MaxPool2d(2, stride=1)
    pool.forward(x)
    dx = pool.backward(np.full((1, 1, 2, 2), 1.5))
    assert dx[0, 0, 1, 1] == 6.0 and dx.sum() == 6.0


# -- LayerNorm --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
def test_layernorm_gradients(shape):
    rng = np.random.default_rng(7)
    norm = LayerNorm(shape[-1]).astype(np.float64)
    norm.params["gamma"][:] = rng.uniform(0.5, 1.5, shape[-1])
    norm.params["beta"][:] = rng.standard_normal(shape[-1])
    x = rng.standard_normal(shape) * 2.0 + 0.5
    assert_gradients_ok(check_module(norm, x, rng=rng))


def test_layernorm_normalises_last_axis():
    rng = np.random.default_rng(8)
    norm = LayerNorm(10, dtype=np.float64)
    y = norm.forward(rng.standard_normal((5, 10)) * 3.0 + 7.0)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-4)  # eps makes it a shade below 1


# -- BatchNorm --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 3, 2)])
def test_batchnorm_train_gradients(shape):
    rng = np.random.default_rng(9)
    norm = BatchNorm(shape[1]).astype(np.float64)
    norm.params["gamma"][:] = rng.uniform(0.5, 1.5, shape[1])
    norm.params["beta"][:] = rng.standard_normal(shape[1])
    x = rng.standard_normal(shape) * 2.0 + 0.5
    assert_gradients_ok(check_module(norm, x, rng=rng))


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 3, 2)])
def test_batchnorm_eval_gradients(shape):
    rng = np.random.default_rng(10)
    norm = BatchNorm(shape[1]).astype(np.float64)
    norm.buffers["running_mean"][:] = rng.standard_normal(shape[1])
    norm.buffers["running_var"][:] = rng.uniform(0.5, 2.0, shape[1])
    norm.eval()
    assert_gradients_ok(check_module(norm, rng.standard_normal(shape), rng=rng))


@pytest.mark.parametrize("shape", [(16, 3), (6, 3, 4, 5)])
def test_batchnorm_running_stats_and_eval(shape):
    rng = np.random.default_rng(11)
    momentum = 0.2
    norm = BatchNorm(3, momentum=momentum, dtype=np.float64)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = rng.standard_normal(shape) * np.array([1.0, 2.0, 0.5]).reshape((1, 3) + (1,) * (len(shape) - 2)) + 3.0
        y = norm.forward(x)
        norm.clear_saved()
        # training output uses the batch's own (biased) statistics
        bshape = (1, 3) + (1,) * (len(shape) - 2)
        expected = (x - x.mean(axis=axes).reshape(bshape)) / np.sqrt(x.var(axis=axes).reshape(bshape) + 1e-5)
        np.testing.assert_allclose(y, expected, atol=1e-10)
        # the running variance takes the unbiased estimate, as PyTorch does
        mean = (1 - momentum) * mean + momentum * x.mean(axis=axes)
        var = (1 - momentum) * var + momentum * x.var(axis=axes, ddof=1)
    np.testing.assert_allclose(norm.buffers["running_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(norm.buffers["running_var"], var, rtol=1e-12)

    norm.params["gamma"][:] = [1.0, 2.0, 3.0]
    norm.params["beta"][:] = [0.0, -1.0, 1.0]
    x = rng.standard_normal(shape)
    bshape = (1, 3) + (1,) * (len(shape) - 2)
    expected = ((x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5)
                * norm.params["gamma"].reshape(bshape) + norm.params["beta"].reshape(bshape))
    np.testing.assert_allclose(norm.infer(x), expected, atol=1e-12)
    norm.eval()
    np.testing.assert_allclose(norm.forward(x), expected, atol=1e-12)
    norm.clear_saved()
    # eval mode leaves the running statistics alone
    np.testing.assert_allclose(norm.buffers["running_mean"], mean, rtol=1e-12)


def test_batchnorm_buffers_follow_astype_and_state_dict():
    norm = BatchNorm(4).astype(np.float64)
    assert norm.buffers["running_var"].dtype == np.float64
    assert {"running_mean", "running_var", "gamma", "beta"} <= set(norm.state_dict())


# -- inference keeps nothing ------------------------------------------------------------------------
@pytest.mark.parametrize("make,shape", [
    (lambda rng: Conv2d(2, 3, 3, rng, stride=2, padding=1), (2, 2, 6, 6)),
    (lambda rng: MaxPool2d(2), (2, 2, 6, 6)),
    (lambda rng: MaxPool2d(3, 2), (2, 2, 7, 7)),
    (lambda rng: LayerNorm(6), (3, 6)),
    (lambda rng: BatchNorm(2), (4, 2)),
    (lambda rng: BatchNorm(2), (2, 2, 3, 3)),
])
def test_infer_keeps_nothing(make, shape):
    rng = np.random.default_rng(12)
    module = make(rng)
    x = rng.standard_normal(shape).astype(np.float32)
    for _ in range(3):
        module.infer(x)
    assert module.saved_count() == 0
    module.forward(x)
    assert module.saved_count() == 1
