"""Recurrent cells and BPTT: finite-difference gradient checks in float64, agreement with the PyTorch
equations written out in plain numpy, inference without memory growth, and a small memory task."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_gradients_ok

from rlscratch.nn import (
    Adam,
    GRUCell,
    Linear,
    LSTMCell,
    Module,
    Recurrent,
    RNNCell,
    check_gradients,
    check_module,
    mse,
)

# Finite-difference step. The default 1e-6 leaves a roundoff of ~1e-16 |L| / h ~ 1e-10 in every
# numerical derivative, which is already 1e-6 of the smallest GRU weight gradients (~1e-5); at 1e-5
# roundoff drops tenfold while the truncation error (~h^2) stays far below it.
STEP = 1e-5
N_IN, HIDDEN, BATCH, STEPS = 3, 4, 2, 4
CELLS = [RNNCell, GRUCell, LSTMCell]


def make_cell(cls, seed: int = 0, dtype=np.float64):
    cell = cls(N_IN, HIDDEN, np.random.default_rng(seed), dtype=dtype)
    # Random biases, so the checks also cover the bias paths away from their (zero) initial values.
    rng = np.random.default_rng(seed + 100)
    for key, value in cell.params.items():
        if key.startswith("b"):
            value += 0.5 * rng.standard_normal(value.shape)
    return cell.astype(dtype)


def random_state(cell, rng):
    h = rng.standard_normal((BATCH, HIDDEN)) * 0.5
    if cell.state_is_pair:
        return h, rng.standard_normal((BATCH, HIDDEN)) * 0.5
    return h


def state_arrays(state, name="h0"):
    """{name: array} for the arrays of a state, for check_gradients' ``wrt``."""
    if isinstance(state, tuple):
        return {name: state[0], name.replace("h", "c"): state[1]}
    return {name: state}


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


# -- gradient checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [RNNCell, GRUCell])
def test_cell_one_step_gradients(cls):
    rng = np.random.default_rng(1)
    cell = make_cell(cls)
    x, h = rng.standard_normal((BATCH, N_IN)), random_state(cell, rng)
    errors = check_module(cell, x, h, rng=rng, h=STEP)
    assert set(errors) == {"input0", "input1", *cell.params}
    assert_gradients_ok(errors)


def test_lstm_cell_one_step_gradients():
    rng = np.random.default_rng(2)
    cell = make_cell(LSTMCell)
    x = rng.standard_normal((BATCH, N_IN))
    h, c = random_state(cell, rng)
    g_h, g_c = rng.standard_normal((BATCH, HIDDEN)), rng.standard_normal((BATCH, HIDDEN))

    def loss() -> float:
        h_new, c_new = cell.forward(x, (h, c))
        cell.clear_saved()
        return float(np.sum(g_h * h_new) + np.sum(g_c * c_new))

    cell.forward(x, (h, c))
    cell.zero_grad()
    dx, (dh, dc) = cell.backward((g_h, g_c))
    wrt = {"x": (x, dx), "h": (h, dh), "c": (c, dc)}
    wrt.update({k: (cell.params[k], cell.grads[k].copy()) for k in cell.params})
    assert_gradients_ok(check_gradients(loss, wrt, h=STEP))


