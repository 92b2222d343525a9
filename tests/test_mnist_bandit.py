"""MNIST as a one-step contextual bandit: the environment (API, semantics, seeded order, exact-resume
state), the bandit agents (the policy gradient against finite differences, a learning test) and a
short end-to-end training run that logs the cumulative regret.

These tests use real MNIST, found as the library finds it ($RLSCRATCH_DATA, then the per-user cache);
on a machine with no copy the fixture fetches one into the cache first, as a user would, never skips.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import write_config as write_yaml_config
from gymnasium.utils.env_checker import check_env
from threadpoolctl import threadpool_limits

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step, agent_config, resolve_agent
from rlscratch.config import ModelConfig, load_config
from rlscratch.data import DataError, fetch_mnist, find_mnist, load_mnist, scale_images
from rlscratch.trainer import train

ENV_ID = "rlscratch/MNISTBandit-v0"
AGENTS = ("epsilon_greedy_bandit", "policy_gradient_bandit", "linucb_bandit")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module", autouse=True)
def real_mnist() -> Path:
    """Where the library finds real MNIST; fetched into the per-user cache if there is none yet."""
    try:
        return find_mnist()
    except DataError:
        return fetch_mnist(progress=False)


def make(**kwargs) -> gym.Env:
    import rlscratch.envs  # noqa: F401 - registers the id

    return gym.make(ENV_ID, **kwargs)


def play(env: gym.Env, rounds: int, action: int = 0) -> list[tuple[np.ndarray, float, dict]]:
    """``rounds`` rounds from the env's current image: (observation, reward, info) of each step."""
    out = []
    for _ in range(rounds):
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, info))
        env.reset()
    return out


def next_index(env: gym.Env) -> int:
    """Start the next round; the position in the split of its image."""
    env.reset()
    return env.index


# -- the environment -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"flat": False, "split": "test", "order": "sequential"}])
def test_env_checker_passes(kwargs):
    env = make(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning from the checker is a failure too
        check_env(env.unwrapped)
    shape = (784,) if kwargs.get("flat", True) else (1, 28, 28)
    assert env.observation_space.shape == shape and env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Discrete(10)


def test_observation_is_the_scaled_image_and_label_only_in_info():
    images, labels = load_mnist("test")
    env = make(split="test", order="sequential")
    obs, reset_info = env.reset(seed=0)
    assert "label" not in reset_info and "regret" not in reset_info
    assert np.array_equal(obs, scale_images(images[:1])[0])  # the pixels, nothing else
    assert obs.min() >= 0.0 and obs.max() <= 1.0
    _, _, _, _, info = env.step(0)
    assert info["label"] == labels[0]

    image_env = make(split="test", order="sequential", flat=False)
    image_obs, _ = image_env.reset(seed=0)
    assert np.array_equal(image_obs, scale_images(images[:1], "nchw")[0])


def test_reward_is_one_exactly_for_the_label_and_every_episode_is_one_step():
    _, labels = load_mnist("test")
    env = make(split="test", order="sequential")
    for action in range(10):
        env.reset(seed=0)
        _, reward, terminated, truncated, info = env.step(action)
        assert reward == float(action == labels[0]) and info["regret"] == 1.0 - reward
        assert terminated is True and truncated is False
    with pytest.raises(ValueError, match="action must be"):
        env.unwrapped.step(10)


def test_sequential_order_walks_the_split_and_each_evaluation_restarts_it():
    _, labels = load_mnist("test")
    env = make(split="test", order="sequential")
    env.reset(seed=1)
    seen = [info["label"] for _, _, info in play(env, 50)]
    assert seen == labels[:50].tolist()
    env.reset(seed=2)  # a seeded reset (each evaluation's first) starts from image 0 again
    assert [info["label"] for _, _, info in play(env, 5)] == labels[:5].tolist()


def test_shuffled_order_is_seeded_and_each_pass_is_a_permutation():
    def labels_of(seed: int, rounds: int) -> list[int]:
        env = make(split="test")
        env.reset(seed=seed)
        return [info["label"] for _, _, info in play(env, rounds)]

    assert labels_of(7, 100) == labels_of(7, 100)
    assert labels_of(7, 100) != labels_of(8, 100)

    env = make(split="test").unwrapped
    env.reset(seed=3)
    first_pass = [env.index] + [next_index(env) for _ in range(9_999)]
    assert sorted(first_pass) == list(range(10_000))  # every image exactly once per pass
    second_pass = [next_index(env) for _ in range(100)]
    assert second_pass != first_pass[:100]  # a new order for the next pass


def test_get_state_set_state_resumes_exactly():
    env = make().unwrapped
    env.reset(seed=11)
    play(env, 25)
    env.step(3)
    # What the collector saves when a round ends, just before the reset that starts the next one:
    state, rng_state = env.get_state(), env.np_random.bit_generator.state
    assert len(json.dumps(state)) < 200  # captured before every reset: it must stay tiny
    env.reset()
    expected = play(env, 10, action=3)

    other = make().unwrapped
    other.reset(seed=999)
    play(other, 3)
    other.set_state(json.loads(json.dumps(state)))  # through JSON, as in a checkpoint
    other.np_random.bit_generator.state = rng_state
    other.reset()
    for (obs_a, r_a, info_a), (obs_b, r_b, info_b) in zip(expected, play(other, 10, action=3)):
        assert np.array_equal(obs_a, obs_b) and r_a == r_b and info_a == info_b


def test_get_state_crosses_pass_boundaries():
    env = make(split="test").unwrapped
    env.reset(seed=5)
    for _ in range(9_998):
        env.reset()
    state = env.get_state()
    after = [next_index(env) for _ in range(4)]  # crosses into the second pass, in a new order
    env.set_state(state)
    assert [next_index(env) for _ in range(4)] == after


# -- the agents ----------------------------------------------------------------------------------------
def test_policy_gradient_loss_matches_finite_differences():
    from rlscratch.agents.policy_gradient_bandit import reinforce_loss as policy_gradient_loss

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 10))
    actions = rng.integers(0, 10, 6)
    weights = rng.standard_normal(6)  # rho (r - b): any constants
    for entropy_coef in (0.0, 0.3):
        _, analytic = policy_gradient_loss(logits, actions, weights, entropy_coef)
        errors = nn.check_gradients(lambda c=entropy_coef: policy_gradient_loss(logits, actions, weights, c)[0],
                                    {"logits": (logits, analytic)})
        assert errors["logits"] <= 1e-6, errors


