"""The core's hand-written backward passes against central finite differences (float64), and the
machinery around them: flat buffers, optimizers, save/load, the inference path."""

import tracemalloc

import numpy as np
import pytest
from conftest import assert_gradients_ok

import rlscratch.nn as nn


def away_from_zero(rng, shape, margin=0.1):
    """Random inputs with |x| >= margin, so finite differences never straddle a kink at 0."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + margin)


def test_linear(rng):
    layer = nn.Linear(5, 3, rng).astype(np.float64)
    layer.params["b"][:] = rng.standard_normal(3)
    assert_gradients_ok(nn.check_module(layer, rng.standard_normal((4, 5)), rng=rng))


@pytest.mark.parametrize("activation", [nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softmax,
                                        nn.LogSoftmax])
def test_activations(rng, activation):
    assert_gradients_ok(nn.check_module(activation(), away_from_zero(rng, (4, 6)), rng=rng))


@pytest.mark.parametrize("shape, dtype", [((7,), np.float32), ((5, 6), np.float32), ((3, 2, 4, 4), np.float64),
                                          ((4, 3), np.int64), ((3, 2, 120, 100), np.float32)])
def test_relu_fast_path_is_max_with_zero(rng, shape, dtype):
    """nn.relu (a zero array of x's shape, or beyond FULL_ZEROS_MAX entries (the last case) one
    sample's zeros broadcast along the batch: numpy's vectorised loop) against the plain definition,
    entry for entry: NaN stays NaN, the dtype is kept, out= writes in place."""
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    if x.dtype.kind == "f":
        x.flat[0], x.flat[1] = np.nan, 0.0
    expected = np.maximum(x, 0)
    y = nn.activations.relu(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(nn.ReLU().infer(x), expected)
    same = nn.activations.relu(x, out=x)
    assert same is x
    np.testing.assert_array_equal(x, expected)


def test_relu_backward_is_the_mask_of_positive_inputs(rng):
    x, dy = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((5, 8)).astype(np.float32)
    x[0, :3] = 0.0  # the kink: no gradient
    layer = nn.ReLU()
    layer.forward(x)
    dx = layer.backward(dy)
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0.0))


def relu_net(rng, first_relu=False):
    """conv -> ReLU -> flatten -> linear -> ReLU -> linear -> ReLU (float64): every ReLU after a layer
    whose output Sequential may hand over for overwriting, the last one ending the network."""
    layers = [nn.Conv2d(2, 3, 3, rng, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 6, rng),
              nn.ReLU(), nn.Linear(6, 4, rng), nn.ReLU()]
    return nn.Sequential(*([nn.ReLU()] if first_relu else []), *layers).astype(np.float64)


def test_sequential_in_place_relu_equals_the_plain_layers(rng, monkeypatch):
    """Sequential lets a ReLU overwrite a fresh array (after Conv2d, Linear, through Flatten): the same
    numbers, output, dL/dx and every parameter gradient, as with no layer working in place; and the
    caller's input and the dL/dy it passes are never written into."""
    x, dy = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 4))
    calls = []

    def spy_on(method):
        original = getattr(nn.ReLU, method)

        def spy(self, array, overwrite=False):
            calls.append((method, overwrite))
            return original(self, array, overwrite)

        monkeypatch.setattr(nn.ReLU, method, spy)

    spy_on("forward")
    spy_on("backward")
    results = {}
    for in_place in (True, False):
        monkeypatch.setattr(nn.ReLU, "can_overwrite", in_place)
        net = relu_net(np.random.default_rng(1), first_relu=True)
        x_before, dy_before = x.copy(), dy.copy()
        y = net.forward(x)
        dx = net.backward(dy)
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(dy, dy_before)
        results[in_place] = (y, dx, net.flat_grads.copy(), net.infer(x))
        np.testing.assert_array_equal(x, x_before)
    # The first ReLU gets the caller's x, the last the caller's dy; the conv's ReLU its dL/dy through Flatten.
    assert calls[:8] == ([("forward", False)] + [("forward", True)] * 3
                         + [("backward", False)] + [("backward", True)] * 3)
    for a, b in zip(results[True], results[False]):
        np.testing.assert_array_equal(a, b)


class KeepsItsOutput(nn.Module):
    """y = a copy of x, kept (as Tanh or Sigmoid keep y for their backward); no returns_fresh promise."""

    def forward(self, x):
        y = x.copy()
        self._saved.append(y)
        return y