def recurrent_gradient_errors(cls, resets=None, seed=3) -> dict[str, float]:
    """L = sum(G * hs) + sum(G_final * final state) for a cell unrolled through Recurrent."""
    rng = np.random.default_rng(seed)
    rnn = Recurrent(make_cell(cls, seed))
    xs = rng.standard_normal((STEPS, BATCH, N_IN))
    h0 = random_state(rnn.cell, rng)
    g = rng.standard_normal((STEPS, BATCH, HIDDEN))
    g_final = (tuple(rng.standard_normal((BATCH, HIDDEN)) for _ in range(2)) if rnn.cell.state_is_pair
               else rng.standard_normal((BATCH, HIDDEN)))

    def final_term(final) -> float:
        return float(sum(np.sum(gf * f) for gf, f in zip(as_tuple(g_final), as_tuple(final), strict=True)))

    def loss() -> float:
        hs = rnn.forward(xs, h0, resets)
        rnn.clear_saved()
        return float(np.sum(g * hs)) + final_term(rnn.final_state)

    rnn.forward(xs, h0, resets)
    rnn.zero_grad()
    dxs, dh0 = rnn.backward(g, g_final)
    assert rnn.saved_count() == 0
    wrt = {"xs": (xs, dxs)}
    for (name, array), grad in zip(state_arrays(h0).items(), as_tuple(dh0), strict=True):
        wrt[name] = (array, grad)
    wrt.update({k: (rnn.cell.params[k], rnn.cell.grads[k].copy()) for k in rnn.cell.params})
    return check_gradients(loss, wrt, h=STEP)


@pytest.mark.parametrize("cls", CELLS)
def test_recurrent_bptt_gradients(cls):
    errors = recurrent_gradient_errors(cls)
    assert {"xs", "h0"} <= set(errors)
    assert_gradients_ok(errors)


@pytest.mark.parametrize("cls", CELLS)
def test_recurrent_bptt_gradients_with_resets(cls):
    resets = np.zeros((STEPS, BATCH), dtype=bool)
    resets[2, 0] = True  # env 0 starts a new episode before step 2
    resets[0, 1] = True  # env 1 ignores h0 altogether
    resets[3, 1] = True
    assert_gradients_ok(recurrent_gradient_errors(cls, resets))


@pytest.mark.parametrize("cls", CELLS)
def test_recurrent_via_check_module(cls):
    """The same module checked by the generic helper (hs only; the LSTM's h0 is passed as None)."""
    rng = np.random.default_rng(4)
    rnn = Recurrent(make_cell(cls, 4))
    xs = rng.standard_normal((STEPS, BATCH, N_IN))
    if cls is LSTMCell:
        errors = check_module(rnn, xs, rng=rng, h=STEP)
    else:
        errors = check_module(rnn, xs, random_state(rnn.cell, rng), rng=rng, h=STEP)
    assert_gradients_ok(errors)


@pytest.mark.parametrize("cls", CELLS)
def test_same_cell_called_three_times_accumulates(cls):
    rng = np.random.default_rng(5)
    cell = make_cell(cls, 5)
    xs = [rng.standard_normal((BATCH, N_IN)) for _ in range(3)]
    s0 = random_state(cell, rng)
    gs = [rng.standard_normal((BATCH, HIDDEN)) for _ in range(3)]

    def run(step):
        state, outs = s0, []
        for x in xs:
            state = step(x, state)
            outs.append(cell.output(state))
        return outs

    def loss() -> float:
        outs = run(cell.forward)
        cell.clear_saved()
        return float(sum(np.sum(g * h) for g, h in zip(gs, outs, strict=True)))

    run(cell.forward)
    cell.zero_grad()
    dxs = [None] * 3
    dstate = (gs[2], None) if cell.state_is_pair else gs[2]
    for t in (2, 1, 0):
        dxs[t], dstate = cell.backward(dstate)
        if t:  # the output of step t-1 feeds both the loss and step t
            if cell.state_is_pair:
                dstate = (dstate[0] + gs[t - 1], dstate[1])
            else:
                dstate = dstate + gs[t - 1]
    assert cell.saved_count() == 0
    wrt = {f"x{t}": (xs[t], dxs[t]) for t in range(3)}
    for (name, array), grad in zip(state_arrays(s0).items(), as_tuple(dstate), strict=True):
        wrt[name] = (array, grad)
    wrt.update({k: (cell.params[k], cell.grads[k].copy()) for k in cell.params})
    assert_gradients_ok(check_gradients(loss, wrt, h=STEP))