@pytest.mark.parametrize("reward_model", ["softmax", "independent"])
def test_reward_regression_gradient_matches_finite_differences(reward_model):
    from rlscratch.bandit import reward_regression_loss

    rng = np.random.default_rng(2)
    outputs = rng.standard_normal((7, 10))
    actions = rng.integers(0, 10, 7)
    rewards = rng.integers(0, 2, 7).astype(np.float64)
    _, analytic = reward_regression_loss(outputs, actions, rewards, reward_model)
    errors = nn.check_gradients(lambda: reward_regression_loss(outputs, actions, rewards, reward_model)[0],
                                {"outputs": (outputs, analytic)})
    assert errors["outputs"] <= 1e-6, errors
    if reward_model == "independent":  # only the taken arm's output has a target
        untaken = np.ones_like(outputs, dtype=bool)
        untaken[np.arange(7), actions] = False
        assert not analytic[untaken].any()


def test_random_shift_translates_each_image_by_its_own_offset():
    """Every output is its input moved by some (dy, dx) in {-k..k}^2 with zeros shifted in, checked
    against an explicit slice-by-slice shift; over a batch every offset turns up."""
    from rlscratch.bandit import random_shift

    rng = np.random.default_rng(0)
    k, n = 2, 400
    images = rng.random((n, 1, 6, 5)).astype(np.float32)
    out = random_shift(images.reshape(n, -1), (1, 6, 5), k, np.random.default_rng(1)).reshape(images.shape)
    assert out.dtype == np.float32

    def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
        moved = np.zeros_like(image)
        moved[:, max(dy, 0):6 + min(dy, 0), max(dx, 0):5 + min(dx, 0)] = \
            image[:, max(-dy, 0):6 + min(-dy, 0), max(-dx, 0):5 + min(-dx, 0)]
        return moved

    offsets = set()
    for image, result in zip(images, out):
        matches = [(dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1)
                   if np.array_equal(result, shifted(image, dy, dx))]
        assert len(matches) == 1, matches  # random pixels: exactly one offset explains the output
        offsets.add(matches[0])
    assert len(offsets) == (2 * k + 1) ** 2
    assert np.array_equal(random_shift(images.reshape(n, -1), (1, 6, 5), 0, rng), images.reshape(n, -1))


