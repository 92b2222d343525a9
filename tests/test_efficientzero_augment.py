"""EfficientZero's observation augmentation (rlscratch.muzero.augment) and the agent's two model switches
(agent.augmentation, agent.block_norm): hand-made boards, the draws' bounds, off = untouched, the
one-line errors, and exact resume with both on after a real SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import with_optim
from rlscratch.agents import muzero as muzero_module
from rlscratch.agents.muzero import MuZero, MuZeroConfig
from test_efficientzero_conv import OBS_SHAPE, minatar_spec

from rlscratch.agent import EnvSpec, Step
from rlscratch.config import ModelConfig
from rlscratch.errors import ConfigError
from rlscratch.muzero.augment import Augmentation, check_augmentation, intensity, shift

BOARD = (10, 10, 4)   # MinAtar's (H, W, C)


# -- the transformations by hand ------------------------------------------------------------------------
def test_shift_by_hand_repeats_the_edge():
    """out[h, w] = x[clip(h + i - 1), clip(w + j - 1)] on a 3x3 image: offset (0, 0) moves it down-right
    by one cell, repeating the top row and left column; (2, 1) moves it up by one, repeating the bottom
    row; (1, 1) leaves it."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    images = np.concatenate([x, x, x])
    out = shift(images, np.array([[0, 0], [2, 1], [1, 1]]))
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])
    np.testing.assert_array_equal(out[1, 0], [[3, 4, 5], [6, 7, 8], [6, 7, 8]])
    np.testing.assert_array_equal(out[2], x[0])


def test_intensity_by_hand():
    images = np.ones((2, 1, 2, 2))
    out = intensity(images, np.array([0.9, 1.05]))
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0.9, 1.05])
    assert np.ptp(out[0]) == 0 and np.ptp(out[1]) == 0


# -- Augmentation on stored (flattened, channels-last) observations -------------------------------------
def one_cell_boards(n: int, row: int, col: int, channel: int) -> np.ndarray:
    boards = np.zeros((n, *BOARD), dtype=bool)
    boards[:, row, col, channel] = True
    return boards.reshape(n, -1)


def test_shift_moves_a_board_by_at_most_one_cell():
    """A single lit cell at (4, 6) of channel 2, 300 samples: each stays one lit cell of value 1 in
    channel 2 within one cell each way, every one of the 9 offsets occurs, and the output is float32 in
    the input's shape."""
    augment = Augmentation(("shift",), BOARD)
    obs = one_cell_boards(300, 4, 6, 2)
    out = augment(obs, np.random.default_rng(0))
    assert out.shape == obs.shape and out.dtype == np.float32
    boards = out.reshape(300, *BOARD)
    moves = set()
    for board in boards:
        lit = np.argwhere(board)
        assert len(lit) == 1 and board[tuple(lit[0])] == 1.0 and lit[0][2] == 2
        moves.add((int(lit[0][0]) - 4, int(lit[0][1]) - 6))
    assert moves == {(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)}


def test_augmented_targets_share_their_samples_draw():
    """(N, K, D) target observations: the K frames of one sample get one offset and one factor (EZ
    transforms a sample's stacked frames as one image); different samples get different ones."""
    augment = Augmentation(("shift", "intensity"), BOARD, np.float64)
    frames = np.repeat(one_cell_boards(50, 5, 5, 0)[:, None], 3, axis=1)   # (50, 3, 400), identical frames
    out = augment(frames, np.random.default_rng(1))
    assert out.shape == (50, 3, 400) and out.dtype == np.float64
    assert all(np.array_equal(sample[0], sample[k]) for sample in out for k in (1, 2))
    assert len({tuple(np.argwhere(sample[0].reshape(BOARD))[0]) for sample in out}) == 9
    assert len({float(sample[0].max()) for sample in out}) == 50


def test_intensity_factor_is_one_plus_005_clipped_normal():
    """Boards of ones: each sample scaled by one factor, exactly 1 + 0.05 * clip(z, -2, 2) for the
    generator's normal draws z -- within [0.9, 1.1], both bounds reached by the clip."""
    n = 4000
    augment = Augmentation(("intensity",), BOARD, np.float64)
    out = augment(np.ones((n, 400), dtype=bool), np.random.default_rng(2))
    factors = out[:, 0]
    assert np.all(out == factors[:, None])
    expected = 1.0 + 0.05 * np.clip(np.random.default_rng(2).standard_normal(n), -2.0, 2.0)
    np.testing.assert_allclose(factors, expected, rtol=0, atol=1e-15)
    assert factors.min() == pytest.approx(0.9, abs=1e-15) and factors.max() == pytest.approx(1.1, abs=1e-15)
    assert np.mean(factors == factors.min()) > 0.01 and 0.045 < factors.std() < 0.05


def test_channels_first_observations_shift_their_last_two_axes():
    """(C, H, W) observations: the lit cell (channel 3, row 4, column 6) stays in channel 3 and within
    one cell; a corner cell moved away from its edges repeats into a 2x2 block, moved past them leaves."""
    augment = Augmentation(("shift",), (4, 10, 10))
    obs = np.zeros((60, 4, 10, 10))
    obs[:, 3, 4, 6] = 1.0
    out = augment(obs.reshape(60, -1), np.random.default_rng(3)).reshape(60, 4, 10, 10)
    lit = np.argwhere(out)
    assert len(lit) == 60 and np.all(lit[:, 1] == 3) and np.all(np.abs(lit[:, 2:] - [4, 6]) <= 1)
    corner = np.zeros((1, 1, 3, 3))
    corner[0, 0, 0, 2] = 1.0
    np.testing.assert_array_equal(shift(corner, np.array([[0, 2]]))[0, 0], [[0, 1, 1], [0, 1, 1], [0, 0, 0]])
    assert shift(corner, np.array([[2, 0]])).sum() == 0


