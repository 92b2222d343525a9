"""Generated code (python -m rlscratch.notation emit): a standalone numpy module whose loss and gradients
equal the compiled model's (float64, to 1e-6), pass finite differences, import numpy only, and train."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest

from rlscratch import nn
from rlscratch.notation import NotationError, compile_program
from rlscratch.notation.emit import emit

TOL = 1e-6

GRU_BODY = """GRU: x_t, h_{t-1}
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
PROGRAMS = {
    "softmax_mlp": ("X: 5\nM_1: dense(8)\nM_2: dense(3)\nX --[M_1|relu]-> h --[M_2|softmax]-> p => one_hot(y)",
                    "flat", "labels"),
    "mse_mlp": ("X: 5\nM_1: dense(6)\nM_2: dense(2)\nX --[M_1|tanh]-> h --[M_2|sigmoid]-> p => y", "flat", "values"),
    "elementwise": ("X: 5\nM: dense(4)\nX --[M]-> h\nh / (1 + exp(-h)) - 0.5 * sum(h) -> z\nz => y", "flat", "values"),
    "rnn": ("X: 5\nh: 4\ny: 2\n0 -> h_0\nX_t|h_{t-1} --[M_1]-> h_t --[M_2]-> p => y_t", "sequence", "values"),
    "gru": ("X: 5\nW_r, W_z, W_xn, W_hn: dense(4)\nV: dense(2)\n" + GRU_BODY + "h_t --[V]-> p => y_t", "sequence",
            "values"),
    "last_state": ("X: 5\nh: 4\nV: dense(3)\n0 -> h_0\nX_t|h_{t-1} --[M|tanh]-> h_t\nh_T --[V|softmax]-> p "
                   "=> one_hot(y)", "sequence", "labels"),
}


def load(code: str, tmp_path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.DTYPE = np.float64
    return module


def batch(layout: str, kind: str, rng: np.random.Generator, outputs: int):
    x = rng.standard_normal((4, 6, 5) if layout == "sequence" else (6, 5))
    if kind == "labels":
        return x, rng.integers(0, outputs, 6)
    return x, rng.standard_normal((4, 6, outputs) if layout == "sequence" else (6, outputs))


def compiled_and_emitted(name: str, tmp_path):
    source, layout, kind = PROGRAMS[name]
    model = compile_program(source, np.random.default_rng(0), dtype=np.float64)
    rng = np.random.default_rng(1)
    for _, owner, key in model.named_params():  # non-zero biases, so their gradients are checked
        owner.params[key][...] += 0.2 * rng.standard_normal(owner.params[key].shape)
    module = load(emit(source), tmp_path, name)
    n_out = [s for k, s in module.PARAMETERS.items() if k.endswith(".W")][-1][0]
    x, y = batch(layout, kind, rng, n_out)
    return model, module, x, y


@pytest.mark.parametrize("name", PROGRAMS)
def test_emitted_module_equals_the_compiled_model(name, tmp_path):
    model, module, x, y = compiled_and_emitted(name, tmp_path)
    params = {k: v.copy() for k, v in model.state_dict().items()}
    assert list(params) == list(module.PARAMETERS)
    model.zero_grad()
    out = model.forward(x)
    loss = model.backward_loss({"y": y})
    (emitted_out,), _ = module.forward(params, x)
    emitted_loss, grads = module.loss_and_gradients(params, x, y)
    np.testing.assert_allclose(emitted_out, out, rtol=TOL, atol=TOL)
    assert abs(emitted_loss - loss) <= TOL
    for qualified, owner, key in model.named_params():
        np.testing.assert_allclose(grads[qualified], owner.grads[key], rtol=TOL, atol=TOL, err_msg=qualified)


@pytest.mark.parametrize("name", ["softmax_mlp", "elementwise", "gru", "last_state"])
def test_emitted_gradients_pass_finite_differences(name, tmp_path):
    model, module, x, y = compiled_and_emitted(name, tmp_path)
    params = {k: v.copy() for k, v in model.state_dict().items()}
    _, grads = module.loss_and_gradients(params, x, y)
    errors = nn.check_gradients(lambda: module.loss_and_gradients(params, x, y)[0],
                                {k: (params[k], grads[k]) for k in params}, h=1e-5)
    assert max(errors.values()) <= TOL, errors


def test_emitted_module_imports_numpy_only():
    code = emit(PROGRAMS["gru"][0])
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"numpy"}
    assert "        # dL/dW_r.W += dL/dW_r(x_t|h_{t-1})^T (x_t|h_{t-1})" in code  # and the backward lines
    assert "    # W_r(x_t|h_{t-1}) = (x_t|h_{t-1}) W_r.W^T + W_r.b" in code  # the printed line above its code