def test_augmentation_needs_image_observations():
    from rlscratch.errors import ConfigError

    cls = resolve_agent("epsilon_greedy_bandit")
    config = agent_config(cls, {"name": "epsilon_greedy_bandit", "augment_shift": 1})
    flat_spec = EnvSpec(gym.spaces.Box(0.0, 1.0, (784,), np.float32), gym.spaces.Discrete(10), 1)
    with pytest.raises(ConfigError, match="flat: false"):
        cls(config, flat_spec, ModelConfig(hidden=[8]), np.random.default_rng(0))


def test_policy_gradient_through_the_network_matches_finite_differences():
    """The same loss backpropagated through a small float64 MLP, checked parameter by parameter."""
    from rlscratch.agents.policy_gradient_bandit import reinforce_loss as policy_gradient_loss

    from rlscratch.bandit import build_net

    rng = np.random.default_rng(1)
    net = build_net(12, 4, ModelConfig(hidden=[8], activation="tanh"), rng, output_gain=1.0).astype(np.float64)
    x = rng.standard_normal((5, 12))
    actions = rng.integers(0, 4, 5)
    weights = rng.random(5) - 0.5

    def loss() -> float:
        return policy_gradient_loss(net.infer(x), actions, weights, 0.1)[0]

    _, dlogits = policy_gradient_loss(net(x), actions, weights, 0.1)
    net.zero_grad()
    net.backward(dlogits)
    wrt = {name: (owner.params[key], owner.grads[key].copy()) for name, owner, key in net.named_params()}
    errors = nn.check_gradients(loss, wrt)
    assert max(errors.values()) <= 1e-6, errors


def run_rounds(agent_name: str, params: dict, rounds: int, hidden: list[int], seed: int = 0,
               num_envs: int = 1, obs_shape: tuple[int, ...] = (784,), agents: list | None = None) -> np.ndarray:
    """Play ``rounds`` training rounds directly (no env wrappers): the reward of each round. Every round
    must get one valid guess per env; the agent is appended to ``agents`` if given."""
    images, labels = load_mnist("train")
    order = np.random.default_rng(seed).permutation(len(labels))[:rounds]
    x, y = scale_images(images[order]).reshape(rounds, *obs_shape), labels[order].astype(np.int64)
    cls = resolve_agent(agent_name)
    spec = EnvSpec(gym.spaces.Box(0.0, 1.0, obs_shape, np.float32), gym.spaces.Discrete(10), num_envs)
    agent = cls(agent_config(cls, {"name": agent_name, **params}), spec, ModelConfig(hidden=hidden),
                np.random.default_rng(seed))
    if agents is not None:
        agents.append(agent)
    rewards = []
    # Small matrices: a second BLAS thread only waits for a busy core (many times slower on a shared machine).
    with threadpool_limits(1):
        for t in range(0, rounds, num_envs):
            obs = x[t:t + num_envs]
            action = agent.act(obs)
            assert action.shape == (len(obs),) and np.isin(action, np.arange(10)).all(), action
            reward = (action == y[t:t + num_envs]).astype(np.float64)
            done = np.ones(len(action), dtype=bool)
            agent.observe(Step(obs, action, reward, obs, done, ~done, {}))
            rewards.extend(reward)
    return np.array(rewards)


@pytest.mark.slow
def test_a_bandit_agent_learns_mnist_from_reward_alone():
    """Random guessing is right 10% of the time; from the reward alone the agent passes 60% online
    accuracy within 2,000 rounds (small network, seeded: a few seconds; measured: 78% on rounds
    1,000-2,000)."""
    rewards = run_rounds("linucb_bandit", {"batch_size": 32, "refresh_every": 250, "replay_size": 2000},
                         rounds=2000, hidden=[64])
    assert rewards[1000:].mean() > 0.6, rewards[1000:].mean()


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("agent_name", AGENTS)
def test_every_agent_runs_with_parallel_envs(agent_name, augment):
    """Four envs a round: one valid guess per env (run_rounds checks it), and the updates reach the network."""
    params = {"batch_size": 16, "augment_shift": int(augment)}
    if agent_name == "linucb_bandit":
        params["refresh_every"] = 50
    agents = []
    run_rounds(agent_name, params, rounds=200, hidden=[16], num_envs=4, obs_shape=(1, 28, 28) if augment else (784,),
               agents=agents)
    untrained = resolve_agent(agent_name)(agent_config(resolve_agent(agent_name), {"name": agent_name, **params}),
                                          agents[0].spec, ModelConfig(hidden=[16]), np.random.default_rng(0))
    def weights(agent) -> np.ndarray:  # every network the agent checkpoints
        return np.concatenate([c.flat_params for c in agent.components().values() if isinstance(c, nn.Module)])

    assert not np.array_equal(weights(agents[0]), weights(untrained))


