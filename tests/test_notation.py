"""The arrow notation: parse/print round trips of the notes' examples, syntax errors with positions,
finite-difference checks of compiled models (float64), notation GRU/LSTM against the core's cells,
advantages against numpy, small learning tasks, configs, the CLI, and MNIST through the notation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_gradients_ok

from rlscratch import nn
from rlscratch.config import ModelConfig, load_config
from rlscratch.models import build_model, mlp
from rlscratch.notation import NotationError, compile_program, explain, format_program, network_from_notation, parse

STEP = 1e-5  # as in test_nn_recurrent: roundoff at 1e-6 is already ~1e-6 of the smallest GRU gradients

# -- the notes' examples, written canonically (spaces around + - * /, none around |) ------------
MLP = "X --[M_1|relu]-> h_1 --[M_2]-> p => y\n"
SOFTMAX = "X --[M_1|relu]-> h_1 --[M_2|softmax]-> p => one_hot(y)\n"
RNN = "0 -> h_0\nX_t|h_{t-1} --[M_1]-> h_t --[M_2]-> p => y_t\n"
GRU = """\
GRU: x_t, h_{t-1}
  x_t|h_{t-1} --[W_r|sigmoid]-> r_t
  x_t|h_{t-1} --[W_z|sigmoid]-> z_t
  x_t --[W_xn]-> a_t
  h_{t-1} --[W_hn]-> b_t
  a_t + r_t * b_t --[tanh]-> n_t
  (1 - z_t) * n_t + z_t * h_{t-1} -> h_t
  return h_t
0 -> h_0
X_t, h_{t-1} --[GRU]-> h_t
"""
LSTM = """\
LSTM: x_t, h_{t-1}, c_{t-1}
  x_t|h_{t-1} --[W_i|sigmoid]-> i_t
  x_t|h_{t-1} --[W_f|sigmoid]-> f_t
  x_t|h_{t-1} --[W_g|tanh]-> g_t
  x_t|h_{t-1} --[W_o|sigmoid]-> o_t
  f_t * c_{t-1} + i_t * g_t -> c_t
  o_t * tanh(c_t) -> h_t
  return h_t, c_t