@pytest.mark.parametrize("between", [[], [nn.Flatten()]])
def test_relu_never_overwrites_an_array_a_layer_kept(rng, between):
    """Linear's output is fresh, but the layer after it keeps its own: the ReLU after that gets no
    permission to overwrite (freshness does not pass through a layer that made no promise)."""
    x, linear = rng.standard_normal((3, 4)), nn.Linear(4, 4, rng)
    keeper = KeepsItsOutput()
    y = nn.Sequential(linear, keeper, *between, nn.ReLU()).forward(x)
    z = linear.infer(x)
    assert (z < 0).any()
    np.testing.assert_array_equal(keeper._saved[-1], z)  # negatives intact: ReLU wrote a new array
    np.testing.assert_array_equal(y, np.maximum(z, 0))


def test_in_place_relu_network_gradients(rng):
    assert_gradients_ok(nn.check_module(relu_net(rng), rng.standard_normal((2, 2, 5, 5)), rng=rng))


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1000.0, 0.0, -1000.0]])
    assert np.allclose(nn.softmax(x), [[1.0, 0.0, 0.0]])
    assert np.all(np.isfinite(nn.log_softmax(x)))


def test_sigmoid_matches_definition(rng):
    x = rng.standard_normal(100) * 10
    assert np.allclose(nn.Sigmoid().infer(x), 1 / (1 + np.exp(-x)))


def loss_gradcheck(loss_fn, pred, *args, **kwargs):
    _, analytic = loss_fn(pred, *args, **kwargs)
    return nn.check_gradients(lambda: loss_fn(pred, *args, **kwargs)[0], {"pred": (pred, analytic)})


@pytest.mark.parametrize("shape", [(6,), (6, 3)])
def test_mse_and_huber_with_weights_and_mask(rng, shape):
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    pred[np.abs(np.abs(pred - target) - 1.0) < 0.05] += 0.2  # keep Huber's |d| away from its kink at delta
    weights, mask = rng.uniform(0.5, 2.0, 6), np.array([1, 0, 1, 1, 0, 1])
    for loss_fn in (nn.mse, nn.huber):
        assert_gradients_ok(loss_gradcheck(loss_fn, pred, target))
        assert_gradients_ok(loss_gradcheck(loss_fn, pred, target, weights=weights, mask=mask))


def test_huber_values():
    loss, grad = nn.huber(np.array([0.5, 3.0]), np.array([0.0, 0.0]), delta=1.0)
    assert loss == pytest.approx((0.125 + 2.5) / 2)
    assert np.allclose(grad, [0.25, 0.5])


def test_huber_values_with_two_numbers_per_sample():
    """By hand: each sample's loss is the mean of its entries, so each gradient entry is divided by
    N * D = 4 -- the (N,) shortcut (no division) must not reach a sample of two numbers."""
    pred = np.array([[0.5, 3.0], [-2.0, 0.2]])
    loss, grad = nn.huber(pred, np.zeros_like(pred), delta=1.0)
    assert loss == pytest.approx(((0.125 + 2.5) / 2 + (1.5 + 0.02) / 2) / 2)
    np.testing.assert_allclose(grad, [[0.125, 0.25], [-0.25, 0.05]])


@pytest.mark.parametrize("loss_fn", [nn.mse, nn.huber])
def test_losses_on_one_number_per_sample_match_the_general_path(rng, loss_fn):
    """(N,) predictions skip the per-sample mean (a mean of one number): the same bits as (N, 1)."""
    pred, target = rng.standard_normal((2, 32)).astype(np.float32) * 2
    weights = rng.uniform(0.5, 2.0, 32)
    for kwargs in ({}, {"weights": weights}):
        loss, grad = loss_fn(pred, target, **kwargs)
        loss_2d, grad_2d = loss_fn(pred[:, None], target[:, None], **kwargs)
        assert loss == loss_2d and np.array_equal(grad, grad_2d[:, 0])


def test_mask_ignores_samples(rng):
    pred, target = rng.standard_normal(4), rng.standard_normal(4)
    masked, grad = nn.mse(pred, target, mask=np.array([1, 1, 0, 0]))
    assert masked == pytest.approx(nn.mse(pred[:2], target[:2])[0])
    assert np.all(grad[2:] == 0)


def test_softmax_cross_entropy_labels_and_distributions(rng):
    logits = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    soft = rng.dirichlet(np.ones(4), size=5)
    assert_gradients_ok(loss_gradcheck(nn.softmax_cross_entropy, logits, labels))
    assert_gradients_ok(loss_gradcheck(nn.softmax_cross_entropy, logits, soft, weights=rng.uniform(0.5, 2, 5)))
    # Integer labels and their one-hot distributions are the same loss, with gradient p - y.
    one_hot = np.eye(4)[labels]
    loss_a, grad_a = nn.softmax_cross_entropy(logits, labels)
    loss_b, grad_b = nn.softmax_cross_entropy(logits, one_hot)
    assert loss_a == pytest.approx(loss_b)
    assert np.allclose(grad_a, (nn.softmax(logits) - one_hot) / 5)