# -- the configs and the training loop ------------------------------------------------------------------
class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load keeps the last of two equal keys silently; this refuses them."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {key for key in keys if keys.count(key) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep)


@pytest.mark.parametrize("agent_name", AGENTS)
def test_shipped_configs_validate(agent_name):
    path = CONFIGS / f"{agent_name}_mnist.yaml"
    yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # no key written twice (the last would win unseen)
    config, _ = load_config(str(path))
    assert config.agent["name"] == agent_name and config.env.id == ENV_ID
    assert config.env.kwargs["split"] == "train" and config.train.total_steps == 60_000
    assert config.env.eval_kwargs == {"split": "test", "order": "sequential"}
    assert config.train.eval_episodes == 10_000 and config.env.eval_num_envs == 1
    agent_config(resolve_agent(agent_name), config.agent)


def short_config(tmp_path: Path, agent_name: str, **agent) -> Path:
    data = {
        "env": {"id": ENV_ID, "num_envs": 2, "kwargs": {"split": "train"},
                "eval_kwargs": {"split": "test", "order": "sequential"}},
        "agent": {"name": agent_name, "batch_size": 16, "replay_size": 500, **agent},
        "model": {"hidden": [16]},
        "train": {"total_steps": 600, "eval_every": 300, "eval_episodes": 50, "checkpoint_every": 200,
                  "log_every": 100},
        "seed": 2,
    }
    return write_yaml_config(tmp_path, data, f"{agent_name}.yaml")


def test_training_run_logs_cumulative_regret(tmp_path):
    from rlscratch.events import read_scalars

    config, _ = load_config(str(short_config(tmp_path, "epsilon_greedy_bandit")))
    with threadpool_limits(1):
        summary = train(config, tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    steps, regret = scalars["charts/cumulative_regret"]
    assert list(steps) == [100, 200, 300, 400, 500, 600]
    assert np.all(np.diff(regret) >= 0) and regret[-1] == summary["cumulative_regret"]
    assert 0 < regret[-1] <= 600
    # The episodic return of a round is its reward, so regret + rewards = rounds.
    _, returns = scalars["charts/episodic_return"]
    assert len(returns) == 600 and regret[-1] == 600 - returns.sum()
    # Evaluation: greedy accuracy on the first 50 test images, the same images every time.
    eval_steps, accuracy = scalars["eval/mean_return"]
    images, labels = load_mnist("test")
    greedy = summary["agent"].act(scale_images(images[:50]).reshape(50, -1), explore=False)
    assert list(eval_steps) == [300, 600] and accuracy[-1] == pytest.approx((greedy == labels[:50]).mean())


def test_resume_is_exact(tmp_path):
    """Interrupted and resumed (mid-pass, off the checkpoint grid) = uninterrupted: same data order,
    same agent state. LinUCB carries the most state (replay, frozen features, arm regressions)."""
    config, _ = load_config(str(short_config(tmp_path, "linucb_bandit", refresh_every=100)))
    with threadpool_limits(1):
        full = train(config, tmp_path / "full")
        interrupted = train(config, tmp_path / "split", stop_at=350)
        assert interrupted["interrupted"]
        resumed = train(config, tmp_path / "split", resume=True)
    assert np.array_equal(resumed["agent"].net.flat_params, full["agent"].net.flat_params)
    assert np.array_equal(resumed["agent"].precisions.inverse, full["agent"].precisions.inverse)
    assert resumed["cumulative_regret"] == full["cumulative_regret"]
    assert resumed["eval_mean"] == full["eval_mean"]