def test_emitted_module_trains(tmp_path):
    """Plain gradient descent on the generated code learns XOR of the signs (random guessing: 50%)."""
    module = load(emit("X: 2\nM_1: dense(16)\nM_2: dense(2)\nX --[M_1|tanh]-> h --[M_2|softmax]-> p => one_hot(y)"),
                  tmp_path, "xor")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (256, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    params = {k: v.astype(np.float64) for k, v in module.init_params(0).items()}
    for _ in range(1500):
        _, grads = module.loss_and_gradients(params, x, y)
        for key in params:
            params[key] -= 0.5 * grads[key]
    (p,), _ = module.forward(params, x)
    assert (p.argmax(axis=1) == y).mean() >= 0.9


def test_cli_writes_an_importable_module_and_refuses_what_it_cannot_emit(tmp_path):
    source = tmp_path / "gru.arrow"
    source.write_text(PROGRAMS["gru"][0])
    out = tmp_path / "gru_model.py"
    result = subprocess.run([sys.executable, "-m", "rlscratch.notation", "emit", str(source), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    module = load(out.read_text(), tmp_path, "gru_model")
    assert module.INPUTS == ["X"] and module.TARGETS == ["y"]
    bad = tmp_path / "cnn.arrow"
    bad.write_text("X: 16\nC: conv(2, 3)\nX --[reshape(1, 4, 4)|C|flatten|M: dense(2)]-> p => y")
    result = subprocess.run([sys.executable, "-m", "rlscratch.notation", "emit", str(bad)], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: line 3, column 23: emit does not generate 'conv' yet (it runs only as the core's module)"]


def test_emit_refuses_objectives_and_backward_recurrences():
    with pytest.raises(NotationError, match=r"emit writes '=>' losses only"):
        emit("O: 3\nPolicy: dense(2)\nO_t --[Policy|softmax]-> pi_t $ A_t * log(pi_t[a_t])")
    with pytest.raises(NotationError, match="forward in time only; A_{t\\+1} looks ahead"):
        emit("TD: 1\nTD_t + 0.9 * A_{t+1} -> A_t\n0 -> A_{T+1}")


@pytest.mark.parametrize("keep_every", [1, 4, 7, 40])
def test_checkpointing_recomputes_to_the_same_gradients_keeping_only_every_kth_state(keep_every, tmp_path):
    """keep_every=k: forward keeps h_0, h_k, h_2k, ... (and the last) and no intermediate of any step;
    backward recomputes each segment from its kept state. The gradients are exactly the full cache's."""
    module = load(emit(PROGRAMS["gru"][0]), tmp_path, f"gru_keep{keep_every}")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((23, 6, 5)), rng.standard_normal((23, 6, 2))
    params = {k: v.astype(np.float64) for k, v in module.init_params(0).items()}
    full_loss, full = module.loss_and_gradients(params, x, y)
    loss, grads = module.loss_and_gradients(params, x, y, keep_every=keep_every)
    assert loss == full_loss
    for key in full:
        np.testing.assert_array_equal(grads[key], full[key])
    _, cache = module.forward(params, x, keep_every=keep_every)
    assert sorted(cache["h"]) == sorted({t for t in range(0, 24, keep_every)} | {23})
    assert all(len(cache[name]) == 0 for name in cache if re.fullmatch(r"v\d+", name))
    _, cache = module.forward(params, x)
    assert sorted(cache["h"]) == list(range(24))
