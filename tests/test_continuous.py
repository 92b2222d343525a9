"""Continuous (Box) actions for A2C and PPO: the diagonal Gaussian's log-probability, entropy and their
gradients against central differences in float64 and against hand-computed values (with the tanh
correction), clipping of what the env receives, the reward normaliser by hand, exact resume with both
normalisers, loading a trained continuous agent, a short Pendulum learning run, and the action spaces
still refused."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import assert_gradients_ok
from conftest import write_config as write_yaml_config
from rlscratch.agents.ppo import PPO, clipped_surrogate
from rlscratch.envs.wrappers import RewardNormalizer
from threadpoolctl import threadpool_limits

import rlscratch
from rlscratch import nn
from rlscratch.agent import EnvSpec, Step, agent_config, resolve_agent
from rlscratch.cli import run_cli
from rlscratch.config import ModelConfig, load_config
from rlscratch.on_policy import ActorCritic
from rlscratch.policy import (
    DiagGaussianHead,
    gaussian_entropy,
    gaussian_log_prob,
    gaussian_log_prob_grads,
    policy_head,
    tanh_log_det,
)
from rlscratch.trainer import train

BOX = gym.spaces.Box(low=np.array([-1.0, -2.0], np.float32), high=np.array([1.0, 3.0], np.float32))


def gaussian_batch(rng: np.random.Generator, B: int = 5, A: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """z = [mean | log_std] rows (float64) and draws u from them."""
    z = np.concatenate([rng.normal(size=(B, A)), rng.uniform(-1.0, 0.5, size=(B, A))], axis=1)
    u = z[:, :A] + np.exp(z[:, A:]) * rng.normal(size=(B, A))
    return z, u


# -- the maths, by hand ---------------------------------------------------------------------------
def test_log_prob_with_tanh_correction_by_hand():
    """One 2-d action: mean (0.5, -1), sigma (e^0 = 1, e^-1), u = (1, 0)."""
    mean, log_std, u = np.array([[0.5, -1.0]]), np.array([[0.0, -1.0]]), np.array([[1.0, 0.0]])
    # dim 0: -(0.5)^2 / 2 - 0 - log sqrt(2 pi);  dim 1: -(1 / e^-1)^2 / 2 + 1 - log sqrt(2 pi)
    by_hand = -0.125 - 0.5 * math.log(2 * math.pi) + (-0.5 * math.e ** 2 + 1.0 - 0.5 * math.log(2 * math.pi))
    assert gaussian_log_prob(mean, log_std, u)[0] == pytest.approx(by_hand, rel=1e-12)
    # squashed: minus log(1 - tanh(1)^2) + log(1 - tanh(0)^2) = minus log(1 - tanh(1)^2) + 0
    correction = math.log(1.0 - math.tanh(1.0) ** 2)
    assert gaussian_log_prob(mean, log_std, u, squash=True)[0] == pytest.approx(by_hand - correction, rel=1e-12)
    # entropy: sum_i log sigma_i + 1/2 + log sqrt(2 pi)
    assert gaussian_entropy(log_std)[0] == pytest.approx(-1.0 + 1.0 + math.log(2 * math.pi), rel=1e-12)


def test_gaussian_head_draws_modes_and_squash_by_hand():
    """DiagGaussianHead on a (2, 3) Box: a draw is mean + sigma * one standard normal per row AND
    dimension (the generator's next (B, 6) block), shaped like the space, float32; the mode is the mean.
    A squashing head's log-probability has the tanh correction: N(0, 1) at u = 0.5 gives
    -0.125 - log sqrt(2 pi) - log(1 - tanh(0.5)^2). A float32 z keeps float32 log-probabilities and
    gradients whatever the stored actions' and weights' dtype."""
    head = DiagGaussianHead(gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32))
    mean = np.arange(12.0).reshape(2, 6) * 0.1
    z = np.concatenate([mean, np.full((2, 6), math.log(0.5))], axis=1)
    u = head.sample(z, np.random.default_rng(5))
    expected = mean + 0.5 * np.random.default_rng(5).standard_normal((2, 6))
    assert u.shape == (2, 2, 3) and u.dtype == np.float32
    assert np.allclose(u.reshape(2, 6), expected, rtol=1e-6)
    mode = head.mode(z)
    assert mode.shape == (2, 2, 3) and mode.dtype == np.float32 and np.allclose(mode.reshape(2, 6), mean)
    squashed = DiagGaussianHead(gym.spaces.Box(-1.0, 1.0, (1,), np.float32), squash=True)
    by_hand = -0.125 - 0.5 * math.log(2 * math.pi) - math.log(1.0 - math.tanh(0.5) ** 2)
    assert squashed.log_prob(np.zeros((1, 2)), np.array([[0.5]]))[0] == pytest.approx(by_hand, rel=1e-12)
    z32 = z.astype(np.float32)
    assert head.log_prob(z32, u.astype(np.float64)).dtype == np.float32
    assert head.log_prob_backward(z32, u.astype(np.float64), np.ones(2)).dtype == np.float32
    # the default head clips what the env receives (no squash): u = 2 -> 1, u = -0.5 -> -0.5
    sent = head.to_env(np.array([[2.0, -0.5, 2.0, -0.5, 2.0, -0.5]]))
    assert sent.shape == (1, 2, 3) and sent.reshape(-1).tolist() == [1.0, -0.5] * 3


def test_squash_needs_both_bounds_finite():
    """tanh squashing maps onto [low, high]: a Box with one infinite bound is refused in one line that
    names the fix."""
    half_open = gym.spaces.Box(np.array([-1.0], np.float32), np.array([np.inf], np.float32))
    for space in (half_open, gym.spaces.Box(np.array([-np.inf], np.float32), np.array([1.0], np.float32))):
        with pytest.raises(rlscratch.errors.ConfigError, match="needs finite action bounds") as err:
            DiagGaussianHead(space, squash=True)
        assert str(err.value).endswith("; set agent.squash_actions: false") and "\n" not in str(err.value)
    assert DiagGaussianHead(half_open).to_env(np.array([[5.0]])).tolist() == [[5.0]]   # clipping needs no bounds


def test_tanh_correction_stays_finite_where_the_naive_form_does_not():
    u = np.array([[0.3, -2.0, 25.0, -400.0]])
    naive_small = np.log(1.0 - np.tanh(u[:, :2]) ** 2).sum()
    assert tanh_log_det(u[:, :2])[0] == pytest.approx(naive_small, rel=1e-12)
    # tanh(25) rounds to 1: the naive log(1 - tanh^2) is -inf there; the stable form is 2(log 2 - |u|) nearly
    value = tanh_log_det(u[:, 2:])[0]
    assert np.isfinite(value) and value == pytest.approx(2 * (math.log(2) - 25) + 2 * (math.log(2) - 400), rel=1e-12)


def test_gaussian_log_prob_and_entropy_gradients_match_finite_differences(rng):
    z, u = gaussian_batch(rng)
    mean, log_std = z[:, :2].copy(), z[:, 2:].copy()
    g = rng.normal(size=len(z))
    for squash in (False, True):
        dmean, dlog_std = gaussian_log_prob_grads(mean, log_std, u)
        assert_gradients_ok(nn.check_gradients(
            lambda squash=squash: float(g @ gaussian_log_prob(mean, log_std, u, squash)),
            {"mean": (mean, dmean * g[:, None]), "log_std": (log_std, dlog_std * g[:, None])}))
    head = DiagGaussianHead(BOX)
    H, dH = head.entropy(z)
    assert_gradients_ok(nn.check_gradients(lambda: head.entropy(z)[0], {"z": (z, dH)}))
    assert H == pytest.approx(gaussian_entropy(z[:, 2:]).mean())


@pytest.mark.parametrize("squash", [False, True])
def test_head_losses_gradients_match_finite_differences(rng, squash):
    """The policy-gradient loss (A2C) and the clipped surrogate (PPO) through the Gaussian head, w.r.t. z."""
    head = DiagGaussianHead(BOX, squash=squash)
    z, u = gaussian_batch(rng)
    w = rng.normal(size=len(z))
    loss, dz = head.policy_gradient_loss(z, u, w)
    assert loss == pytest.approx(-float(w @ head.log_prob(z, u)) / len(z))
    assert_gradients_ok(nn.check_gradients(lambda: head.policy_gradient_loss(z, u, w)[0], {"z": (z, dz)}))
    # old log-probs a little off, so that some ratios are clipped and some not
    old = head.log_prob(z, u) + np.array([0.5, -0.5, 0.05, -0.05, 0.0])
    loss, dz, stats = clipped_surrogate(z, u, old, w, 0.2, head)
    assert 0 < stats["clip_fraction"] < 1
    assert_gradients_ok(nn.check_gradients(lambda: clipped_surrogate(z, u, old, w, 0.2, head)[0], {"z": (z, dz)}))


@pytest.mark.parametrize("shared", [False, True])
def test_actor_critic_log_std_gradient_matches_finite_differences(rng, shared):
    """z = [mean | log_std tiled]: backward sums the rows' log-std gradients into the one parameter."""
    net = ActorCritic(3, 2, ModelConfig(hidden=[5], activation="tanh"), rng, shared=shared, log_std=-0.5)
    net.astype(np.float64)
    assert np.array_equal(net.params["log_std"], [-0.5, -0.5])
    obs = rng.normal(size=(4, 3))
    gz, gv = rng.normal(size=(4, 4)), rng.normal(size=4)

    def loss() -> float:
        z, v = net.infer(obs)
        return float((gz * z).sum() + gv @ v)
    net.zero_grad()
    net(obs)
    net.backward((gz, gv))
    analytic = net.flat_grads.copy()
    assert_gradients_ok(nn.check_gradients(loss, {"all": (net.flat_params, analytic)}))
    # clip_grad(Policy) measures the log-std's gradient with the policy network's (the first slice)
    policy_norm, value_norm = net.clip_grad(0.0)
    n_policy = len(analytic) if shared else 2 + net.policy.num_params()
    assert policy_norm == pytest.approx(np.linalg.norm(analytic[:n_policy]), rel=1e-12)
    assert value_norm == pytest.approx(np.linalg.norm(analytic[n_policy:] if not shared else analytic), rel=1e-12)


def test_env_actions_are_clipped_but_the_buffer_keeps_the_draw(rng):
    """SB3's choice: the env receives clip(u, low, high); the log-probability is of u itself."""
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), BOX, num_envs=2)
    agent = PPO(agent_config(PPO, {"n_steps": 2, "log_std_init": 1.0}), spec, ModelConfig(hidden=[4]), rng)
    obs = np.zeros((2, 3), np.float32)
    acted = agent.act(obs)
    drawn = agent._drawn.copy()
    assert acted.shape == (2, 2) and acted.dtype == np.float32
    assert np.all(acted >= BOX.low) and np.all(acted <= BOX.high)
    assert np.array_equal(acted, np.clip(drawn, BOX.low, BOX.high))
    assert not np.array_equal(acted, drawn)  # sigma = e: some of the four draws leave the box
    agent.observe(Step(obs, acted, np.zeros(2), obs, np.zeros(2, bool), np.zeros(2, bool), {}))
    assert np.array_equal(agent.buffer.actions[0], drawn)
    # deterministic: the Gaussian's mean, clipped
    mean = agent.net.logits(obs)[:, :2]
    assert np.array_equal(agent.act(obs, explore=False), np.clip(mean, BOX.low, BOX.high).astype(np.float32))
    # squashed: low + (tanh(u) + 1)(high - low) / 2, strictly inside
    head = DiagGaussianHead(BOX, squash=True)
    u = np.array([[0.0, 0.0], [100.0, -100.0]], np.float32)
    np.testing.assert_allclose(head.to_env(u), [[0.0, 0.5], [1.0, -2.0]])