0 -> h_0
0 -> c_0
X_t, h_{t-1}, c_{t-1} --[LSTM]-> h_t, c_t
"""
TD = "0.999 -> gamma\nO_t --[Value]-> V_t => V_{t-1} * gamma + r_t\n"
A2C = "V_{t+1} * gamma + r_t - V_t -> A_t\nO_t --[clip_grad(Policy)]-> pi_t $ A_t * log(pi_t)\n"
GAE = "TD_t + gamma * lam * A_{t+1} * (1 - d_t) -> A_t\n"
TD_GRU = "Enc: h_{t-1}, x_t\n  x_t|h_{t-1} --[W|tanh]-> h_t\n  return h_t\nO_t, h_{t-1} --[Enc]-> h_t\n" \
         "h_t --[Value]-> V_t\n"
EXAMPLES = {"mlp": MLP, "softmax": SOFTMAX, "rnn": RNN, "gru": GRU, "lstm": LSTM, "td": TD, "a2c": A2C, "gae": GAE,
            "td_gru": TD_GRU}


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_round_trip(name):
    program = parse(EXAMPLES[name])
    assert format_program(program) == EXAMPLES[name]
    assert parse(format_program(program)) == program


def test_notes_spellings_parse_to_the_canonical_program():
    """Written as in the notes (no spaces, `Enc: h_{t-1},x_t`, a line broken after an arrow), the same tree."""
    assert parse("V_{t+1}*gamma + r_t - V_t -> A_t\nO_t --[clip_grad(Policy)]->\n  pi_t $ A_t*log(pi_t)") == parse(A2C)
    assert parse("TD_t + gamma*lam*A_{t+1}*(1-d_t) -> A_t") == parse(GAE)
    assert parse("Enc: h_{t-1},x_t\n x_t|h_{t-1} --[W|tanh]-> h_t\n return h_t\nO_t,h_{t-1} --[Enc]-> h_t\n"
                 "h_t --[Value]-> V_t  # a comment") == parse(TD_GRU)
    # one line, as a YAML string can hold it
    assert parse("M_1: dense(128); X --[M_1|relu]-> h --[M_2|softmax]-> p => one_hot(y)").items[0].names == ("M_1",)


@pytest.mark.parametrize("source, line, column, expected", [
    ("X --[M_1|relu-> h_1", 1, 14, "expected '|' or ']' to close the '--[' opened at line 1, column 3, found '->'"),
    ("X --[M_1]- h", 1, 10, "expected '->' after ']'"),
    ("X --[M_1]->", 1, 12, "expected the state the arrow defines, e.g. 'h_1', found the end of the program"),
    ("M_1: dense(128)\nX --[M_1]-> h_1 --[]-> p", 2, 20, "expected a function or parameter name"),
    ("X -> h_{x}", 1, 6, "'x' is not a context"),
    ("X @ y", 1, 3, "unexpected character '@'"),
    ("(X + y -> z", 1, 8, "expected ')' to close the '('"),
    ("X + y", 1, 6, "expected '--[', '->', '=>' or '$' after the expression"),
    ("Enc: x_t\n  x_t --[W]-> h_t\n", 3, 1, "macro 'Enc' (line 1) has no 'return' line"),
    ("return h_t", 1, 1, "'return' outside a macro"),
    ("X --[dense(128)]-> h", 1, 6, "name the parameter: --[M_1: dense(128)]->"),
    ("X: 4\nX --[M_1|rleu]-> h", 2, 10, "unknown function 'rleu' -- did you mean 'relu'?"),
    ("X: 4\nM: dense(2)\nX --[M]-> h\nX --[M]-> h", 4, 1, "h is defined twice (lines 3 and 4)"),
    ("E: x\n  x --[M]-> y\n  return z\nX --[E]-> h", 3, 10, "macro E returns z, which it never defines"),
])
def test_errors_point_at_line_and_column(source, line, column, expected):
    with pytest.raises(NotationError) as info:
        compile_program(source, np.random.default_rng(0))
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert expected in str(info.value)
    assert str(info.value).startswith(f"line {line}, column {column}: ")


def test_size_errors_name_the_fix():
    with pytest.raises(NotationError, match="cannot infer the input size of M_1 .* declare the size of the data"):
        compile_program("M_1: dense(4)\nX --[M_1]-> h", np.random.default_rng(0))
    with pytest.raises(NotationError, match=r"cannot infer the output size of M_2: declare it, e.g. 'M_2: dense"):
        compile_program("X: 3\nX --[M_1: dense(4)|relu]-> h --[M_2]-> p", np.random.default_rng(0))
    with pytest.raises(NotationError, match="M reads h with 5 features here but 3 features elsewhere"):
        compile_program("X: 3\nM: dense(5)\nX --[M]-> h --[M]-> p", np.random.default_rng(0))
    with pytest.raises(NotationError, match=r"conv reads images shaped \(C, H, W\), but X has 3 features: reshape"):
        compile_program("X: 3\nC: conv(8, 3)\nX --[C]-> h", np.random.default_rng(0))
    with pytest.raises(NotationError, match=r"M is a dense layer and reads C\(reshape\(1, 2, 2\)\(X\)\), shaped "
                                            r"\(2, 2, 2\): flatten it first"):
        compile_program("X: 4\nC: conv(2, 1)\nX --[reshape(1, 2, 2)|C|M: dense(3)]-> h", np.random.default_rng(0))


# -- finite differences ----------------------------------------------------------------------------
def loss_gradient_errors(model, xs, targets):
    """Relative errors of backward_loss's parameter gradients against central differences of loss()."""
    model.zero_grad()
    model.forward(*xs)
    model.backward_loss(targets)
    assert model.saved_count() == 0
    wrt = {name: (owner.params[key], owner.grads[key].copy()) for name, owner, key in model.named_params()}
    return nn.check_gradients(lambda: model.loss(*xs, targets=targets), wrt, h=STEP)


def compiled(source, seed=0, **kwargs):
    return compile_program(source, np.random.default_rng(seed), dtype=np.float64, **kwargs)


def with_random_biases(model, seed=5):
    rng = np.random.default_rng(seed)
    for _, owner, key in model.named_params():
        if key == "b":
            owner.params[key][...] = 0.3 * rng.standard_normal(owner.params[key].shape)
    return model


def test_mlp_with_mse_and_softmax_cross_entropy_gradients(rng):
    x = rng.standard_normal((6, 4))
    model = with_random_biases(compiled("X: 4\nM_1: dense(5)\nM_2: dense(3)\n" + MLP))
    assert_gradients_ok(loss_gradient_errors(model, (x,), {"y": rng.standard_normal((6, 3))}))
    model = with_random_biases(compiled("X: 4\nM_1: dense(5)\nM_2: dense(3)\n" + SOFTMAX))
    assert_gradients_ok(loss_gradient_errors(model, (x,), {"y": rng.integers(0, 3, 6)}))
    # the Module contract itself: outputs (probabilities) against the input and every parameter
    assert_gradients_ok(nn.check_module(model, x, rng=rng, h=STEP))


