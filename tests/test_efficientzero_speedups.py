"""What issue 15's speed work on EfficientZero's MinAtar update must keep: Winograd's cached weight
transform follows weights written in place, and the target network's values on only the bootstrap
rows equal those on every row (in float64; in float32 BLAS rounds a row by how many rows share the
product, so a long run's bits change -- the maths does not).

(The speed-ups were checked bit for bit against the code before them on the development machine by
hashing a short seeded run; such hashes depend on the numpy/BLAS build and CPU, so they are not a test.)"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import with_optim
from rlscratch.agents.muzero import MuZero, MuZeroConfig

from rlscratch.agent import EnvSpec
from rlscratch.config import ModelConfig

OBS_SHAPE = (10, 10, 4)   # MinAtar Breakout's boards


def conv_agent(block_norm: str, gumbel: bool) -> MuZero:
    settings = dict(network="conv", conv_channels=8, reduced_channels=2, head_hidden=6, num_simulations=5,
                    gumbel=gumbel, value_support=4, reward_support=2, unroll_steps=3, td_steps=3, batch_size=8,
                    warmup_steps=24, train_ratio=0.5, replay_capacity=200, consistency_coef=2.0,
                    consistency_hidden=7, consistency_dim=5, value_prefix=True, lstm_hidden=5, lstm_horizon=2,
                    offpolicy_age_unit=12, reanalyze_fraction=0.5, reanalyze_network="target",
                    reanalyze_noise=True, value_target="target", target_update_interval=3, search_value_age=30,
                    block_norm=block_norm, augmentation=["shift", "intensity"], priority_alpha=0.6,
                    temperature_schedule=[[0, 1.0], [40, 0.5]])
    spec = EnvSpec(gym.spaces.Box(0, 1, OBS_SHAPE, bool), gym.spaces.Discrete(3), num_envs=4)
    return MuZero(MuZeroConfig(**with_optim(settings)), spec, ModelConfig(hidden=[8]), np.random.default_rng(0))


def test_winograd_inference_follows_weights_changed_in_place():
    """infer reuses U^T while W holds the same bytes; an optimizer step (or a target-network copy)
    writes W in place, and the next infer must use the new weights."""
    from rlscratch.nn.winograd import WinogradConv3x3

    rng = np.random.default_rng(0)
    conv = WinogradConv3x3(3, 4, rng)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    before = conv.infer(x)
    np.testing.assert_array_equal(before, conv._conv(x, conv._weights_t())[1])
    conv.params["W"][0, 1, 2, 0] += 0.5   # in place, as the optimizer writes the flat buffer
    after = conv.infer(x)
    np.testing.assert_array_equal(after, conv._conv(x, conv._weights_t())[1])
    assert not np.array_equal(before[:, 0], after[:, 0]) and np.array_equal(before[:, 1:], after[:, 1:])


@pytest.mark.parametrize("block_norm", ["none", "batch"])
def test_target_values_at_the_bootstrap_rows_equal_those_of_all_rows_in_float64(block_norm):
    """The one speed-up that is not bit-identical in float32: the target network runs on the rows the
    n-step sums read, not also on the policy rows. Each row's value is the same function of that row
    alone (a batch norm uses its running statistics there), but in float32 BLAS rounds a row's sums
    differently with the number of rows in the product (measured: values differ by ~1e-5 relative),
    so a training run's bits change. In float64 they agree to round-off: the maths is unchanged."""
    agent = conv_agent(block_norm, gumbel=True)
    rng = np.random.default_rng(2)
    for t in range(30):
        obs, next_obs = (agent._obs(rng.random((4, *OBS_SHAPE)) < 0.2) for _ in range(2))
        agent.replay.add(obs, rng.integers(0, 3, 4), rng.random(4), rng.standard_normal(4),
                         rng.dirichlet(np.ones(3), 4), next_obs,
                         np.array([t % 13 == 12, False, False, False]), np.array([False, t % 11 == 10, False, False]),
                         rng.standard_normal(4))
    agent.target = agent.target.clone().astype(np.float64)
    agent.target.flat_params[:] = rng.standard_normal(agent.target.flat_params.size) * 0.3
    env, start = np.repeat(np.arange(4), 5), np.tile(np.arange(0, 20, 4), 4)
    start = np.where(agent.replay.kind[env, start] == 0, start, start + 1)   # STEP rows
    td = agent.td_steps(env, start)
    window = agent.replay.window(env, start, agent.window)
    some = agent._target_values(window, td)
    read = some != 0
    every = agent.target.initial_inference(window.obs.reshape(-1, window.obs.shape[-1]))[2].reshape(read.shape)
    assert some.dtype == np.float64 and 0 < read.sum() < 0.7 * read.size
    np.testing.assert_allclose(some[read], every[read], rtol=1e-12, atol=1e-12)
