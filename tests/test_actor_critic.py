"""Actor-critic agents (A2C, A2C+GAE, PPO): returns and advantages against hand-computed values,
every hand-derived policy/value gradient against finite differences, exact resume in the middle of a
rollout, and a short learning run."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import write_config as write_yaml_config
from rlscratch.agents.a2c import A2C
from rlscratch.agents.ppo import PPO, clipped_surrogate, clipped_value_loss
from threadpoolctl import threadpool_limits

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step, agent_config, resolve_agent
from rlscratch.config import ModelConfig, load_config
from rlscratch.on_policy import ActorCritic
from rlscratch.policy import entropy, log_prob, policy_gradient_loss, sample_categorical
from rlscratch.returns import bootstrapped_returns, gae_advantages
from rlscratch.rollout import RolloutBuffer
from rlscratch.trainer import train

GAMMA, LAM = 0.9, 0.8


# -- returns and advantages, by hand ------------------------------------------------------------------
def hand_rollout() -> RolloutBuffer:
    """Two envs, four steps. Env 0 terminates at t=1; env 1 is truncated at t=2 with V(final obs) = 10.
    Both then go on into new episodes within the same rollout."""
    buf = RolloutBuffer(4, 2, (1,), GAMMA, dtype=np.float64)
    rewards = [[1, 1], [2, 1], [3, 1], [4, 1]]
    terminated = [[False, False], [True, False], [False, False], [False, False]]
    truncated = [[False, False], [False, False], [False, True], [False, False]]
    for t in range(4):
        final_values = np.array([0.0, 10.0]) if any(truncated[t]) else None
        buf.add(np.zeros((2, 1)), np.zeros(2, dtype=np.int64), np.array(rewards[t], dtype=float),
                np.array(terminated[t]), np.array(truncated[t]), final_values)
    buf.values[...] = [[0.5, 2.0], [1.0, 2.0], [1.5, 2.0], [2.0, 2.0]]
    return buf


LAST_VALUES = np.array([3.0, 5.0])


def test_truncation_folds_the_final_value_into_the_reward():
    buf = hand_rollout()
    assert buf.full
    np.testing.assert_allclose(buf.rewards[:, 1], [1, 1, 1 + GAMMA * 10.0, 1])  # r + gamma V(final) at t=2
    np.testing.assert_allclose(buf.rewards[:, 0], [1, 2, 3, 4])  # a termination adds nothing
    np.testing.assert_array_equal(buf.dones, [[0, 0], [1, 0], [0, 1], [0, 0]])


def test_terminated_and_truncated_together_is_a_termination():
    buf = RolloutBuffer(1, 1, (1,), GAMMA)
    buf.add(np.zeros((1, 1)), np.zeros(1, dtype=np.int64), np.ones(1), np.array([True]), np.array([True]),
            np.array([10.0]))
    assert buf.rewards[0, 0] == 1.0 and buf.dones[0, 0] == 1.0


def test_gae_against_hand_computed_values():
    buf = hand_rollout()
    buf.compute_advantages(LAST_VALUES, LAM)
    # env 0 (terminated at t=1), gamma * lam = 0.72:
    #   t=3  TD = 4 + 0.9*3 - 2 = 4.7                      A = 4.7
    #   t=2  TD = 3 + 0.9*2 - 1.5 = 3.3                    A = 3.3 + 0.72*4.7 = 6.684
    #   t=1  TD = 2 - 1 = 1 (no V_{t+1} past the end)      A = 1 (nothing from t=2 either)
    #   t=0  TD = 1 + 0.9*1 - 0.5 = 1.4                    A = 1.4 + 0.72*1 = 2.12
    # env 1 (truncated at t=2, V(final) = 10, so r_2 = 1 + 0.9*10 = 10):
    #   t=3  TD = 1 + 0.9*5 - 2 = 3.5                      A = 3.5
    #   t=2  TD = 10 - 2 = 8                               A = 8
    #   t=1  TD = 1 + 0.9*2 - 2 = 0.8                      A = 0.8 + 0.72*8 = 6.56
    #   t=0  TD = 0.8                                      A = 0.8 + 0.72*6.56 = 5.5232
    expected = np.array([[2.12, 5.5232], [1.0, 6.56], [6.684, 8.0], [4.7, 3.5]])
    np.testing.assert_allclose(buf.advantages, expected, rtol=1e-12)
    np.testing.assert_allclose(buf.returns, expected + buf.values, rtol=1e-12)


def test_bootstrapped_returns_against_hand_computed_values():
    buf = hand_rollout()
    returns = bootstrapped_returns(buf.rewards, buf.dones, LAST_VALUES, GAMMA)
    # env 0: R3 = 4 + 0.9*3 = 6.7, R2 = 3 + 0.9*6.7 = 9.03, R1 = 2 (terminated), R0 = 1 + 0.9*2 = 2.8
    # env 1: R3 = 1 + 0.9*5 = 5.5, R2 = 10 (truncated: 1 + 0.9*V(final)), R1 = R0 = 1 + 0.9*10 = 10
    np.testing.assert_allclose(returns, [[2.8, 10.0], [2.0, 10.0], [9.03, 10.0], [6.7, 5.5]], rtol=1e-12)


def test_gae_with_lambda_one_is_the_n_step_advantage_and_zero_the_td_error(rng):
    T, N = 7, 3
    rewards, values, last = rng.standard_normal((T, N)), rng.standard_normal((T, N)), rng.standard_normal(N)
    dones = (rng.random((T, N)) < 0.3).astype(float)
    returns = bootstrapped_returns(rewards, dones, last, 0.97)
    np.testing.assert_allclose(gae_advantages(rewards, values, dones, last, 0.97, 1.0), returns - values, rtol=1e-12)
    next_values = np.vstack([values[1:], last[None]])
    td = rewards + 0.97 * next_values * (1 - dones) - values
    np.testing.assert_allclose(gae_advantages(rewards, values, dones, last, 0.97, 0.0), td, rtol=1e-12)


def cartpole_agent(cls=A2C, **overrides) -> A2C:
    env = gym.make("CartPole-v1")
    spec = EnvSpec(env.observation_space, env.action_space, num_envs=2)
    config = cls.Config(**{"n_steps": 3, "gamma": GAMMA, **overrides})
    return cls(config, spec, ModelConfig(hidden=[8], activation="tanh"), np.random.default_rng(0))


def test_agent_bootstraps_a_truncated_step_from_its_true_final_observation(rng):
    agent = cartpole_agent()
    obs, final_obs = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
    step = Step(obs, np.array([0, 1]), np.array([1.0, 1.0]), final_obs, terminated=np.array([True, False]),
                truncated=np.array([False, True]), info={})
    assert agent.observe(step) == {}  # the rollout is not full yet: no update
    v_final = agent.net.value(final_obs[1:])[0]
    np.testing.assert_allclose(agent.buffer.rewards[0], [1.0, 1.0 + GAMMA * v_final], rtol=1e-6)


# -- hand-derived gradients against finite differences --------------------------------------------
def tiny_policy(rng) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 6, rng, init="xavier", dtype=np.float64), nn.Tanh(),
                         nn.Linear(6, 4, rng, init="xavier", dtype=np.float64)).flatten()


def check_through_network(net: nn.Module, obs: np.ndarray, objective) -> float:
    """Max relative error of d objective(logits)/d params, backpropagated by hand through ``net``."""
    _, dlogits = objective(net(obs))
    net.zero_grad()
    net.backward(dlogits)
    analytic = net.flat_grads.copy()
    return nn.check_gradients(lambda: objective(net.infer(obs))[0], {"params": (net.flat_params, analytic)})["params"]


def test_policy_gradient_loss_gradient(rng):
    logits, actions, adv = rng.standard_normal((10, 4)), rng.integers(0, 4, 10), rng.standard_normal(10)
    loss, dlogits = policy_gradient_loss(logits, actions, adv)
    assert np.isclose(loss, -np.mean(adv * log_prob(logits, actions)))
    errors = nn.check_gradients(lambda: policy_gradient_loss(logits, actions, adv)[0], {"logits": (logits, dlogits)})
    assert errors["logits"] <= 1e-6
    net, obs = tiny_policy(rng), rng.standard_normal((10, 3))
    assert check_through_network(net, obs, lambda z: policy_gradient_loss(z, actions, adv)) <= 1e-6


def test_entropy_gradient(rng):
    logits = rng.standard_normal((10, 4)) * 2
    mean_entropy, dH = entropy(logits)
    p = nn.softmax(logits)
    assert np.isclose(mean_entropy, -np.mean(np.sum(p * np.log(p), axis=1)))
    assert nn.check_gradients(lambda: entropy(logits)[0], {"logits": (logits, dH)})["logits"] <= 1e-6
    assert check_through_network(tiny_policy(rng), rng.standard_normal((10, 3)), entropy) <= 1e-6


def test_ppo_clipped_surrogate_gradient_on_a_tiny_policy(rng):
    net, obs = tiny_policy(rng), rng.standard_normal((32, 3))
    actions, adv = rng.integers(0, 4, 32), rng.standard_normal(32)
    # The "old" policy: the same network with perturbed parameters, so the ratios spread across the
    # clip range -- some clipped on either side, some not.
    old = net.clone()
    old.flat_params += 0.15 * rng.standard_normal(old.flat_params.shape)
    old_logp = log_prob(old.infer(obs), actions)
    clip = 0.2
    ratio = np.exp(log_prob(net.infer(obs), actions) - old_logp)
    assert np.min(np.abs(np.abs(ratio - 1) - clip)) > 1e-3  # no ratio on a kink of the min/clip
    _, _, stats = clipped_surrogate(net.infer(obs), actions, old_logp, adv, clip)
    assert 0.2 < stats["clip_fraction"] < 0.8
    # The zero-gradient (clipped) side must really occur, or the test would not test it.
    unclipped, clipped = ratio * adv, np.clip(ratio, 1 - clip, 1 + clip) * adv
    assert np.any(clipped < unclipped) and np.any(unclipped < clipped)

    def objective(z):
        loss, dz, _ = clipped_surrogate(z, actions, old_logp, adv, clip)
        return loss, dz

    logits = net.infer(obs)
    dlogits = objective(logits)[1]
    assert nn.check_gradients(lambda: objective(logits)[0], {"logits": (logits, dlogits)})["logits"] <= 1e-6
    assert check_through_network(net, obs, objective) <= 1e-6


def test_ppo_clipped_value_loss_gradient(rng):
    B = 40
    old, returns = rng.standard_normal(B), rng.standard_normal(B)
    values = old + rng.uniform(-0.6, 0.6, B)
    values[np.abs(np.abs(values - old) - 0.2) < 1e-3] += 0.01  # stay off the clip's kinks
    loss, dvalues = clipped_value_loss(values, old, returns, 0.2)
    clipped = old + np.clip(values - old, -0.2, 0.2)
    assert np.isclose(loss, np.mean(np.maximum((values - returns) ** 2, (clipped - returns) ** 2)))
    assert np.any(dvalues == 0)  # the clipped, outside-the-range branch occurs
    errors = nn.check_gradients(lambda: clipped_value_loss(values, old, returns, 0.2)[0], {"values": (values, dvalues)})
    assert errors["values"] <= 1e-6


@pytest.mark.parametrize("shared", [False, True])
def test_a2c_loss_through_the_actor_critic_networks(rng, shared):
    """The whole A2C loss -- policy gradient, entropy, value -- carried back through both heads (and,
    shared, into one trunk) by ActorCritic.backward."""
    net = ActorCritic(3, 4, ModelConfig(hidden=[6, 5], activation="tanh"), rng, shared=shared).astype(np.float64)
    obs, actions = rng.standard_normal((9, 3)), rng.integers(0, 4, 9)
    adv, returns = rng.standard_normal(9), rng.standard_normal(9)

    def loss(logits, values):
        pg, dlogits = policy_gradient_loss(logits, actions, adv)
        h, dh = entropy(logits)
        v, dv = nn.mse(values, returns)
        return pg - 0.01 * h + 0.5 * v, dlogits - 0.01 * dh, 0.5 * dv

    _, dlogits, dvalues = loss(*net(obs))
    net.zero_grad()
    net.backward((dlogits, dvalues))
    # h = 1e-4: the 0.01-gain policy head leaves gradients of order 1e-6 in the layers below it, on
    # which the roundoff of h = 1e-6 differences (about 1e-10) is already a 1e-5 relative error.
    errors = nn.check_gradients(lambda: loss(*net.infer(obs))[0], {"params": (net.flat_params, net.flat_grads.copy())},
                                h=1e-4)
    assert errors["params"] <= 1e-6


def test_sampling_follows_the_policy(rng):
    logits = np.log(np.array([[0.1, 0.6, 0.3]] * 20000))
    counts = np.bincount(sample_categorical(logits, rng), minlength=3) / 20000
    np.testing.assert_allclose(counts, [0.1, 0.6, 0.3], atol=0.015)


# -- the agents in the training loop ---------------------------------------------------------------
def write_config(folder: Path, agent: dict, **sections) -> Path:
    data = {
        "env": {"id": "CartPole-v1", "num_envs": 4, "eval_num_envs": 4},
        "agent": agent,
        "model": {"hidden": [16], "activation": "tanh"},
        "train": {"total_steps": 1200, "eval_episodes": 4, "checkpoint_every": 400, "log_every": 200},
        "log": {"tensorboard": False},
        "seed": 5,
    }
    return write_yaml_config(folder, data, **sections)


@pytest.mark.parametrize("agent", [
    {"name": "a2c", "n_steps": 5, "gae_lambda": 0.95, "optim": {"lr": {"start": 7e-4, "end": 0.0, "steps": 1200}}},
    {"name": "ppo", "n_steps": 16, "batch_size": 24, "n_epochs": 3, "clip_range_vf": 0.2, "target_kl": 0.05},
])
def test_resume_in_the_middle_of_a_rollout_is_exact(tmp_path, agent):
    config, _ = load_config(str(write_config(tmp_path, agent)))
    full = train(config, tmp_path / "full")
    # 4 envs: stop at 708 = 177 vector steps, mid-rollout for both (177 % 5 = 2, 177 % 16 = 1)
    interrupted = train(config, tmp_path / "split", stop_at=708)
    assert interrupted["agent"].buffer.pos != 0  # a rollout in progress is checkpointed
    resumed = train(config, tmp_path / "split", resume=True)
    assert np.array_equal(resumed["agent"].net.flat_params, full["agent"].net.flat_params)
    assert resumed["eval_mean"] == full["eval_mean"]


@pytest.mark.parametrize("name", ["a2c_cartpole", "a2c_gae_cartpole", "a2c_gae_acrobot", "ppo_cartpole",
                                  "ppo_lunarlander", "a2c_mnist_bandit"])
def test_shipped_configs_validate(name):
    config, _ = load_config(str(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"))
    agent_config(resolve_agent(config.agent["name"]), config.agent)


def test_registered_names_and_async_envs(tmp_path):
    assert resolve_agent("a2c") is A2C and resolve_agent("ppo") is PPO
    config, _ = load_config(str(write_config(tmp_path, {"name": "a2c", "shared_network": True},
                                             env={"vectorization": "async", "num_envs": 2},
                                             train={"total_steps": 200, "checkpoint_every": 0})))
    summary = train(config, tmp_path / "async")
    assert summary["env_steps"] == 200 and summary["updates"] == 20


@pytest.mark.slow
def test_ppo_learns_cartpole(tmp_path):
    """A short seeded PPO run must balance the pole far beyond what random play does (about 22)."""
    config, _ = load_config(str(write_config(
        tmp_path, {"name": "ppo", "n_steps": 32, "batch_size": 256, "n_epochs": 20, "gamma": 0.98, "gae_lambda": 0.8,
                   "optim": {"name": "adam", "lr": {"start": 1e-3, "end": 0.0, "steps": 40000}},
                   "clip_range": {"start": 0.2, "end": 0.0, "steps": 40000}, "ent_coef": 0.0},
        env={"num_envs": 8, "eval_num_envs": 20}, model={"hidden": [64, 64]},
        train={"total_steps": 40000, "eval_episodes": 20, "checkpoint_every": 0})))
    with threadpool_limits(1):  # small matrices: a second BLAS thread only waits for a busy core
        summary = train(config, tmp_path / "learn")
    assert summary["eval_mean"] >= 195