def test_recurrent_net_unrolls_with_backprop_through_time(rng):
    model = with_random_biases(compiled("X: 3\nM_1: dense(4)\nM_2: dense(2)\n0 -> h_0\n"
                                        "X_t|h_{t-1} --[M_1|tanh]-> h_t --[M_2]-> p => y_t"))
    xs = rng.standard_normal((5, 2, 3))
    assert model.forward(xs).shape == (5, 2, 2) and model.saved_count() > 0
    model.clear_saved()
    assert_gradients_ok(loss_gradient_errors(model, (xs,), {"y": rng.standard_normal((5, 2, 2))}))
    assert_gradients_ok(nn.check_module(model, xs, rng=rng, h=STEP))


def test_sequence_summarised_by_its_last_state(rng):
    """h_T: the state at the last step, read by a statement that does not run over time."""
    model = with_random_biases(compiled("X: 2\nW: dense(3)\nC: dense(4)\n0 -> h_0\nX_t|h_{t-1} --[W|tanh]-> h_t\n"
                                        "h_T --[C|softmax]-> p => one_hot(y)"))
    xs = rng.standard_normal((6, 3, 2))
    assert model.forward(xs).shape == (3, 4)
    model.clear_saved()
    assert_gradients_ok(loss_gradient_errors(model, (xs,), {"y": np.array([0, 3, 1])}))


GRU_SIZED = "X: 3\nW_r, W_z, W_xn, W_hn: dense(4)\n" + GRU
LSTM_SIZED = "X: 3\nW_i, W_f, W_g, W_o: dense(4)\n" + LSTM


@pytest.mark.parametrize("source", [GRU_SIZED, LSTM_SIZED], ids=["gru", "lstm"])
def test_gated_cells_written_in_the_notation_pass_gradient_checks(source, rng):
    model = with_random_biases(compiled(source, outputs=["h_t"]))
    assert_gradients_ok(nn.check_module(model, rng.standard_normal((4, 2, 3)), rng=rng, h=STEP))


def copy_weights(model, cell):
    """Load the core cell's stacked weights into the notation's per-gate dense layers:
    a gate reading x_t|h_{t-1} gets [W_x | W_h] for its rows, and the sum of the biases it sees."""
    params = {name: owner.params[key] for name, owner, key in model.named_params()}
    H = cell.n_hidden
    W_x, W_h = cell.params["W_x"], cell.params["W_h"]
    rows = {g: slice(i * H, (i + 1) * H) for i, g in enumerate("rzn" if "b_x" in cell.params else "ifgo")}
    if "b_x" in cell.params:  # GRU: separate biases, and b_hn sits inside r * (h W_hn^T + b_hn)
        b_x, b_h = cell.params["b_x"], cell.params["b_h"]
        for g in "rz":
            params[f"W_{g}.W"][...] = np.concatenate([W_x[rows[g]], W_h[rows[g]]], axis=1)
            params[f"W_{g}.b"][...] = b_x[rows[g]] + b_h[rows[g]]
        params["W_xn.W"][...], params["W_xn.b"][...] = W_x[rows["n"]], b_x[rows["n"]]
        params["W_hn.W"][...], params["W_hn.b"][...] = W_h[rows["n"]], b_h[rows["n"]]
    else:
        for g in "ifgo":
            params[f"W_{g}.W"][...] = np.concatenate([W_x[rows[g]], W_h[rows[g]]], axis=1)
            params[f"W_{g}.b"][...] = cell.params["b"][rows[g]]


