"""conv, batch_norm, max_pool, flatten and reshape in the notation: finite differences of compiled CNNs
(float64), the config's CNN against the hand-built one, batch statistics in training and running ones
in evaluation, and the errors that name the fix."""

from __future__ import annotations

import numpy as np
import pytest

from rlscratch import nn
from rlscratch.config import load_config
from rlscratch.models import build_model
from rlscratch.notation import NotationError, compile_program, explain

TOL = 1e-6

CNN = """X: 36
C_1: conv(3, 3, padding=1)
C_2: conv(4, 2, stride=2)
X --[reshape(1, 6, 6)]-> image --[C_1|relu|max_pool(2)]-> h_1 --[C_2|flatten|M: dense(5)|softmax]-> p => one_hot(y)
"""
# batch_norm after a bias-free conv and dense layer (a bias before it would be cancelled by its mean)
NORMED = """X: 36
C: conv(3, 3, bias=false)
B_1, B_2: batch_norm
X --[reshape(1, 6, 6)|C|B_1|tanh|flatten|M: dense(4, bias=false)|B_2|sigmoid]-> p
"""


def test_cnn_program_passes_a_gradient_check():
    model = compile_program(CNN, np.random.default_rng(0), dtype=np.float64)
    assert [(n, o.params[k].shape) for n, o, k in model.named_params()] == [
        ("C_1.W", (3, 1, 3, 3)), ("C_1.b", (3,)), ("C_2.W", (4, 3, 2, 2)), ("C_2.b", (4,)), ("M.W", (5, 4)),
        ("M.b", (5,))]
    rng = np.random.default_rng(1)
    for _, owner, key in model.named_params():  # non-zero biases: their gradients are checked too
        owner.params[key][...] += 0.1 * rng.standard_normal(owner.params[key].shape)
    x, y = rng.standard_normal((4, 36)), np.array([0, 4, 2, 1])
    model.zero_grad()
    model.forward(x)
    model.backward_loss({"y": y})
    wrt = {name: (owner.params[key], owner.grads[key].copy()) for name, owner, key in model.named_params()}
    errors = nn.check_gradients(lambda: model.loss(x, targets={"y": y}), wrt)
    assert max(errors.values()) <= TOL, errors


def test_batch_norm_program_passes_a_gradient_check_with_batch_statistics():
    model = compile_program(NORMED, np.random.default_rng(0), dtype=np.float64)
    names = [n for n, _, _ in model.named_params()]
    assert names == ["C.W", "B_1.gamma", "B_1.beta", "M.W", "B_2.gamma", "B_2.beta"]
    rng = np.random.default_rng(2)
    for _, owner, key in model.named_params():
        owner.params[key][...] += 0.2 * rng.standard_normal(owner.params[key].shape)
    # h = 1e-5: at 1e-6 roundoff through two normalisations reaches ~2e-6 of the smallest input gradients
    errors = nn.check_module(model, rng.standard_normal((8, 36)), rng=rng, h=1e-5)
    assert set(errors) == {"input0", *names} and max(errors.values()) <= TOL, errors


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_after():
    model = compile_program("X: 3\nB: batch_norm\nX --[B]-> p", np.random.default_rng(0), dtype=np.float64)
    x = np.array([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]])
    out = model.forward(x)
    model.clear_saved()
    np.testing.assert_allclose(out, [[-1, -1, -1], [1, 1, 1]], atol=1e-4)  # standardised per feature
    running = model.analysis.params["B"].module.buffers["running_mean"]
    np.testing.assert_allclose(running, 0.1 * np.array([2.0, 4.0, 6.0]))  # momentum 0.1 towards the batch mean
    model.eval()
    np.testing.assert_allclose(model.forward(x), model.infer(x))
    model.clear_saved()


def test_config_cnn_is_the_hand_built_cnn():
    from rlscratch.agents.supervised import SupervisedConfig, cnn

    config, _ = load_config("supervised_mnist_cnn_notation")
    net = build_model(784, 10, config.model, np.random.default_rng(0))
    hand_config, _ = load_config("supervised_mnist_cnn")
    agent = {k: v for k, v in hand_config.agent.items() if k != "name"}
    hand = cnn(SupervisedConfig(**agent), np.random.default_rng(0))
    np.testing.assert_array_equal(net.flat_params, hand.flat_params)
    x = np.random.default_rng(1).random((3, 784)).astype(np.float32)
    np.testing.assert_allclose(net.infer(x), hand.infer(x.reshape(3, 1, 28, 28)), rtol=1e-5, atol=1e-6)


def test_explanation_shows_image_shapes_and_conv_lines():
    text = explain(CNN)
    assert "C_1: conv  C_1.W (3, 1, 3, 3), C_1.b (3,)" in text
    assert "image = reshape(1, 6, 6)(X)" in text
    assert "C_1(image) = conv(image, C_1.W) + C_1.b" in text
    assert "dL/dC_1.W += correlate(image, dL/dC_1(image))" in text
    assert "B_1: batch_norm  B_1.gamma (3,), B_1.beta (3,)" in explain(NORMED)


@pytest.mark.parametrize("source, message", [
    ("X: 4\nC: conv(2, 3)\nX --[reshape(1, 2, 2)|C]-> h", "C: a 3x3 kernel does not fit"),
    ("X: 4\nX --[max_pool(2)]-> h", "max_pool reads images shaped (C, H, W), but X has 4 features"),
    ("X: 5\nX --[reshape(1, 2, 2)]-> h", "cannot reshape X (5 values) to (1, 2, 2)"),
    ("X: 4\nX --[batch_norm]-> h", "name the parameter and give its size: --[B_1: batch_norm]->"),
    ("X: 4\nC: conv(2)\nX --[C]-> h", "conv takes conv(channels, kernel, stride=1, padding=0"),
    ("X: 4\nX --[reshape(1, 2, 2)|M: dense(3)]-> h", "M is a dense layer and reads reshape(1, 2, 2)(X)"),
])
def test_image_errors_name_the_fix(source, message):
    with pytest.raises(NotationError) as info:
        compile_program(source, np.random.default_rng(0))
    assert message in str(info.value)