@pytest.mark.parametrize("kinds,network,message", [
    (["shift", "crop"], "conv", r"^agent\.augmentation: unknown 'crop'; choose from shift, intensity"),
    (["shift", "shift"], "conv", r"^agent\.augmentation: \['shift', 'shift'\] lists one augmentation twice"),
    (["intensity"], "mlp", r"^agent\.augmentation: .* network is mlp -- use network: conv or augmentation: \[\]"),
])
def test_bad_augmentation_is_one_line(kinds, network, message):
    with pytest.raises(ConfigError, match=message) as caught:
        check_augmentation(kinds, network)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("setting,message", [
    ("agent.augmentation=[shift, crop]", "error: agent.augmentation: unknown 'crop'; choose from shift, intensity"),
    ("agent.block_norm=group", "error: agent.block_norm: 'group' is not allowed; choose from none, layer, batch"),
], ids=["augmentation", "block_norm"])
def test_bad_switch_from_the_shell_is_one_line_and_exit_2(tmp_path, setting, message):
    """A real ``rlscratch.train`` process: one line on stderr, exit status 2, no run directory made."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "rlscratch.train", "--config", "efficientzero_minatar_breakout",
                           "--set", setting, "--run-dir", str(tmp_path / "run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_block_norm_needs_the_conv_network():
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2))
    with pytest.raises(ConfigError, match=r"^agent\.block_norm: batch normalises the conv network.*block_norm: none"):
        MuZero(MuZeroConfig(**with_optim({"block_norm": "batch"})), spec, ModelConfig(), np.random.default_rng(0))


# -- the agent ------------------------------------------------------------------------------------------
SETTINGS = dict(network="conv", conv_channels=3, reduced_channels=2, head_hidden=4, num_simulations=4,
                value_support=3, reward_support=1, unroll_steps=2, td_steps=2, batch_size=4, warmup_steps=4,
                replay_capacity=64, consistency_coef=2.0, value_prefix=True, lstm_hidden=3, lstm_horizon=2)


def trained_batches(monkeypatch, **switches) -> tuple[MuZero, list]:
    """An agent after 8 steps of 2 envs; the UnrollBatch of every update, and the replay's own
    observations at the moment each was made (obs, target obs)."""
    seen = []
    real_loss = muzero_module.unrolled_loss

    def spy(net, batch, **kwargs):
        seen.append(batch)
        return real_loss(net, batch, **kwargs)

    monkeypatch.setattr(muzero_module, "unrolled_loss", spy)
    real_targets = muzero_module.make_targets
    stored = []

    def targets_spy(*args, **kwargs):
        batch = real_targets(*args, **kwargs)
        stored.append((batch.obs.copy(), batch.target_obs.copy()))
        return batch

    monkeypatch.setattr(muzero_module, "make_targets", targets_spy)
    agent = MuZero(MuZeroConfig(**with_optim({**SETTINGS, **switches})), minatar_spec(), ModelConfig(hidden=[8]),
                   np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for t in range(8):
        obs = rng.random((2, *OBS_SHAPE)) < 0.3
        agent.observe(Step(obs=obs, action=agent.act(obs), reward=np.array([1.0, 0.0]),
                           next_obs=rng.random((2, *OBS_SHAPE)) < 0.3, terminated=np.array([t == 5, False]),
                           truncated=np.zeros(2, bool), info={}))
    assert agent.updates == len(seen) > 0
    return agent, list(zip(seen, stored))


def test_augmentation_off_trains_on_the_replays_observations(monkeypatch):
    agent, batches = trained_batches(monkeypatch)
    assert agent.augment is None
    for batch, (obs, target_obs) in batches:
        assert batch.obs is not None and np.array_equal(batch.obs, obs) and np.array_equal(batch.target_obs, target_obs)


def test_augmentation_on_transforms_both_with_their_own_draws(monkeypatch):
    """The representation's input and the consistency targets are augmented (float32, same shapes),
    each by its own draw; the boards' lit cells stay within one cell and a 10% scale."""
    agent, batches = trained_batches(monkeypatch, augmentation=["shift", "intensity"], block_norm="batch")
    off, off_batches = trained_batches(monkeypatch)
    assert not np.array_equal(agent.net.flat_params, off.net.flat_params)
    for batch, (obs, target_obs) in batches:
        assert batch.obs.dtype == np.float32 and batch.obs.shape == obs.shape
        assert batch.target_obs.shape == target_obs.shape
        assert not np.array_equal(batch.obs, obs) and not np.array_equal(batch.target_obs, target_obs)
        lit = batch.obs[batch.obs > 0]
        assert lit.min() >= 0.9 - 1e-6 and lit.max() <= 1.1 + 1e-6
        # one factor per sample for its representation input, another for its targets
        assert len({round(float(x), 6) for x in batch.obs[0][batch.obs[0] > 0]}) == 1
        assert {round(float(x), 6) for x in batch.target_obs[0][batch.target_obs[0] > 0]} != \
            {round(float(x), 6) for x in batch.obs[0][batch.obs[0] > 0]}


# Exact resume with both switches on (batch norm + augmentation): the efficientzero_minatar case of
# tests/test_resume_minatar.py turns them on (benchmarks/fault_injection.py).