def mlp(rng, *sizes, activation=nn.Tanh):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out, rng), activation()]
    return nn.Sequential(*layers[:-1])


def test_sequential_mlp(rng):
    net = mlp(rng, 4, 8, 8, 3).astype(np.float64)
    assert_gradients_ok(nn.check_module(net, rng.standard_normal((5, 4)), rng=rng))


def test_two_input_net_through_concat_and_split(rng):
    # A latent state and a one-hot action go in; a reward and a next state come out (MuZero's g).
    net = nn.Sequential(nn.Concat(), nn.Linear(6 + 2, 7, rng), nn.Tanh(), nn.Split(1, 6)).astype(np.float64)
    state, action = rng.standard_normal((3, 6)), np.eye(2)[[0, 1, 1]]
    assert_gradients_ok(nn.check_module(net, state, action, rng=rng))


def test_residual_and_dropout(rng):
    block = nn.Residual(nn.Sequential(nn.Linear(5, 5, rng), nn.Tanh(), nn.Linear(5, 5, rng)))
    dropout = nn.Dropout(0.3, rng)
    net = nn.Sequential(block, dropout).astype(np.float64)

    def same_mask():
        dropout.rng = np.random.default_rng(7)

    assert_gradients_ok(nn.check_module(net, rng.standard_normal((4, 5)), rng=rng, before_forward=same_mask))


def test_dropout_train_and_eval(rng):
    dropout = nn.Dropout(0.5, rng)
    x = np.ones((1000, 10))
    y = dropout(x)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.45 < (y == 0).mean() < 0.55
    dropout.backward(np.ones_like(y))
    dropout.eval()
    assert dropout(x) is x and dropout.infer(x) is x


def test_linear_gradient_after_zero_grad_is_stored_then_accumulated(rng):
    """After zero_grad the first backward stores dz^T x into dL/dW (Module.grads_zeroed), the next
    adds to it; gradients written by hand in between (flat_grads = ...) are added to, not lost."""
    net = nn.Sequential(nn.Linear(3, 2, rng)).astype(np.float64)
    x1, x2 = rng.standard_normal((2, 4, 3))
    g1, g2 = rng.standard_normal((2, 4, 2))
    net.zero_grad()
    net.forward(x1)
    net.forward(x2)
    net.backward(g2)
    np.testing.assert_allclose(net[0].grads["W"], g2.T @ x2, rtol=1e-12)
    net.backward(g1)
    np.testing.assert_allclose(net[0].grads["W"], g2.T @ x2 + g1.T @ x1, rtol=1e-12)
    net.zero_grad()
    net.flat_grads = np.ones_like(net.flat_grads)
    net.forward(x1)
    net.backward(g1)
    np.testing.assert_allclose(net[0].grads["W"], 1.0 + g1.T @ x1, rtol=1e-12)
    np.testing.assert_allclose(net[0].grads["b"], 1.0 + g1.sum(axis=0), rtol=1e-12)


def test_module_called_three_times_accumulates(rng):
    """One dynamics net unrolled 3 steps in one training step, as in MuZero: s_{k+1} = g(s_k)."""
    g = nn.Sequential(nn.Linear(4, 4, rng), nn.Tanh()).astype(np.float64)
    head = nn.Linear(4, 2, rng).astype(np.float64)
    s0 = rng.standard_normal((3, 4))
    upstream = [rng.standard_normal((3, 2)) for _ in range(3)]

    def unrolled_loss():
        s, total = s0, 0.0
        for k in range(3):
            s = g.infer(s)
            total += np.sum(upstream[k] * head.infer(s))
        return total

    g.zero_grad()
    head.zero_grad()
    s, states = s0, []
    for _ in range(3):
        s = g(s)
        states.append(s)
    head_outputs = [head(s) for s in states]  # noqa: F841 - kept for their saved activations
    ds_carry = np.zeros_like(s0)
    for k in reversed(range(3)):
        ds = head.backward(upstream[k]) + ds_carry
        ds_carry = g.backward(ds)
    errors = nn.check_gradients(unrolled_loss, {
        "g": (g.flat_params, g.flat_grads.copy()),
        "head": (head.flat_params, head.flat_grads.copy()),
    })
    assert_gradients_ok(errors)
    assert g.saved_count() == 0 and head.saved_count() == 0