@pytest.mark.parametrize("source, cell_cls", [(GRU_SIZED, nn.GRUCell), (LSTM_SIZED, nn.LSTMCell)], ids=["gru", "lstm"])
def test_notation_cells_equal_the_core_cells(source, cell_cls, rng):
    cell = cell_cls(3, 4, np.random.default_rng(1), dtype=np.float64)
    for key in cell.params:
        if key.startswith("b"):
            cell.params[key][...] = rng.standard_normal(cell.params[key].shape)
    model = compiled(source, outputs=["h_t"])
    copy_weights(model, cell)
    core = nn.Recurrent(cell)
    xs = rng.standard_normal((6, 2, 3))
    np.testing.assert_allclose(model.forward(xs), core.forward(xs), rtol=0, atol=1e-12)
    dhs = rng.standard_normal((6, 2, 4))
    model.zero_grad()
    cell.zero_grad()
    dxs, _ = core.backward(dhs)
    np.testing.assert_allclose(model.backward(dhs), dxs, rtol=0, atol=1e-12)
    grads = {name: owner.grads[key] for name, owner, key in model.named_params()}
    H, first = 4, ("W_r" if cell_cls is nn.GRUCell else "W_i")
    np.testing.assert_allclose(grads[f"{first}.W"][:, :3], cell.grads["W_x"][:H], atol=1e-12)
    np.testing.assert_allclose(grads[f"{first}.W"][:, 3:], cell.grads["W_h"][:H], atol=1e-12)
    bias = cell.grads["b_x"] if cell_cls is nn.GRUCell else cell.grads["b"]
    np.testing.assert_allclose(grads[f"{first}.b"], bias[:H], atol=1e-12)
    if cell_cls is nn.GRUCell:
        np.testing.assert_allclose(grads["W_hn.W"], cell.grads["W_h"][2 * H:], atol=1e-12)
        np.testing.assert_allclose(grads["W_hn.b"], cell.grads["b_h"][2 * H:], atol=1e-12)


def test_td_learning_with_gru_encoder(rng):
    """The notes' 'TD Learning with GRU', with a data target so the loss is a function of the parameters."""
    source = ("O: 3\nW_r, W_z, W_xn, W_hn: dense(5)\nValue: dense(1)\n" + GRU.replace("X_t, h_{t-1}", "O_t, h_{t-1}")
              + "h_t --[Value]-> V_t => y_t\n")
    model = with_random_biases(compiled(source))
    assert model.inputs == ["O"] and model.targets == ["y"] and model.outputs == ["V_t"]
    errors = loss_gradient_errors(model, (rng.standard_normal((4, 2, 3)),), {"y": rng.standard_normal((4, 2))})
    assert_gradients_ok(errors)


def test_td_target_is_a_constant(rng):
    """The notes' TD line: the target V_{t-1} * gamma + r_t gets no gradient (semi-gradient TD), so the
    gradient equals that of the same loss with the target given as data; t=1 (no V_0) is left out."""
    td = compiled("O: 3\nValue: dense(1)\n" + TD)
    os, r = rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 4))
    td.zero_grad()
    values = td.forward(os)
    loss = td.backward_loss({"r": r})
    target = values[:-1, :, 0] * 0.999 + r[1:]  # V_{t-1} gamma + r_t for t = 2..5
    given = compiled("O: 3\nValue: dense(1)\nO_t --[Value]-> V_t\nV_{t+1} => y_t")
    given.copy_from(td)
    given.zero_grad()
    given.forward(os)
    assert given.backward_loss({"y": target}) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(given.flat_grads, td.flat_grads, rtol=1e-10)


def test_policy_gradient_objective(rng):
    """pi_t $ A_t * log(pi_t[a_t]): with A given, a true function of the parameters, so finite differences
    apply; log of a softmax output is computed as log_softmax of its logits."""
    model = with_random_biases(compiled("O: 3\nP_1: dense(5)\nP_2: dense(4)\n"
                                        "O_t --[P_1|tanh|P_2|softmax]-> pi_t $ A_t * log(pi_t[a_t]) - 0.01 * pi_t * "
                                        "log(pi_t)"))
    targets = {"A": rng.standard_normal((3, 5)), "a": rng.integers(0, 4, (3, 5))}
    assert_gradients_ok(loss_gradient_errors(model, (rng.standard_normal((3, 5, 3)),), targets))


A2C_FULL = """\
0.9 -> gamma
O: 2
P_1, V_1: dense(16)
P_2: dense(2)
V_2: dense(1)
O_t --[V_1|tanh]-> u_t --[V_2]-> V_t => V_{t+1} * gamma * (1 - d_t) + r_t
V_{t+1} * gamma * (1 - d_t) + r_t - V_t -> A_t
O_t --[clip_grad(P_1|tanh|P_2|softmax, 1000)]-> pi_t $ A_t * log(pi_t[a_t])
"""


