"""Observation input (dtype, layout, one-hot) and conv encoders from model.encoder: conversions checked
against hand-built arrays, encoders gradient-checked in float64, config errors, the agents built with
an encoder, MinAtar through the env factory, and a short MinAtar learning test."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import yaml
from rlscratch.agents.a2c import A2C
from rlscratch.agents.dqn import DQN, DQNConfig
from rlscratch.agents.ppo import PPO
from rlscratch.envs.factory import EVAL_MAX_EPISODE_STEPS, make_env

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step, agent_config
from rlscratch.config import EnvConfig, ModelConfig, load_config
from rlscratch.encoders import ObservationInput, encoder_config, image_layout
from rlscratch.errors import ConfigError
from rlscratch.events import read_scalars
from rlscratch.models import mlp, network
from rlscratch.on_policy import ActorCritic
from rlscratch.trainer import train

TOL = 1e-6


def bool_images(rng, shape):
    return rng.random(shape) < 0.3


# -- the observation input --------------------------------------------------------------------------
def test_bool_hwc_images_become_float32_chw(rng):
    space = gym.spaces.Box(0, 1, (10, 10, 4), dtype=bool)  # MinAtar's layout
    obs = bool_images(rng, (3, 10, 10, 4))
    x = ObservationInput(space, image=True).infer(obs)
    assert x.shape == (3, 4, 10, 10) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, obs.transpose(0, 3, 1, 2).astype(np.float32))
    # a replay buffer's flattened rows give the same images
    np.testing.assert_array_equal(ObservationInput(space, image=True).infer(obs.reshape(3, -1)), x)


def test_uint8_images_are_scaled_by_1_over_255(rng):
    space = gym.spaces.Box(0, 255, (2, 5, 6), dtype=np.uint8)  # channels first: 6 > 2
    obs = rng.integers(0, 256, (4, 2, 5, 6), dtype=np.uint8)
    x = ObservationInput(space, image=True).infer(obs)
    assert x.shape == (4, 2, 5, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x, obs / 255.0, rtol=1e-6)
    assert x.max() <= 1.0
    # without an encoder the same scaling, flattened
    flat = ObservationInput(space).infer(obs)
    assert flat.shape == (4, 60)
    np.testing.assert_allclose(flat, obs.reshape(4, -1) / 255.0, rtol=1e-6)


def test_bool_observations_are_not_scaled(rng):
    obs = bool_images(rng, (2, 7))
    x = ObservationInput(gym.spaces.Box(0, 1, (7,), dtype=bool)).infer(obs)
    np.testing.assert_array_equal(x, obs.astype(np.float32))


def test_frame_stack_of_hwc_images_stacks_channels(rng):
    # gymnasium.wrappers.FrameStackObservation on MinAtar: (K, H, W, C)
    space = gym.spaces.Box(0, 1, (2, 10, 10, 4), dtype=bool)
    obs = bool_images(rng, (3, 2, 10, 10, 4))
    x = ObservationInput(space, image=True).infer(obs)
    assert x.shape == (3, 8, 10, 10)
    # channels of frame 0 first, then frame 1
    np.testing.assert_array_equal(x[:, :4], obs[:, 0].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(x[:, 4:], obs[:, 1].transpose(0, 3, 1, 2))


def test_layout_guess_and_override():
    assert image_layout((10, 10, 4))[1] == (4, 10, 10)
    assert image_layout((10, 10, 10))[1] == (10, 10, 10)  # MinAtar Seaquest: channels last
    assert image_layout((4, 84, 84))[1] == (4, 84, 84)
    assert image_layout((84, 84, 3))[1] == (3, 84, 84)
    assert image_layout((3, 3, 3), "chw") == ((0, 1, 2), (3, 3, 3))
    assert image_layout((3, 3, 3), "hwc") == ((2, 0, 1), (3, 3, 3))


def test_discrete_observations_are_one_hot():
    obs_input = ObservationInput(gym.spaces.Discrete(5, start=2))
    x = obs_input.infer(np.array([2, 6, 4]))
    np.testing.assert_array_equal(x, np.eye(5, dtype=np.float32)[[0, 4, 2]])
    # a replay buffer's (N, 1) rows too
    np.testing.assert_array_equal(obs_input.infer(np.array([[2], [6], [4]])), x)


def test_discrete_network_reads_one_hot_rows(rng):
    """The first Linear of a Discrete-input network sees one-hot rows: its output for state s is
    column s of W plus b, which an index fed as a number could not give."""
    net = network(gym.spaces.Discrete(4), 3, ModelConfig(hidden=[]), rng)
    linear = net.layers[1]
    q = net.infer(np.array([0, 3]))
    np.testing.assert_allclose(q, linear.params["W"][:, [0, 3]].T + linear.params["b"], rtol=1e-6)


def test_float_box_without_encoder_is_the_plain_mlp():
    space = gym.spaces.Box(-1, 1, (2, 3), dtype=np.float32)
    model = ModelConfig(hidden=[8])
    a = network(space, 2, model, np.random.default_rng(0))
    b = mlp(6, 2, model, np.random.default_rng(0))
    assert [type(m) for m in a.layers] == [type(m) for m in b.layers]
    np.testing.assert_array_equal(a.flat_params, b.flat_params)


def test_tuple_space_is_refused_with_a_pointer_to_flatten_observation(rng):
    space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))
    with pytest.raises(ConfigError, match="FlattenObservation"):
        network(space, 2, ModelConfig(), rng)


# -- encoders ---------------------------------------------------------------------------------------
def encoder_tail(space, model, rng) -> nn.Sequential:
    """The network after its observation input, in float64, with dL/dinput switched back on."""
    net = network(space, 3, model, rng)
    assert isinstance(net.layers[0], ObservationInput)
    tail = nn.Sequential(*net.layers[1:]).astype(np.float64)
    tail.layers[0].input_grad = True
    return tail


# tanh between the layers: smooth, so central differences have no kinks to trip on (ReLU's own
# backward is checked with the other activations)
@pytest.mark.parametrize("encoder", [
    {"type": "minatar", "channels": [3], "dense": [7], "activation": "tanh"},  # the preset's shape, narrower
    {"type": "conv", "channels": [3, 4], "kernel": [3, 2], "stride": [1, 2], "padding": [1, 0], "dense": [5],
     "activation": "tanh"},
    {"type": "conv", "channels": [2], "kernel": 3, "stride": 2, "padding": 1, "activation": "tanh"},
])
def test_encoder_gradients(rng, encoder):
    space = gym.spaces.Box(0, 1, (10, 10, 2), dtype=bool)
    tail = encoder_tail(space, ModelConfig(hidden=[6], activation="tanh", encoder=encoder), rng)
    x = rng.standard_normal((2, 2, 10, 10))
    # h = 1e-5: a few dense-weight gradients are ~1e-5, where h = 1e-6's roundoff (|L| 1e-16 / h)
    # alone reached 1.2e-6 relative; tanh's truncation error at h = 1e-5 is ~1e-10
    errors = nn.check_module(tail, x, rng=rng, h=1e-5)
    assert max(errors.values()) <= TOL, errors


def test_minatar_preset_is_the_papers_network(rng):
    space = gym.spaces.Box(0, 1, (10, 10, 4), dtype=bool)
    net = network(space, 6, ModelConfig(hidden=[], encoder="minatar"), rng)
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["ObservationInput", "Conv2d", "ReLU", "Flatten", "Linear", "ReLU", "Linear"]
    assert net.num_params() == (4 * 9 * 16 + 16) + (16 * 8 * 8 * 128 + 128) + (128 * 6 + 6)
    assert net.layers[1].input_grad is False  # the first layer with parameters: its input is data
    assert net.infer(bool_images(rng, (5, 10, 10, 4))).shape == (5, 6)


def test_nature_preset_shapes(rng):
    space = gym.spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    net = network(space, 18, ModelConfig(hidden=[], encoder="nature"), rng)
    convs = [m for m in net.layers if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel, c.stride) for c in convs] == [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)),
                                                                     (64, (3, 3), (1, 1))]
    dense = [m for m in net.layers if isinstance(m, nn.Linear)][0]
    assert dense.params["W"].shape == (512, 64 * 7 * 7)  # (out, in)


@pytest.mark.parametrize("encoder,message", [
    ({"type": "resnet"}, "unknown encoder 'resnet'"),
    ({"channels": [4, 4], "kernel": [3]}, "1 values for 2 conv layers"),
    ({"channels": [4], "kernel": 12}, "leaves no pixels"),
    ({"channels": [4], "chanels": 3}, "did you mean"),
    ({"layout": "whc"}, "layout"),
])
def test_encoder_config_errors(rng, encoder, message):
    space = gym.spaces.Box(0, 1, (10, 10, 4), dtype=bool)
    with pytest.raises(ConfigError, match=message):
        network(space, 3, ModelConfig(hidden=[], encoder=encoder), rng)


def test_encoder_needs_images(rng):
    with pytest.raises(ConfigError, match="needs image observations"):
        network(gym.spaces.Box(0, 1, (7,), dtype=np.float32), 3, ModelConfig(encoder="minatar"), rng)
    with pytest.raises(ConfigError, match="Discrete"):
        network(gym.spaces.Discrete(4), 3, ModelConfig(encoder="minatar"), rng)


def test_preset_with_overrides():
    config = encoder_config({"type": "minatar", "channels": [32]})
    assert config.channels == [32] and config.dense == [128] and config.kernel == 3


# -- the agents with an encoder ---------------------------------------------------------------------
MINATAR_SPACE = gym.spaces.Box(0, 1, (10, 10, 4), dtype=bool)


def image_step(rng, n):
    return Step(bool_images(rng, (n, 10, 10, 4)), rng.integers(0, 3, n), rng.standard_normal(n),
                bool_images(rng, (n, 10, 10, 4)), np.zeros(n, bool), np.zeros(n, bool), {})


def test_dqn_with_the_minatar_encoder_updates_its_conv(rng):
    spec = EnvSpec(MINATAR_SPACE, gym.spaces.Discrete(3), 2)
    agent = DQN(DQNConfig(learning_starts=8, batch_size=4, train_freq=1), spec,
                ModelConfig(hidden=[], encoder="minatar"), np.random.default_rng(0))
    assert agent.buffer.obs.dtype == np.bool_  # images stay 1 byte a pixel in the replay buffer
    conv = agent.q.layers[1]
    before = conv.params["W"].copy()
    for _ in range(6):
        agent.observe(image_step(rng, 2))
    assert agent.updates > 0
    assert not np.allclose(conv.params["W"], before)
    assert agent.act(bool_images(rng, (2, 10, 10, 4))).shape == (2,)


@pytest.mark.parametrize("shared", [False, True])
def test_actor_critic_with_an_encoder_backpropagates_into_the_conv(rng, shared):
    net = ActorCritic(MINATAR_SPACE, 3, ModelConfig(hidden=[8], encoder={"channels": [4], "dense": [16]}),
                      rng, shared=shared)
    obs = bool_images(rng, (5, 10, 10, 4))
    logits, values = net.forward(obs)
    assert logits.shape == (5, 3) and values.shape == (5,)
    net.zero_grad()
    net.backward((np.ones_like(logits), np.ones_like(values)))
    convs = [m for _, m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (1 if shared else 2)
    assert all(np.abs(c.grads["W"]).sum() > 0 for c in convs)


@pytest.mark.parametrize("cls", [A2C, PPO])
def test_a2c_and_ppo_build_and_act_on_images(rng, cls):
    spec = EnvSpec(MINATAR_SPACE, gym.spaces.Discrete(3), 2)
    config = agent_config(cls, {"n_steps": 4})
    agent = cls(config, spec, ModelConfig(hidden=[], encoder="minatar"), np.random.default_rng(0))
    assert agent.act(bool_images(rng, (2, 10, 10, 4))).shape == (2,)


# -- MinAtar through the env factory ----------------------------------------------------------------
def test_minatar_ids_are_registered_on_demand_with_an_evaluation_time_limit():
    env = make_env(EnvConfig(id="MinAtar/Breakout-v1"))
    assert env.observation_space.shape == (10, 10, 4) and env.observation_space.dtype == np.bool_
    assert env.spec.max_episode_steps is None  # training: MinAtar's own episodes
    env.close()
    env = make_env(EnvConfig(id="MinAtar/Breakout-v1"), evaluation=True)
    assert env.spec.max_episode_steps == EVAL_MAX_EPISODE_STEPS
    env.close()
    env = make_env(EnvConfig(id="MinAtar/Breakout-v1", eval_kwargs={"max_episode_steps": 7}), evaluation=True)
    env.reset(seed=0)
    steps = 0
    truncated = terminated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(1)  # "fire"/stay: a ball is lost only after many steps
        steps += 1
    assert steps <= 7
    env.close()


def test_wrappers_by_dotted_path():
    config = EnvConfig(id="MinAtar/Breakout-v1",
                       wrappers=[{"gymnasium.wrappers.FrameStackObservation": {"stack_size": 3}}])
    env = make_env(config)
    assert env.observation_space.shape == (3, 10, 10, 4)
    env.close()
    env = make_env(EnvConfig(id="CartPole-v1", wrappers=[{"rlscratch.envs.wrappers:MaskObservation": {"keep": [0]}}]))
    assert env.observation_space.shape == (1,)
    env.close()
    with pytest.raises(ConfigError, match="cannot import wrapper 'no_such_pkg.mod:Wrapper'"):
        make_env(EnvConfig(id="CartPole-v1", wrappers=["no_such_pkg.mod:Wrapper"]))


@pytest.mark.parametrize("name", ["dqn_minatar_breakout", "dqn_minatar_space_invaders", "dqn_minatar_freeway",
                                  "dqn_minatar_asterix", "ppo_minatar_breakout", "ppo_minatar_space_invaders"])
def test_minatar_configs_load(name):
    config, _ = load_config(name)
    assert config.env.id.startswith("MinAtar/") and config.model.encoder == "minatar"
    assert config.train.total_steps == 1_000_000


# -- learning ---------------------------------------------------------------------------------------
def test_dqn_learns_minatar_breakout(tmp_path):
    """Seeded: 3,000 env steps of DQN with the MinAtar encoder, then a greedy evaluation of 20 episodes
    scores far above a uniformly random policy on the same evaluation env (measured here: ~0.35 a
    game). Measured on seeds 0 and 1: 3.3 and 3.4."""
    data = {
        "env": {"id": "MinAtar/Breakout-v1", "num_envs": 1, "eval_num_envs": 5},
        "agent": {"name": "dqn", "n_step": 3, "batch_size": 32, "learning_starts": 300, "train_freq": 1,
                  "target_update_interval": 250, "optim": {"lr": 1e-3},
                  "epsilon": {"start": 1.0, "end": 0.05, "steps": 1500}, "buffer_size": 10000},
        "model": {"encoder": "minatar", "hidden": []},
        "train": {"total_steps": 3000, "eval_every": 0, "eval_episodes": 20},
        "log": {"root": str(tmp_path), "progress": False},
        "seed": 0,
    }
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump(data))
    config, _ = load_config(str(path))
    train(config, tmp_path / "run")
    _, returns = read_scalars(tmp_path / "run")["eval/mean_return"]

    env = make_env(EnvConfig(id="MinAtar/Breakout-v1"), evaluation=True)
    rng = np.random.default_rng(0)
    random_returns = []
    for episode in range(20):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            total, done = total + reward, terminated or truncated
        random_returns.append(total)
    env.close()
    assert returns[-1] >= max(1.5, 3 * np.mean(random_returns)), (returns[-1], np.mean(random_returns))


def test_minatar_targets_last_100_window_by_hand(monkeypatch):
    """benchmarks/minatar_targets.py's measure: the mean of the last 100 training episodes that ended
    by the checkpoint step (episodes ending after it do not count)."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("minatar_targets", None)
    import minatar_targets

    steps = np.arange(1, 301) * 1000  # episode i (1..300) ends at step 1000 i with return i
    returns = np.arange(1, 301, dtype=float)
    # by step 150,500: episodes 1..150 ended, the last 100 are 51..150, mean 100.5
    assert minatar_targets.last_window_mean(steps, returns, 150_500) == pytest.approx(100.5)
    assert minatar_targets.last_window_mean(steps, returns, 40_000) == pytest.approx(20.5)  # fewer than 100: all
    assert minatar_targets.last_window_mean(steps, returns, 500) is None  # no episode ended yet


def test_dueling_q_network_on_an_encoder_gradients(rng):
    """Dueling needs a hidden layer to share: with an encoder that is model.hidden's last width after
    the conv (here conv 2 channels -> dense 5 -> dueling head)."""
    from rlscratch.agents.dqn import q_network

    model = ModelConfig(hidden=[5], activation="tanh", encoder={"channels": [2], "activation": "tanh"})
    net = q_network(gym.spaces.Box(0, 1, (6, 6, 3), dtype=bool), 3, model, rng, dueling=True)
    assert [type(m).__name__ for m in net.layers][:2] == ["ObservationInput", "Conv2d"]
    tail = nn.Sequential(*net.layers[1:]).astype(np.float64)
    tail.layers[0].input_grad = True
    # h = 1e-4: at 1e-5 a near-zero input-gradient entry showed 1.1e-6 of roundoff; every layer is
    # smooth (tanh), so the larger step's truncation error stays ~h^2
    errors = nn.check_module(tail, rng.standard_normal((2, 3, 6, 6)), rng=rng, h=1e-4)
    assert max(errors.values()) <= TOL, errors