def test_flat_buffer_views_and_sub_slices(rng):
    net = nn.Sequential(nn.Sequential(nn.Linear(3, 4, rng), nn.ReLU()), nn.Linear(4, 2, rng))
    flat = net.flat_params
    assert flat.size == net.num_params() == 3 * 4 + 4 + 4 * 2 + 2
    first = net.layers[0].layers[0]
    assert np.shares_memory(first.params["W"], flat) and np.shares_memory(first.grads["W"], net.flat_grads)
    # A sub-network's parameters are a contiguous slice of the root's vector.
    trunk = net.layers[0]
    assert np.shares_memory(trunk.flat_params, flat) and trunk.flat_params.size == 16
    flat[:] = 0.5
    assert np.all(first.params["W"] == 0.5)
    assert net.dtype == np.float32


def test_shared_module_counted_once(rng):
    shared = nn.Linear(3, 3, rng)
    net = nn.Sequential(shared, nn.Tanh(), shared)
    assert net.num_params() == 12


def test_clone_and_polyak(rng):
    online = mlp(rng, 3, 5, 2)
    target = online.clone()
    assert not np.shares_memory(online.flat_params, target.flat_params)
    assert np.array_equal(online.flat_params, target.flat_params)
    before = target.flat_params.copy()
    online.flat_params += 1.0
    target.copy_from(online, tau=0.25)
    assert np.allclose(target.flat_params, 0.75 * before + 0.25 * online.flat_params)
    target.copy_from(online)
    assert np.array_equal(target.flat_params, online.flat_params)


def test_inference_path_keeps_nothing(rng):
    net = mlp(rng, 4, 64, 64, 2, activation=nn.ReLU)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    net.infer(x)
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    for _ in range(20_000):
        net.infer(x)
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert net.saved_count() == 0
    assert grown < 10_000, f"inference grew memory by {grown} bytes"
    net(x)
    assert net.saved_count() == 5  # training forward keeps one entry per layer
    net.clear_saved()


def test_float32_stays_float32(rng):
    net = mlp(rng, 4, 8, 2, activation=nn.ReLU)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = net(x)
    _, dy = nn.softmax_cross_entropy(y, np.array([0, 1, 0]))
    dx = net.backward(dy)
    assert y.dtype == dy.dtype == dx.dtype == net.flat_grads.dtype == np.float32