def test_a2c_advantage_weights_are_constants(rng):
    """The A2C program's gradient equals the value regression plus the policy gradient with the advantage
    given as data (computed here in numpy from the model's own values)."""
    model = with_random_biases(compiled(A2C_FULL))
    os, r = rng.standard_normal((5, 3, 2)), rng.standard_normal((4, 3))
    d, a = rng.random((4, 3)) < 0.3, rng.integers(0, 2, (4, 3))
    model.zero_grad()
    values, _ = model.forward(os)
    model.backward_loss({"r": r, "d": d, "a": a})
    v = values[:, :, 0]
    target = v[1:] * 0.9 * (1 - d) + r
    split = compiled("O: 2\nP_1, V_1: dense(16)\nP_2: dense(2)\nV_2: dense(1)\nO_t --[V_1|tanh]-> u_t --[V_2]-> V_t\n"
                     "V_t => y_t\nO_t --[P_1|tanh|P_2|softmax]-> pi_t $ A_t * log(pi_t[a_t])")
    split.load_state_dict(model.state_dict())
    split.zero_grad()
    split.forward(os[:4])
    split.backward_loss({"y": target, "A": target - v[:4], "a": a})
    np.testing.assert_allclose(split.flat_grads, model.flat_grads, rtol=1e-9, atol=1e-14)


def test_gae_runs_backwards_in_time(rng):
    source = ("0.9 -> gamma\n0.8 -> lam\n0 -> A_{T+1}\nO: 2\nValue: dense(1)\nO_t --[Value]-> V_t\n"
              "r_t + gamma * V_{t+1} * (1 - d_t) - V_t -> TD_t\n" + GAE)
    model = compiled(source, outputs=["V_t", "A_t"])
    assert model.inputs == ["O", "r", "d"]
    os, r, d = rng.standard_normal((7, 3, 2)), rng.standard_normal((6, 3)), rng.random((6, 3)) < 0.2
    (values, advantages) = model.infer(os, r, d)
    assert values.shape == (6, 3, 1)  # t = 1..T with T the shortest sequence (r, d); O has one more step
    W, b = (owner.params[key] for _, owner, key in model.named_params())
    v = (os @ W.T + b)[:, :, 0]
    expected, running = np.zeros((6, 3)), np.zeros(3)
    for t in reversed(range(6)):
        delta = r[t] + 0.9 * v[t + 1] * (1 - d[t]) - v[t]
        running = delta + 0.9 * 0.8 * running * (1 - d[t])
        expected[t] = running
    assert advantages.shape == (6, 3, 1)
    np.testing.assert_allclose(advantages[:, :, 0], expected, rtol=1e-12)


def test_q_learning_prediction_expression(rng):
    """A prediction that is an expression (Q of the action taken) regressed on a target built with max."""
    source = ("O: 3\nQ: dense(4)\nO_t --[Q]-> q_t\n0.9 -> gamma\nq_t[a_t] => r_t + gamma * max(q_{t+1})")
    model = with_random_biases(compiled(source))
    os = rng.standard_normal((4, 2, 3))
    targets = {"a": rng.integers(0, 4, (3, 2)), "r": rng.standard_normal((3, 2))}
    model.zero_grad()
    model.forward(os)
    model.backward_loss(targets)
    # the same with the target as data
    q = model.infer(os)
    given = compiled("O: 3\nQ: dense(4)\nO_t --[Q]-> q_t\nq_t[a_t] => y_t")
    given.copy_from(model)
    given.zero_grad()
    given.forward(os[:3])
    given.backward_loss({"a": targets["a"], "y": targets["r"] + 0.9 * q[1:].max(axis=-1)})
    np.testing.assert_allclose(given.flat_grads, model.flat_grads, rtol=1e-10)
    assert_gradients_ok(loss_gradient_errors(given, (os[:3],), {"a": targets["a"], "y": rng.standard_normal((3, 2))}))


def test_elementwise_functions(rng):
    source = ("X: 3\nA: dense(4)\nB: dense(4)\nX --[A|exp]-> e\nX --[B|sigmoid]-> s\n"
              "e / (1 + e) * s - -s * log(1 + s) + sum(e|s) + one_hot(k) * s - max(e) -> y\ny => z")
    model = with_random_biases(compiled(source))
    assert model.targets == ["z"] and model.inputs == ["X", "k"]
    xs = (0.5 * rng.standard_normal((5, 3)), rng.integers(0, 4, 5))
    assert_gradients_ok(loss_gradient_errors(model, xs, {"z": rng.standard_normal((5, 4))}))


