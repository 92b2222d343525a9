"""EfficientZero's conv networks (rlscratch.muzero.conv_model): the whole unrolled loss -- with the
value prefix and the consistency term -- against central differences in float64, the search-time
calls equal to the training path, and the agent built on MinAtar-shaped observations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import with_optim
from rlscratch.agents.muzero import MuZero, MuZeroConfig
from test_efficientzero_losses import assert_close_gradients

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step
from rlscratch.config import ModelConfig
from rlscratch.errors import ConfigError
from rlscratch.muzero.conv_model import ConvMuZeroNet
from rlscratch.muzero.loss import UnrollBatch, unrolled_loss
from rlscratch.muzero.support import logits_to_scalar

OBS_SHAPE = (4, 4, 2)   # (H, W, C) as MinAtar gives it


def conv_net(rng, prefix: bool = True, consistency: bool = True, norm: str = "none") -> ConvMuZeroNet:
    net = ConvMuZeroNet(OBS_SHAPE, 3, rng, channels=2, blocks=1, reduced_channels=1, head_hidden=3,
                        value_support=2, reward_support=1, value_prefix_hidden=2 if prefix else 0, lstm_horizon=2,
                        consistency=(3, 2) if consistency else None, block_norm=norm).astype(np.float64)
    net.flat_params[:] = rng.standard_normal(net.flat_params.size) * 0.4
    return net


def conv_batch(rng, n=2, K=3, A=3) -> UnrollBatch:
    obs_dim = int(np.prod(OBS_SHAPE))
    return UnrollBatch(
        obs=(rng.random((n, obs_dim)) < 0.4) * 1.0, actions=rng.integers(0, A, (n, K)),
        target_policy=rng.dirichlet(np.ones(A), (n, K + 1)), policy_mask=np.ones((n, K + 1)),
        target_value=rng.uniform(-3, 3, (n, K + 1)), value_mask=np.ones((n, K + 1)),
        target_reward=rng.uniform(-1, 1, (n, K + 1)), reward_mask=np.ones((n, K + 1)),
        weights=rng.uniform(0.5, 1.5, n), target_obs=(rng.random((n, K, obs_dim)) < 0.4) * 1.0,
        consistency_mask=np.array([[1.0, 1, 1, 0], [1, 1, 1, 1]])[:n, :K + 1])


@pytest.mark.parametrize("prefix,norm", [(True, "none"), (False, "none"), (True, "layer"), (True, "batch")])
def test_conv_unrolled_loss_gradient_check(rng, prefix, norm):
    """K = 2, horizon 2 (BPTT across a reset is checked on the MLP model, test_efficientzero_losses).
    With a norm in the blocks and after the stems (``block_norm``); a batch norm normalises each of the
    K + 1 training calls by its own batch's statistics, a function of every sample of the call, which
    the central differences see too."""
    net = conv_net(rng, prefix=prefix, norm=norm)
    batch = conv_batch(rng, K=2)
    net.zero_grad()
    result = unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, consistency_coef=2.0)
    analytic = net.flat_grads.copy()
    assert net.saved_count() == 0

    def loss() -> float:
        return unrolled_loss(net, batch, value_coef=0.25, state_grad_scale=0.5, backward=False,
                             detached_states=result.states, consistency_coef=2.0,
                             consistency_targets=result.consistency_targets).loss

    assert loss() == pytest.approx(result.loss, rel=1e-12)
    assert_close_gradients(analytic, nn.numerical_gradient(loss, net.flat_params, h=1e-5))


def random_running_statistics(net, rng) -> None:
    """Running statistics far from a fresh BatchNorm's (0, 1), so a test tells them from the batch's."""
    for _, module in net.modules():
        if isinstance(module, nn.BatchNorm):
            module.buffers["running_mean"][:] = rng.standard_normal(module.buffers["running_mean"].shape)
            module.buffers["running_var"][:] = rng.uniform(0.5, 2.0, module.buffers["running_var"].shape)


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_conv_inference_matches_training_path(rng, norm):
    """Without a value prefix the search's calls compute the training path's state, reward, policy
    and value; the observation is read channels-last ((H, W, C) flattened) as MinAtar stores it. With
    a batch norm the search uses the running statistics: the training path in eval mode."""
    net = conv_net(rng, prefix=False, consistency=False, norm=norm)
    if norm == "batch":
        random_running_statistics(net, rng)
        net.eval()
    obs, actions = conv_batch(rng).obs, np.array([0, 2])
    state, logits, value = net.initial_inference(obs)
    board = obs.reshape(2, *OBS_SHAPE).transpose(0, 3, 1, 2)
    assert np.array_equal(net.image(obs), board)
    train_state = net.represent(obs)
    train_logits, value_logits = net.predict(train_state)
    assert np.allclose(state, train_state) and np.allclose(logits, train_logits)
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support))
    assert state.shape == (2, 2, 4, 4)
    assert np.allclose(state.reshape(2, -1).min(axis=1), 0) and np.allclose(state.reshape(2, -1).max(axis=1), 1,
                                                                            atol=1e-4)
    next_state, reward, logits, value = net.recurrent_inference(state, actions)
    train_next, reward_logits = net.dynamics(train_state, actions)
    train_logits, value_logits = net.predict(train_next)
    net.clear_saved()
    assert np.allclose(next_state, train_next)
    assert np.allclose(reward, logits_to_scalar(reward_logits, net.reward_support))
    assert np.allclose(logits, train_logits)
    assert np.allclose(value, logits_to_scalar(value_logits, net.value_support))


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_block_norm_in_training_and_search(rng, norm):
    """A layer norm computes each sample alone: a sample's training state is the same in any batch
    and equals the search's. A batch norm couples a training call's samples (batch statistics) but not
    the search's (running statistics), and each training call moves the running statistics."""
    net = conv_net(rng, prefix=False, consistency=False, norm=norm)
    obs = conv_batch(rng, n=3).obs
    norms = [m for _, m in net.modules() if isinstance(m, (nn.BatchNorm, nn.LayerNorm2d))]
    assert len(norms) == 6   # after the representation's and the dynamics' stems, two in each block
    before = net.state_dict()
    together, alone = net.represent(obs), net.represent(obs[:1])
    net.clear_saved()
    searched, searched_alone = net.infer_represent(obs), net.infer_represent(obs[:1])
    np.testing.assert_allclose(searched[:1], searched_alone, rtol=1e-12, atol=1e-12)
    moved = [k for k, v in net.state_dict().items() if not np.array_equal(v, before[k])]
    if norm == "layer":
        np.testing.assert_allclose(together[:1], alone, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(together, searched, rtol=1e-12, atol=1e-12)
        assert moved == []
        np.testing.assert_array_equal(net.represent_target(obs), searched)
    else:
        assert not np.allclose(together[:1], alone)
        assert sorted(moved) == sorted(f"representation.layers.{k}" for k in (
            "1.running_mean", "1.running_var", "3.norm1.running_mean", "3.norm1.running_var",
            "3.norm2.running_mean", "3.norm2.running_var"))
        # the consistency target branch: the batch's statistics, nothing kept for a backward
        target = net.represent_target(obs)
        assert net.saved_count() == 0
        np.testing.assert_allclose(target, together, rtol=1e-12, atol=1e-12)
        assert not np.allclose(target, net.infer_represent(obs))


def test_unknown_block_norm(rng):
    with pytest.raises(ValueError, match="block_norm must be one of none, layer, batch"):
        conv_net(rng, norm="group")


def minatar_spec(num_envs: int = 2) -> EnvSpec:
    return EnvSpec(gym.spaces.Box(0, 1, OBS_SHAPE, bool), gym.spaces.Discrete(3), num_envs=num_envs)


def test_conv_agent_acts_and_trains():
    """The conv network with every EfficientZero switch on, through act, observe and updates."""
    settings = dict(network="conv", conv_channels=3, reduced_channels=2, head_hidden=4, num_simulations=4,
                    value_support=3, reward_support=1, unroll_steps=2, td_steps=2, batch_size=4, warmup_steps=4,
                    replay_capacity=64, consistency_coef=2.0, value_prefix=True, lstm_hidden=3, lstm_horizon=2,
                    offpolicy_age_unit=4, reanalyze_fraction=0.5, reanalyze_network="target", reanalyze_noise=True,
                    value_target="target", target_update_interval=2, search_value_age=4)
    agent = MuZero(MuZeroConfig(**with_optim(settings)), minatar_spec(), ModelConfig(hidden=[8]),
                   np.random.default_rng(0))
    assert agent.replay.obs.dtype == np.bool_
    rng = np.random.default_rng(1)

    metrics = {}
    for t in range(8):
        obs = rng.random((2, *OBS_SHAPE)) < 0.3
        action = agent.act(obs)
        assert action.shape == (2,) and set(action) <= {0, 1, 2}
        metrics = agent.observe(Step(obs=obs, action=action, reward=np.array([1.0, 0.0]),
                                     next_obs=rng.random((2, *OBS_SHAPE)) < 0.3,
                                     terminated=np.array([t == 5, False]), truncated=np.zeros(2, bool), info={}))
    assert agent.updates > 0 and np.isfinite(metrics["loss/total"]) and "loss/consistency" in metrics
    assert agent.act(rng.random((3, *OBS_SHAPE)) < 0.3, explore=False).shape == (3,)


def test_conv_needs_images():
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2))
    with pytest.raises(ConfigError, match=r"^agent\.network: conv needs image observations"):
        MuZero(MuZeroConfig(**with_optim({"network": "conv"})), spec, ModelConfig(), np.random.default_rng(0))