def test_backward_with_only_a_final_state_gradient():
    rng = np.random.default_rng(6)
    rnn = Recurrent(make_cell(GRUCell, 6))
    xs = rng.standard_normal((STEPS, BATCH, N_IN))
    g_final = rng.standard_normal((BATCH, HIDDEN))
    rnn.forward(xs)
    rnn.zero_grad()
    dxs, _ = rnn.backward(None, g_final)
    grads = {k: v.copy() for k, v in rnn.cell.grads.items()}
    rnn.forward(xs)
    rnn.zero_grad()
    dxs_zero, _ = rnn.backward(np.zeros((STEPS, BATCH, HIDDEN)), g_final)
    np.testing.assert_allclose(dxs, dxs_zero)
    for k in grads:
        np.testing.assert_allclose(grads[k], rnn.cell.grads[k])


# -- behaviour ------------------------------------------------------------------------------------

def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def test_gru_matches_pytorch_equations():
    rng = np.random.default_rng(7)
    cell = make_cell(GRUCell, 7)
    x, h = rng.standard_normal((BATCH, N_IN)), rng.standard_normal((BATCH, HIDDEN))
    W_ir, W_iz, W_in = np.split(cell.params["W_x"], 3)
    W_hr, W_hz, W_hn = np.split(cell.params["W_h"], 3)
    b_ir, b_iz, b_in = np.split(cell.params["b_x"], 3)
    b_hr, b_hz, b_hn = np.split(cell.params["b_h"], 3)
    r = sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    n = np.tanh(x @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
    expected = (1.0 - z) * n + z * h
    np.testing.assert_allclose(cell.forward(x, h), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cell.infer(x, h), expected, rtol=1e-12, atol=1e-12)


def test_lstm_matches_pytorch_equations():
    rng = np.random.default_rng(8)
    cell = make_cell(LSTMCell, 8)
    x = rng.standard_normal((BATCH, N_IN))
    h, c = rng.standard_normal((BATCH, HIDDEN)), rng.standard_normal((BATCH, HIDDEN))
    # PyTorch keeps two biases that only appear summed; ours is their sum.
    b_ih = rng.standard_normal(4 * HIDDEN)
    b_hh = cell.params["b"] - b_ih
    W_ii, W_if, W_ig, W_io = np.split(cell.params["W_x"], 4)
    W_hi, W_hf, W_hg, W_ho = np.split(cell.params["W_h"], 4)
    b_ii, b_if, b_ig, b_io = np.split(b_ih, 4)
    b_hi, b_hf, b_hg, b_ho = np.split(b_hh, 4)
    i = sigmoid(x @ W_ii.T + b_ii + h @ W_hi.T + b_hi)
    f = sigmoid(x @ W_if.T + b_if + h @ W_hf.T + b_hf)
    g = np.tanh(x @ W_ig.T + b_ig + h @ W_hg.T + b_hg)
    o = sigmoid(x @ W_io.T + b_io + h @ W_ho.T + b_ho)
    c_expected = f * c + i * g
    h_expected = o * np.tanh(c_expected)
    h_new, c_new = cell.forward(x, (h, c))
    np.testing.assert_allclose(h_new, h_expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_new, c_expected, rtol=1e-12, atol=1e-12)


def test_initialisation():
    rng = np.random.default_rng(9)
    lstm = LSTMCell(N_IN, HIDDEN, rng)
    b = lstm.params["b"]
    np.testing.assert_array_equal(b[HIDDEN:2 * HIDDEN], 1.0)  # forget gate remembers by default
    np.testing.assert_array_equal(np.delete(b, np.s_[HIDDEN:2 * HIDDEN]), 0.0)
    gru = GRUCell(N_IN, HIDDEN, rng)
    for cell, gates in ((lstm, 4), (gru, 3), (RNNCell(N_IN, HIDDEN, rng), 1)):
        assert cell.params["W_x"].shape == (gates * HIDDEN, N_IN)
        assert cell.params["W_h"].shape == (gates * HIDDEN, HIDDEN)
        assert cell.params["W_h"].dtype == np.float32
        for block in np.split(cell.params["W_h"], gates):  # each gate's recurrent block is orthogonal
            np.testing.assert_allclose(block @ block.T, np.eye(HIDDEN), atol=1e-5)
    h, c = lstm.initial_state(5)
    assert h.shape == c.shape == (5, HIDDEN) and not h.any() and not c.any() and h is not c
    assert gru.initial_state(5).shape == (5, HIDDEN)


@pytest.mark.parametrize("cls", CELLS)
def test_infer_keeps_nothing_and_matches_forward(cls):
    rng = np.random.default_rng(10)
    rnn = Recurrent(cls(N_IN, HIDDEN, rng))
    xs = rng.standard_normal((STEPS, BATCH, N_IN)).astype(np.float32)
    resets = np.zeros((STEPS, BATCH), dtype=bool)
    resets[2, 1] = True
    hs_infer = rnn.infer(xs, None, resets)
    final_infer = rnn.final_state
    assert rnn.saved_count() == 0
    hs = rnn.forward(xs, None, resets)
    assert hs.dtype == np.float32 and hs.shape == (STEPS, BATCH, HIDDEN)
    np.testing.assert_array_equal(hs_infer, hs)
    for a, b in zip(as_tuple(final_infer), as_tuple(rnn.final_state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert rnn.saved_count() == STEPS + 1  # one entry per cell step plus the unroll's own
    rnn.clear_saved()
    state = rnn.cell.initial_state(BATCH)
    rnn.cell.infer(xs[0], state)
    assert rnn.saved_count() == 0


@pytest.mark.parametrize("cls", CELLS)
def test_reset_equals_fresh_start_and_chunks_equal_whole(cls):
    rng = np.random.default_rng(11)
    rnn = Recurrent(make_cell(cls, 11))
    xs = rng.standard_normal((6, BATCH, N_IN))
    resets = np.zeros((6, BATCH), dtype=bool)
    resets[3, 0] = True
    hs = rnn.infer(xs, None, resets)
    fresh = rnn.infer(xs[3:, :1])  # env 0's new episode from a zero state
    np.testing.assert_allclose(hs[3:, :1], fresh, rtol=1e-12, atol=1e-12)
    whole = rnn.infer(xs)
    first = rnn.infer(xs[:4])
    second = rnn.infer(xs[4:], rnn.final_state)  # truncated BPTT: the next chunk starts from here
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-12, atol=1e-12)


class MemoryNet(Module):
    """A recurrent encoder and a linear readout of its final state."""

    def __init__(self, cell, rng):
        super().__init__()
        self.rnn = Recurrent(cell)
        self.head = Linear(cell.n_hidden, 1, rng, init="xavier")

    def forward(self, xs):
        self.rnn.forward(xs)
        return self.head.forward(self.rnn.final_state)  # RNN/GRU: the state is h

    def backward(self, dy):
        return self.rnn.backward(None, self.head.backward(dy))


@pytest.mark.parametrize("cls", [RNNCell, GRUCell])
@pytest.mark.slow
def test_learns_to_remember_the_first_input(cls):
    """Output x_0 after 5 steps. A memoryless predictor (one that sees only the last input, which is
    independent of x_0) can do no better than predicting 0: MSE = Var(x_0) = 1."""
    rng = np.random.default_rng(12)
    net = MemoryNet(cls(1, 16, rng), rng)
    optimizer = Adam(net, lr=1e-2)
    for _ in range(300):
        xs = rng.standard_normal((5, 32, 1)).astype(np.float32)
        net.zero_grad()
        _, dy = mse(net.forward(xs), xs[0])
        net.backward(dy)
        optimizer.step()
    xs = rng.standard_normal((5, 1000, 1)).astype(np.float32)
    net.rnn.infer(xs)
    error, _ = mse(net.head.infer(net.rnn.final_state), xs[0])
    assert error < 0.05, f"{cls.__name__} memory task MSE {error:.3f} (memoryless: 1.0)"
