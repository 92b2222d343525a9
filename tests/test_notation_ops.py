"""Each op of the notation is defined once (rlscratch/notation/ops.py): the elementwise layers run their
own formulas (finite differences in float64 and hand-computed values here), and the formulas written
for the core's layers (Linear, the activations) are evaluated and checked against those layers'
hand-written forward and backward, so the printed maths cannot drift from what runs."""

from __future__ import annotations

import numpy as np
import pytest

from rlscratch import nn
from rlscratch.nn import elementwise as ew
from rlscratch.nn.formula import compile_formula, python, render
from rlscratch.notation import explain
from rlscratch.notation.ops import ACTIVATIONS, BINARY, ELEMENTWISE, PARAM_LAYERS, SHAPING

TOL = 1e-6


@pytest.mark.parametrize("layer, shapes", [
    (ew.Add, [(3, 4), (3, 1)]), (ew.Sub, [(3, 1), (3, 4)]), (ew.Mul, [(3, 4), (3, 4)]), (ew.Mul, [(3, 1), (3, 4)]),
    (ew.Div, [(3, 4), (3, 1)]), (ew.Negate, [(3, 4)]), (ew.Exp, [(3, 4)]), (ew.Log, [(3, 4)]),
    (ew.RowSum, [(3, 4)]), (ew.RowMax, [(3, 4)]), (ew.Identity, [(2, 5)]),
])
def test_elementwise_layers_pass_gradient_checks(layer, shapes):
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0.5, 2.0, shape) for shape in shapes]  # positive: log and / are defined
    errors = nn.check_module(layer(), *inputs, rng=rng)
    assert len(errors) == len(shapes) and max(errors.values()) <= TOL, errors


def test_pick_entry_gradient_and_labels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    index = np.array([2, 0, 1, 2])
    layer = ew.PickEntry()
    upstream = rng.standard_normal((4, 1))
    layer.forward(x, index)
    dx, d_index = layer.backward(upstream)
    errors = nn.check_gradients(lambda: float(np.sum(upstream * layer.infer(x, index))), {"x": (x, dx)})
    assert errors["x"] <= TOL and d_index is None
    np.testing.assert_array_equal(layer.forward(x, index)[:, 0], x[np.arange(4), index])
    dx, d_index = layer.backward(np.ones((4, 1)))
    assert d_index is None and dx.sum() == 4 and np.all(dx[np.arange(4), index] == 1)


