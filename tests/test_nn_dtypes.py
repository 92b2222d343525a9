"""A float32 network computes in float32 throughout, whatever dtype its inputs, targets and
hyperparameters arrive in; and the first layer may skip the gradient with respect to the data."""

import numpy as np
import pytest

import rlscratch.nn as nn


def mlp(rng, *sizes):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out, rng), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.LeakyReLU(np.float64(0.1)), nn.ELU(np.float64(1.0)),
                                        nn.Sigmoid(), nn.Tanh(), nn.Softmax(), nn.LogSoftmax()])
def test_activations_keep_float32(rng, activation):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = activation(x)
    assert y.dtype == activation.infer(x).dtype == activation.backward(np.ones_like(y)).dtype == np.float32


def test_float64_data_into_a_float32_network(rng):
    net = mlp(rng, 4, 8, 3)
    x = rng.standard_normal((5, 4))  # float64, as many environments return observations
    y = net(x)
    assert y.dtype == net.infer(x).dtype == np.float32
    dx = net.backward(rng.standard_normal(y.shape))  # float64 gradient (float64 advantages, say)
    assert dx.dtype == np.float32


@pytest.mark.parametrize("loss", [nn.mse, nn.huber])
def test_float64_targets_give_float32_gradients(rng, loss):
    pred = rng.standard_normal((6, 2)).astype(np.float32)
    target = rng.standard_normal((6, 2))
    _, grad = loss(pred, target, weights=rng.uniform(size=6), mask=np.array([1, 0, 1, 1, 1, 0]))
    assert grad.dtype == np.float32
    _, grad = nn.softmax_cross_entropy(pred, rng.dirichlet(np.ones(2), size=6))
    assert grad.dtype == np.float32


def test_numpy_scalar_hyperparameters_keep_float32(rng):
    net = mlp(rng, 3, 4, 2)
    reference = net.clone()
    opt = nn.Adam(net, lr=np.float64(1e-2), betas=(np.float64(0.9), np.float64(0.999)))
    opt_ref = nn.Adam(reference, lr=1e-2)
    for model, optimizer in ((net, opt), (reference, opt_ref)):
        model.flat_grads[:] = np.linspace(-1, 1, model.flat_grads.size)
        optimizer.step()
    assert type(opt.beta1) is float
    assert opt.m.dtype == opt.v.dtype == net.flat_params.dtype == np.float32
    assert np.array_equal(net.flat_params, reference.flat_params)
    net.copy_from(reference, tau=np.float64(0.5))
    assert net.flat_params.dtype == np.float32


def test_first_layer_can_skip_the_input_gradient(rng):
    net = mlp(rng, 4, 8, 3)
    twin = net.clone()
    twin.layers[0].input_grad = False
    x = rng.standard_normal((5, 4)).astype(np.float32)
    dy = rng.standard_normal((5, 3)).astype(np.float32)
    net(x)
    assert net.backward(dy) is not None
    twin(x)
    assert twin.backward(dy) is None
    assert np.array_equal(net.flat_grads, twin.flat_grads)
    assert twin.saved_count() == 0