def test_module_contract(rng):
    model = compiled("X: 4\nM_1: dense(8)\nM_2: dense(3)\nD: dropout(0.5)\n"
                     "X --[M_1|relu|D]-> h --[M_2]-> p\nh --[M_2|tanh]-> q")
    assert model.outputs == ["p", "q"] and [n for n, *_ in model.named_params()] == ["M_1.W", "M_1.b", "M_2.W",
                                                                                     "M_2.b"]
    x = rng.standard_normal((5, 4))
    model.eval()
    p, q = model.infer(x)
    assert model.saved_count() == 0  # infer keeps nothing
    np.testing.assert_allclose(np.tanh(p), q)
    # forward k times, then backward k times in reverse: each backward pops its own forward
    model.train()
    outs = [model.forward(x * (k + 1)) for k in range(3)]
    model.zero_grad()
    for k in reversed(range(3)):
        model.backward(tuple(np.ones_like(o) for o in outs[k]))
    assert model.saved_count() == 0
    twin = model.clone()
    np.testing.assert_array_equal(twin.flat_params, model.flat_params)
    twin.eval()
    model.eval()
    np.testing.assert_array_equal(twin.infer(x)[0], model.infer(x)[0])


def test_nograd_transform_stops_gradients(rng):
    """s = nograd(B)(h) + B(h): the gradients are those of s = B(h) alone -- p passes its value, not its gradient."""
    both = compiled("X: 3\nA: dense(3)\nB: dense(2)\nX --[A|tanh]-> h --[nograd(B)]-> p\nh --[B]-> q\np + q -> s")
    alone = compiled("X: 3\nA: dense(3)\nB: dense(2)\nX --[A|tanh]-> h --[B]-> q\nq -> s")
    alone.copy_from(both)
    x, ds = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    for model in (both, alone):
        model.zero_grad()
        model.forward(x)
        model.backward(ds)
    np.testing.assert_allclose(both.flat_grads, alone.flat_grads, rtol=1e-12)
    assert np.abs(both.flat_grads).sum() > 0


def test_clip_grad_and_adam_opt(rng):
    model = compiled("X: 3\nX --[clip_grad(A: dense(4)|relu, 0.01)]-> h --[adam_opt(B: dense(2), lr=0.1)]-> p")
    model.zero_grad()
    p = model.forward(rng.standard_normal((8, 3)))
    model.backward(100 * np.ones_like(p))
    grads = {name: owner.grads[key] for name, owner, key in model.named_params()}
    assert np.sqrt(sum((g ** 2).sum() for n, g in grads.items() if n.startswith("A."))) == pytest.approx(0.01)
    assert np.sqrt(sum((g ** 2).sum() for n, g in grads.items() if n.startswith("B."))) > 1
    optimizer = model.make_optimizer(lr=1e-3)
    before = model.flat_params.copy()
    optimizer.step()
    step = np.abs(model.flat_params - before)
    b_size = 2 * 4 + 2
    assert step[-b_size:].max() == pytest.approx(0.1, rel=1e-3) and step[:-b_size].max() <= 1e-3 * 1.001
    assert set(optimizer.state_dict()) >= {"A/m", "B/v"}


# -- learning ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_td_learns_values_on_a_ring():
    """Five states in a ring, reward 1 on leaving state 4: TD(0) from the notation finds V = (I - gamma P)^-1 r."""
    model = compile_program("O: 5\nValue: dense(1, init=zeros)\n0.8 -> gamma\n"
                            "O_t --[Value]-> V_t => r_t + gamma * V_{t+1}", np.random.default_rng(0))
    optimizer = model.make_optimizer(lr=0.05)
    rng = np.random.default_rng(1)
    eye = np.eye(5, dtype=np.float32)
    for _ in range(400):
        start = rng.integers(0, 5, 16)
        states = (start[None, :] + np.arange(7)[:, None]) % 5  # (T+1, N)
        model.zero_grad()
        model.forward(eye[states])
        model.backward_loss({"r": (states[:-1] == 4).astype(np.float32)})
        optimizer.step()
    P = np.roll(np.eye(5), 1, axis=1)
    truth = np.linalg.solve(np.eye(5) - 0.8 * P, (np.arange(5) == 4).astype(float))
    learned = model.infer(eye[:, None, :])[:, 0, 0]
    np.testing.assert_allclose(learned, truth, atol=0.05)