# -- optimizers: a parameter vector theta with a fixed gradient g, stepped by hand ----------------
class Vector(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.add_param("theta", np.array(values, dtype=np.float64))


def run_optimizer(make, grads_per_step):
    vec = Vector([1.0, -2.0])
    opt = make(vec)
    for g in grads_per_step:
        vec.flat_grads[:] = g
        opt.step()
    return vec.flat_params.copy(), opt


GRADS = [np.array([0.5, -1.0]), np.array([0.1, 0.2]), np.array([-0.3, 0.4])]


def test_sgd_momentum_nesterov_by_hand():
    theta, _ = run_optimizer(lambda m: nn.SGD(m, lr=0.1), GRADS)
    assert np.allclose(theta, np.array([1.0, -2.0]) - 0.1 * sum(GRADS))

    theta, v = np.array([1.0, -2.0]), np.zeros(2)
    theta_n = theta.copy()
    for g in GRADS:
        v = 0.9 * v + g
        theta = theta - 0.1 * v
        theta_n = theta_n - 0.1 * (g + 0.9 * v)
    assert np.allclose(run_optimizer(lambda m: nn.Momentum(m, lr=0.1, momentum=0.9), GRADS)[0], theta)
    assert np.allclose(run_optimizer(lambda m: nn.Momentum(m, lr=0.1, momentum=0.9, nesterov=True), GRADS)[0],
                       theta_n)


def test_rmsprop_by_hand():
    theta, s = np.array([1.0, -2.0]), np.zeros(2)
    for g in GRADS:
        s = 0.9 * s + 0.1 * g * g
        theta = theta - 0.01 * g / (np.sqrt(s) + 1e-8)
    assert np.allclose(run_optimizer(lambda m: nn.RMSprop(m, lr=0.01, alpha=0.9), GRADS)[0], theta)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_and_adamw_by_hand(decoupled):
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    theta, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            theta = theta * (1 - lr * wd)
        else:
            g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    cls = nn.AdamW if decoupled else nn.Adam
    assert np.allclose(run_optimizer(lambda mod: cls(mod, lr=lr, weight_decay=wd), GRADS)[0], theta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_step_flushes_subnormal_weights(dtype):
    """A step leaves no weight between 0 and the smallest normal float (subnormals make every later
    product with them many times slower on x86), and leaves normal weights as the update made them."""
    tiny = np.finfo(dtype).tiny
    layer = nn.Linear(3, 1, np.random.default_rng(0)).flatten(dtype)
    w = layer.flat_params
    w[:] = [tiny / 4, -tiny / 1024, tiny, -0.5]
    layer.flat_grads[:] = 0.0
    nn.SGD(layer, lr=0.1).step()
    assert w.tolist() == [0.0, 0.0, tiny, -0.5]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flush_subnormals_finds_each_sign_and_leaves_normal_floats(dtype):
    """Each kind of tiny entry alone is found and zeroed; an array of normal floats (tiny itself,
    -tiny, infinities, NaN) is left as it is without the mask pass (scratch, which receives |x| only
    in that pass, stays untouched)."""
    tiny = np.finfo(dtype).tiny
    normal = [1.0, -3.0, tiny, -tiny, np.inf, -np.inf, np.nan, 2 * tiny, -2 * tiny]
    for small in (tiny / 2, -tiny / 2, tiny * 0.999, -tiny * 0.999, 0.0, -0.0):
        x = np.array(normal + [small], dtype=dtype)
        scratch = np.full_like(x, 7.0)
        nn.optim.flush_subnormals(x, scratch)
        assert x[-1] == 0.0 and (scratch != 7.0).all()
        np.testing.assert_array_equal(x[:-1], np.array(normal, dtype=dtype))
    x = np.array(normal, dtype=dtype)
    scratch = np.full_like(x, 7.0)
    nn.optim.flush_subnormals(x, scratch)
    np.testing.assert_array_equal(x, np.array(normal, dtype=dtype))
    assert (scratch == 7.0).all()


def test_schedules_and_clipping():
    assert nn.optim.linear(1.0, 0.0, 10)(5) == pytest.approx(0.5)
    assert nn.optim.linear(1.0, 0.0, 10)(50) == 0.0
    assert nn.optim.cosine(1.0, 10)(5) == pytest.approx(0.5)
    assert nn.optim.step_decay(1.0, 3, 0.5)(7) == pytest.approx(0.25)
    _, opt = run_optimizer(lambda m: nn.SGD(m, lr=nn.optim.linear(1.0, 0.0, 4)), GRADS)
    assert opt.lr == pytest.approx(0.25)
    grads = np.array([3.0, 4.0])
    assert nn.clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    assert np.allclose(grads, [0.6, 0.8])


def test_save_load_round_trip_with_optimizer(tmp_path, rng):
    net = mlp(rng, 3, 4, 2)
    opt = nn.Adam(net, lr=0.01)
    net.flat_grads[:] = 1.0
    opt.step()
    nn.save(tmp_path / "ckpt.npz", net, opt)
    twin = mlp(np.random.default_rng(99), 3, 4, 2)
    twin_opt = nn.Adam(twin, lr=0.01)
    nn.load(tmp_path / "ckpt.npz", twin, twin_opt)
    assert np.array_equal(twin.flat_params, net.flat_params)
    assert np.array_equal(twin_opt.m, opt.m) and twin_opt.steps == 1
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as data:
        assert "layers.0.W" in data.files


def test_load_rejects_a_mismatched_file(tmp_path, rng):
    nn.save(tmp_path / "small.npz", mlp(rng, 3, 4, 2))
    with pytest.raises(ValueError, match=r"shape mismatch for 'layers.0.W'"):
        nn.load(tmp_path / "small.npz", mlp(rng, 3, 5, 2))
    with pytest.raises(ValueError, match=r"dtype mismatch"):
        nn.load(tmp_path / "small.npz", mlp(rng, 3, 4, 2).astype(np.float64))
    with pytest.raises(ValueError, match=r"missing array 'layers.4.W'"):
        nn.load(tmp_path / "small.npz", mlp(rng, 3, 4, 2, 2))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        nn.load(tmp_path / "junk.npz", mlp(rng, 3, 4, 2))


@pytest.mark.slow
def test_mlp_trains_by_hand(rng):
    """The README's example: XOR-like data, a hand-written training loop."""
    x = rng.uniform(-1, 1, (256, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    net = mlp(rng, 2, 32, 32, 2, activation=nn.ReLU)
    opt = nn.Adam(net, lr=1e-2)
    for _ in range(300):
        loss, dlogits = nn.softmax_cross_entropy(net(x), y)
        net.zero_grad()
        net.backward(dlogits)
        opt.step()
    accuracy = (net.infer(x).argmax(axis=1) == y).mean()
    assert accuracy > 0.95