def test_reward_normalizer_by_hand():
    """G <- gamma G + r; Var over every G seen (count starts at 1e-4, var at 1); r / sqrt(var + eps); G = 0 at ends."""
    norm = RewardNormalizer(num_envs=2, gamma=0.5, eps=0.0)
    out = norm(np.array([2.0, 4.0]), np.array([False, True]))
    # G = (2, 4): batch mean 3, var 1; merged with (0, 1, 1e-4): the prior's weight is 1e-4 / 2.0001
    c, n = 1e-4, 2
    total = c + n
    var1 = (1.0 * c + 1.0 * n + 3.0 ** 2 * c * n / total) / total
    np.testing.assert_allclose(out, np.array([2.0, 4.0]) / math.sqrt(var1), rtol=1e-6)
    np.testing.assert_array_equal(norm.returns, [2.0, 0.0])  # env 1's episode ended
    out = norm(np.array([1.0, 1.0]), np.array([False, False]))
    # G = (0.5 * 2 + 1, 0 + 1) = (2, 1): batch mean 1.5, var 0.25
    mean1 = 3.0 * n / total
    delta = 1.5 - mean1
    var2 = (var1 * total + 0.25 * n + delta ** 2 * total * n / (total + n)) / (total + n)
    np.testing.assert_allclose(out, np.array([1.0, 1.0]) / math.sqrt(var2), rtol=1e-6)
    # clipped at +-10: after 100 steps of 0.01 (gamma 0: G = r) the spread is tiny, and a reward of 1 is
    # about 20 of it
    norm = RewardNormalizer(num_envs=2, gamma=0.0)
    for _ in range(100):
        norm(np.array([0.01, 0.01]), np.array([False, False]))
    out = norm(np.array([1.0, -1.0]), np.array([False, False]))
    assert out.tolist() == [10.0, -10.0] and 0.0 < norm.var < 0.02