def test_hand_computed_gradients_notice_a_changed_formula():
    """a = 6, b = 2, dL/dy = 1: y = a / b = 3, dL/da = 1/2, dL/db = -a/b^2 = -1.5. A broadcast (N, 1) operand
    sums its gradient over the features; y = max(1, 5, 2) sends its gradient to the 5 only."""
    div = ew.Div()
    assert div.forward(np.array([[6.0]]), np.array([[2.0]]))[0, 0] == 3.0
    da, db = div.backward(np.array([[1.0]]))
    assert (da[0, 0], db[0, 0]) == (0.5, -1.5)
    add = ew.Add()
    add.forward(np.ones((2, 3)), np.ones((2, 1)))
    da, db = add.backward(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(db, [[3.0], [12.0]])
    top = ew.RowMax()
    top.forward(np.array([[1.0, 5.0, 2.0]]))
    np.testing.assert_array_equal(top.backward(np.array([[7.0]])), [[0.0, 7.0, 0.0]])
    sub = ew.Sub()
    sub.forward(np.ones((1, 1)), 2.0)  # a plain number takes no gradient
    assert sub.backward(np.ones((1, 1)))[1] is None
    # integer data (a done flag) enters arithmetic as a float column: 1 - d is (N, 1), not (N, N)
    assert ew.Sub().infer(1.0, np.array([0, 1, 1])).shape == (3, 1)


def test_elementwise_definitions_are_read_off_the_layers():
    """The printed formulas of + - * / exp log ... are the strings the layers run: nothing written twice."""
    for table, layers in ((BINARY, {"+": ew.Add, "-": ew.Sub, "*": ew.Mul, "/": ew.Div}),
                          (ELEMENTWISE, {"exp": ew.Exp, "log": ew.Log, "sum": ew.RowSum, "max": ew.RowMax,
                                         "pick": ew.PickEntry, "neg": ew.Negate})):
        for name, layer in layers.items():
            assert table[name].make is layer
            assert dict(table[name].backward) == layer.backward_formulas
            assert table[name].forward == layer.forward_formula


CORE = [("relu", nn.ReLU()), ("sigmoid", nn.Sigmoid()), ("tanh", nn.Tanh()), ("softmax", nn.Softmax()),
        ("log_softmax", nn.LogSoftmax()), ("elu", nn.ELU(0.7)), ("leaky_relu", nn.LeakyReLU(0.05))]


@pytest.mark.parametrize("name, module", CORE)
def test_activation_formulas_equal_the_core_layers(name, module):
    definition = ACTIVATIONS[name]
    assert isinstance(module, definition.make)
    rng = np.random.default_rng(2)
    x, gy = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    constants = [getattr(module, c) for c in definition.constants]
    y = compile_formula(definition.forward, ("x", *definition.constants))(x, *constants)
    np.testing.assert_allclose(y, module.forward(x), rtol=1e-12, atol=1e-12)
    dx = compile_formula(definition.backward["x"], ("x", "y", "gy", *definition.constants))(x, y, gy, *constants)
    np.testing.assert_allclose(dx, module.backward(gy), rtol=1e-12, atol=1e-12)


def test_dense_formulas_equal_linear():
    definition = PARAM_LAYERS["dense"]
    rng = np.random.default_rng(3)
    layer = nn.Linear(4, 3, rng, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(3)
    x, gy = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    env = {"x": x, "W": layer.params["W"], "b": layer.params["b"], "gy": gy}

    def run(formula: str) -> np.ndarray:
        return compile_formula(formula, tuple(env))(*env.values())

    np.testing.assert_allclose(run(definition.forward), layer.forward(x), rtol=1e-12)
    dx = layer.backward(gy)
    np.testing.assert_allclose(run(definition.backward["x"]), dx, rtol=1e-12)
    np.testing.assert_allclose(run(definition.backward["W"]), layer.grads["W"], rtol=1e-12)
    np.testing.assert_allclose(run(definition.backward["b"]), layer.grads["b"], rtol=1e-12)


def test_formulas_print_as_maths_and_as_numpy():
    names = {"gy": "dL/dh", "y": "h", "x": "M(X)", "W": "M.W", "a": "(a + b)", "b": "c"}
    assert render("gy * (y > 0)", names) == "dL/dh * [h > 0]"
    assert render("gy * (1 - y ** 2)", names) == "dL/dh * (1 - h^2)"
    assert render("gy.T @ x", names) == "dL/dh^T M(X)"
    assert render("-gy * a / b ** 2", names) == "-dL/dh * (a + b) / c^2"
    assert render("gy * where(x > 0, 1, y + 2)", names) == "dL/dh * (1 if M(X) > 0 else h + 2)"
    assert render("a - (b - c)", {}) == "a - (b - c)" and render("(a - b) - c", {}) == "a - b - c"
    assert python("gy * exp(y)") == "gy * np.exp(y)"


def test_explanation_prints_the_definitions():
    text = explain("X: 3\nM: dense(2)\nX --[M|tanh]-> h\nh / exp(h) - sum(h) -> z\n")
    assert "M(X) = X M.W^T + M.b" in text
    assert "dL/dM(X) = dL/dh * (1 - h^2)" in text
    assert "dL/dexp(h) = -dL/d(h / exp(h)) * h / exp(h)^2" in text
    assert "dL/dh += dL/dexp(h) * exp(h)" in text
    assert "dL/dh += dL/dsum(h)    (copied to every feature)" in text
    assert "dL/dM.W += dL/dM(X)^T X" in text


def test_every_printed_layer_has_a_module_and_printed_only_ones_say_so():
    for table in (BINARY, ELEMENTWISE, ACTIVATIONS, PARAM_LAYERS, SHAPING):
        for definition in table.values():
            assert definition.backward, definition.name
    assert not PARAM_LAYERS["conv"].runnable and not PARAM_LAYERS["batch_norm"].runnable
    assert PARAM_LAYERS["dense"].runnable and all(d.runnable for d in ACTIVATIONS.values())