@pytest.mark.slow
def test_a2c_learns_a_contextual_bandit():
    """One-step episodes: the context is the right arm. The A2C program (value by TD, policy by advantage
    times log-probability, gradient clipping) learns to pick it."""
    model = compile_program(A2C_FULL.replace("1000", "1.0"), np.random.default_rng(0))
    optimizer = model.make_optimizer(lr=0.01)
    rng = np.random.default_rng(1)
    eye = np.eye(2, dtype=np.float32)
    for _ in range(300):
        context = rng.integers(0, 2, 32)
        obs = np.stack([eye[context], eye[context]])  # O_1 and a (terminal) O_2
        _, pi = model.infer(obs)
        actions = (rng.random(32) < pi[0, :, 1]).astype(np.int64)
        model.zero_grad()
        model.forward(obs)
        model.backward_loss({"r": (actions == context)[None].astype(np.float32), "d": np.ones((1, 32)),
                             "a": actions[None]})
        optimizer.step()
    _, pi = model.infer(np.stack([eye, eye]))
    assert pi[0, 0, 0] > 0.9 and pi[0, 1, 1] > 0.9


# -- configs ---------------------------------------------------------------------------------------
NOTATION_MLP = ("M_1: dense(64)\nM_2: dense(32)\n"
                "X --[M_1|relu]-> h_1 --[M_2|relu]-> h_2 --[M_3|softmax]-> p => one_hot(y)")


def test_config_notation_builds_the_same_network_as_the_hand_built_mlp(rng):
    """Same layers, created in the same order from the same generator: the same weights, and -- the agent's
    loss on the logits, Adam -- the same training run, bit for bit."""
    by_hand = mlp(784, 10, ModelConfig(hidden=[64, 32]), np.random.default_rng(7))
    notation = mlp(784, 10, ModelConfig(notation=NOTATION_MLP), np.random.default_rng(7))
    np.testing.assert_array_equal(notation.flat_params, by_hand.flat_params)
    x = rng.random((5, 784)).astype(np.float32)
    # the agent's loss takes logits: the softmax of `=> one_hot(y)` is that loss, so the network returns logits
    np.testing.assert_array_equal(notation.infer(x), by_hand.infer(x))
    assert notation.backward(notation(x)) is None  # an agent never needs d/dobservations
    optimizers = [nn.Adam(net, lr=1e-3) for net in (by_hand, notation)]
    for _ in range(5):
        x, y = rng.random((32, 784)).astype(np.float32), rng.integers(0, 10, 32)
        for net, optimizer in zip((by_hand, notation), optimizers):
            _, dlogits = nn.softmax_cross_entropy(net(x), y)
            net.zero_grad()
            net.backward(dlogits)
            optimizer.step()
    np.testing.assert_array_equal(notation.flat_params, by_hand.flat_params)


def test_value_and_policy_networks_from_the_notation(rng):
    model = ModelConfig(notation="O --[Q_1: dense(64)|relu]-> h --[Q_2: dense(64)|relu]-> g --[Q_3]-> Q")
    q_net = build_model(4, 2, model, rng)
    assert q_net(rng.standard_normal((3, 4))).shape == (3, 2)
    assert [(n, owner.params[k].shape) for n, owner, k in q_net.named_params()][-2:] == [("Q_3.W", (2, 64)),
                                                                                           ("Q_3.b", (2,))]
    policy = build_model(4, 3, ModelConfig(notation="O --[P_1: dense(32)|tanh|P_2|softmax]-> pi"), rng,
                         output_gain=0.01)
    logits = policy.infer(rng.standard_normal((5, 4)))
    assert logits.shape == (5, 3) and np.abs(logits).max() < 0.1  # small output gain: a near-uniform policy
    with pytest.raises(NotationError, match="one input and one output"):
        network_from_notation("X --[A: dense(3)]-> h\nY --[B: dense(3)]-> g", 4, 3, rng)


def test_supervised_notation_config_loads():
    config, _ = load_config("supervised_mnist_notation")
    assert config.model.notation is not None
    net = build_model(784, 10, config.model, np.random.default_rng(0))
    by_hand, _ = load_config("supervised_mnist_mlp")
    hand = mlp(784, 10, by_hand.model, np.random.default_rng(0))
    np.testing.assert_array_equal(net.flat_params, hand.flat_params)