def test_tuple_and_dict_action_spaces_are_refused_in_one_line():
    for space in (gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3))),
                  gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), gym.spaces.MultiDiscrete([2, 3])):
        with pytest.raises(rlscratch.errors.ConfigError, match=r"Discrete or Box action spaces.*\n?") as err:
            policy_head(space)
        assert "\n" not in str(err.value) and type(space).__name__ in str(err.value)


class TupleActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1.0, 1.0, (1,), np.float32)))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


def test_training_on_a_tuple_action_space_exits_2_with_one_line(tmp_path, capsys):
    from rlscratch.train import main

    gym.register("RlscratchTest/TupleActions-v0", entry_point=TupleActionEnv)
    path = write_config(tmp_path, {"name": "ppo", "n_steps": 4}, env={"id": "RlscratchTest/TupleActions-v0"})
    assert run_cli(main, ["--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Tuple" in err and "Discrete or Box" in err, err


# -- runs ------------------------------------------------------------------------------------------
def write_config(folder: Path, agent: dict, **sections) -> Path:
    data = {
        "env": {"id": "Pendulum-v1", "num_envs": 2, "eval_num_envs": 2, "wrappers": ["normalize_observation"]},
        "agent": agent,
        "model": {"hidden": [16], "activation": "tanh"},
        "train": {"total_steps": 600, "eval_episodes": 2, "checkpoint_every": 200, "log_every": 200},
        "log": {"tensorboard": False},
        "seed": 3,
    }
    return write_yaml_config(folder, data, **sections)


@pytest.mark.parametrize("agent", [
    {"name": "a2c", "n_steps": 8, "normalize_reward": True, "log_std_init": -0.5},
    {"name": "ppo", "n_steps": 16, "batch_size": 8, "n_epochs": 2, "normalize_reward": True, "squash_actions": True},
])
def test_resume_with_normalisers_is_exact(tmp_path, agent):
    """Stopped mid-rollout and resumed: the same parameters and the same observation and reward statistics
    as an uninterrupted run (both normalisers are in the checkpoint and restored exactly)."""
    config, _ = load_config(str(write_config(tmp_path, agent)))
    full = train(config, tmp_path / "full")
    interrupted = train(config, tmp_path / "split", stop_at=302)  # 151 vector steps: mid-rollout for both
    assert interrupted["agent"].buffer.pos != 0
    resumed = train(config, tmp_path / "split", resume=True)
    assert np.array_equal(resumed["agent"].net.flat_params, full["agent"].net.flat_params)
    a, b = resumed["agent"].reward_normalizer, full["agent"].reward_normalizer
    for key in ("returns", "mean", "var", "count"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert resumed["eval_mean"] == full["eval_mean"]
    # and the observation normaliser, as the checkpoint holds it
    loaded = rlscratch.load(tmp_path / "split")
    reference = rlscratch.load(tmp_path / "full")
    assert np.array_equal(loaded.normalizer.mean, reference.normalizer.mean)
    assert np.array_equal(loaded.normalizer.var, reference.normalizer.var)


def test_load_and_act_on_a_continuous_run(tmp_path):
    config, _ = load_config(str(write_config(tmp_path, {"name": "ppo", "n_steps": 16, "batch_size": 16,
                                                         "log_std_init": 1.0},
                                             train={"checkpoint_every": 0})))
    train(config, tmp_path / "run")
    agent = rlscratch.load(tmp_path / "run")
    assert isinstance(agent.action_space, gym.spaces.Box)
    obs = np.array([[1.0, 0.0, 8.0], [-1.0, 0.0, -8.0], [0.0, 1.0, 0.0]], np.float32)
    greedy = agent.act(obs)
    # the mean of the Gaussian on the normalised observation, clipped to [-2, 2]
    mean = agent.agent.net.logits(agent.normalizer.normalize(obs))[:, :1]
    assert np.array_equal(greedy, np.clip(mean, -2.0, 2.0))
    assert np.array_equal(agent.act(obs[0]), greedy[0]) and greedy.shape == (3, 1)
    explored = np.stack([agent.act(obs, deterministic=False) for _ in range(50)])  # 150 draws
    assert np.all(np.abs(explored) <= 2.0)
    assert np.unique(explored).size > 50  # sigma near e: draws differ, and many are clipped to +-2
    assert np.any(np.abs(explored) == 2.0)


@pytest.mark.slow
def test_ppo_learns_pendulum(tmp_path):
    """Random torques score about -1200 per Pendulum episode; a short seeded PPO run must swing up and
    hold the pendulum for a greedy mean above -400."""
    config, _ = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "ppo_pendulum.yaml"))
    config.train.total_steps = 30000
    config.train.eval_every = 30000
    config.train.checkpoint_every = 0
    config.log.tensorboard = False
    config.log.progress = False
    config.log.root = str(tmp_path)
    with threadpool_limits(1):
        summary = train(config, tmp_path / "learn")
    assert summary["eval_mean"] >= -400


@pytest.mark.parametrize("name", ["ppo_pendulum", "a2c_pendulum", "ppo_lunarlander_continuous"])
def test_shipped_continuous_configs_validate(name):
    config, _ = load_config(str(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"))
    cfg = agent_config(resolve_agent(config.agent["name"]), config.agent)
    assert cfg.normalize_reward and config.env.wrappers == ["normalize_observation"]


def test_lunarlander_continuous_runs_with_the_box2d_extra(tmp_path):
    """The box2d extra (in dev) works: two 2-d throttles, a short PPO run, greedy actions inside [-1, 1]."""
    config, _ = load_config(str(write_config(tmp_path, {"name": "ppo", "n_steps": 32, "batch_size": 32},
                                             env={"id": "LunarLanderContinuous-v3"},
                                             train={"total_steps": 128, "checkpoint_every": 0})))
    summary = train(config, tmp_path / "run")
    assert summary["env_steps"] == 128
    agent = rlscratch.load(tmp_path / "run")
    obs = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32) * 5
    actions = agent.act(obs, deterministic=False)
    assert actions.shape == (16, 2) and np.all(np.abs(actions) <= 1.0)


def test_a_box_of_matrix_shape_acts_and_learns_through_the_same_path(rng):
    """A (2, 2) Box: four Gaussian dimensions, actions shaped like the space, stored and learned from."""
    space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), space, num_envs=2)
    agent = PPO(agent_config(PPO, {"n_steps": 2, "batch_size": 4, "n_epochs": 1}), spec, ModelConfig(hidden=[4]), rng)
    obs = np.zeros((2, 3), np.float32)
    before = agent.net.flat_params.copy()
    for _ in range(2):
        acted = agent.act(obs)
        assert acted.shape == (2, 2, 2) and space.contains(acted[0]) and space.contains(acted[1])
        agent.observe(Step(obs, acted, np.ones(2), obs, np.zeros(2, bool), np.zeros(2, bool), {}))
    assert agent.updates == 1 and not np.array_equal(agent.net.flat_params, before)
    assert agent.act(obs, explore=False).shape == (2, 2, 2)


def test_policy_head_by_action_space():
    """A float Box gets a Gaussian that clips (squash off by default: u = (5, 5) -> the bounds (1, 3)) or,
    asked to, squashes (u = 0 -> the middle of [low, high]: (0, 0.5)); an integer Box is refused like
    any other non-Discrete, non-float space, in one line naming the fix."""
    assert policy_head(BOX).to_env(np.array([[5.0, 5.0]])).tolist() == [[1.0, 3.0]]
    assert policy_head(BOX, True).to_env(np.array([[0.0, 0.0]])).tolist() == [[0.0, 0.5]]
    with pytest.raises(rlscratch.errors.ConfigError, match="Discrete or Box action spaces") as err:
        policy_head(gym.spaces.Box(0, 5, (2,), np.int64))
    assert str(err.value).endswith("; pick an env with one of those, or flatten its actions with a wrapper")