def test_config_notation_errors_are_user_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("agent: {name: supervised, epochs: 1}\nmodel:\n  notation: |\n    X --[M_1|rleu]-> p\n")
    result = subprocess.run([sys.executable, "-m", "rlscratch.train", "--config", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.notation: line 1, column 10: unknown function 'rleu' -- did you mean 'relu'?"
        " (a parameter name starts with a capital letter, e.g. M_1, or is declared: w: dense(64))"]


# -- the command line --------------------------------------------------------------------------------
def test_cli_prints_program_shapes_and_backward(tmp_path):
    path = tmp_path / "mlp.arrow"
    path.write_text("X: 784\nM_1: dense(128)\nM_2: dense(10)\n" + SOFTMAX)
    result = subprocess.run([sys.executable, "-m", "rlscratch.notation", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  M_1: dense  M_1.W (128, 784), M_1.b (128,)" in out
    assert "  M_2: dense  M_2.W (10, 128), M_2.b (10,)" in out
    assert "dL/dM_2(h_1) += (p - one_hot(y)) / N" in out
    assert "dL/dM_1(X) = dL/dh_1 * [h_1 > 0]" in out
    assert "dL/dM_1.W += dL/dM_1(X)^T X" in out
    assert explain(path.read_text()) == out
    # a size given on the command line
    path.write_text(MLP)
    out = subprocess.run([sys.executable, "-m", "rlscratch.notation", str(path), "--size", "X=3", "--size", "h_1=4",
                          "--size", "y=2"], capture_output=True, text=True).stdout
    assert "M_1.W (4, 3)" in out and "M_2.W (2, 4)" in out


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path):
    path = tmp_path / "bad.arrow"
    path.write_text("X: 784\nX --[M_1|relu-> h\n")
    result = subprocess.run([sys.executable, "-m", "rlscratch.notation", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: line 2, column 14: expected '|' or ']' to close the '--[' opened at line 2, column 3, "
        "found '->'"]
    result = subprocess.run([sys.executable, "-m", "rlscratch.notation", str(tmp_path / "missing.arrow")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


# A chain-rule step of each example, derived by hand, that its explanation must print in its backward pass.
EXPLAINED = {
    "rnn": ["dL/dh_t += dL/dp M_2.W", "dL/dM_1.W += dL/dh_t^T (X_t|h_{t-1})"],
    "gru": ["dL/dh_{t-1} += dL/d(z_t * h_{t-1}) * z_t", "dL/dz_t += -dL/d(1 - z_t)",   # h = (1 - z) n + z h'
            "dL/d(a_t + r_t * b_t) = dL/dn_t * (1 - n_t^2)"],
    "lstm": ["dL/dc_t += dL/dtanh(c_t) * (1 - tanh(c_t)^2)", "dL/dc_{t-1} += dL/d(f_t * c_{t-1}) * f_t"],
    "td": ["dL/dV_t += 2 (V_t - (V_{t-1} * gamma + r_t)) / (N K T)", "dL/dValue.W += dL/dV_t^T O_t"],
    "a2c": ["dL/d(A_t * log(pi_t)) = -1 / (N T)", "dL/dlog(pi_t) = dL/d(A_t * log(pi_t)) * A_t"],
    "gae": ["dL/dA_{t+1} += dL/d(gamma * lam * A_{t+1}) * (gamma * lam)", "dL/dd_t += -dL/d(1 - d_t)"],
    "td_gru": ["dL/dW(x_t|h_{t-1}) = dL/dh_t * (1 - h_t^2)", "dL/dh_t += dL/dV_t Value.W"],
}


@pytest.mark.parametrize("name", EXPLAINED)
def test_explain_every_example(name):
    backward = explain(EXAMPLES[name]).split("\nbackward", 1)[1]
    lines = [line.split("    (")[0].strip() for line in backward.splitlines()]  # drop the trailing remarks
    for step in EXPLAINED[name]:
        assert step in lines, step


# -- MNIST ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mnist_through_the_notation_reaches_97_percent():
    from rlscratch.data import load_mnist, scale_images

    train_images, train_labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    x, y = scale_images(train_images), train_labels.astype(np.int64)
    model = compile_program("X: 784\nM_1: dense(128)\nM_2: dense(10)\n"
                            "X --[M_1|relu]-> h --[M_2|softmax]-> p => one_hot(y)", np.random.default_rng(0))
    optimizer = model.make_optimizer(lr=2e-3)
    model.input_grad = False  # the images are data: skip dL/dX
    rng = np.random.default_rng(1)
    for _ in range(3):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 128):
            batch = order[i:i + 128]
            model.zero_grad()
            model.forward(x[batch])
            model.backward_loss({"y": y[batch]})
            optimizer.step()
    accuracy = (model.infer(scale_images(test_images)).argmax(axis=1) == test_labels).mean()
    assert accuracy >= 0.97, accuracy
