"""TD(lambda)'s pieces computed by hand: discounted Monte-Carlo returns, the episode recorder's error, the
mean over parallel envs in the update and its metrics, the behaviour policy, and the held-out prediction
error -- the one-line changes mutation testing (benchmarks/mutation.sh) asks a test to notice."""

import gymnasium as gym
import numpy as np
import pytest
from conftest import with_optim
from rlscratch.agents.td import (
    TD,
    BehaviourPolicy,
    EligibilityTraces,
    EpisodeRecorder,
    TDConfig,
    discounted_returns,
    main,
    prediction_error,
)
from rlscratch.envs.factory import make_env
from rlscratch.envs.random_walk import RandomWalk, random_walk_true_values

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step
from rlscratch.config import ModelConfig, load_config
from rlscratch.errors import ConfigError
from rlscratch.models import mlp
from rlscratch.trainer import load_trained_agent, train


def make_td(n_states: int = 5, num_envs: int = 1, **config) -> TD:
    env = RandomWalk(n_states)
    spec = EnvSpec(env.observation_space, env.action_space, num_envs)
    return TD(TDConfig(**with_optim(config)), spec, ModelConfig(hidden=[8], activation="tanh"),
              np.random.default_rng(0))


def test_discounted_returns_by_hand():
    assert discounted_returns(np.array([1.0, 2.0, 4.0]), 0.5).tolist() == [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4]
    assert discounted_returns(np.array([], dtype=float), 0.5).tolist() == []


def test_episode_recorder_scores_terminated_episodes_only():
    recorder = EpisodeRecorder(num_envs=2, gamma=0.5)
    # env 0: values 1, 2 then terminates with rewards 2, 4 -> returns 4, 4;  env 1 is truncated: not scored
    assert recorder.add(np.array([1.0, 7.0]), np.array([2.0, 1.0]), np.array([False, False]),
                        np.array([False, False])) is None
    error = recorder.add(np.array([2.0, 9.0]), np.array([4.0, 1.0]), np.array([True, False]), np.array([False, True]))
    assert error == pytest.approx(np.sqrt(((1 - 4) ** 2 + (2 - 4) ** 2) / 2))
    # both envs start afresh: env 1's truncated episode left nothing behind
    error = recorder.add(np.array([0.0, 3.0]), np.array([1.0, 1.0]), np.array([True, True]), np.array([False, False]))
    assert error == pytest.approx(np.sqrt(((0 - 1) ** 2 + (3 - 1) ** 2) / 2))


def test_two_env_update_takes_the_mean_over_envs():
    """gamma 0.5, lambda 0, alpha 0.5, V = (0, 1, 2, 3, 4) on one-hot states. Env 0: 1 -> 2, reward 1;
    env 1: 3 -> terminal (terminated), reward -1.
        delta_0 = 1 + 0.5 * V(2) - V(1) = 1 + 1 - 1 = 1          z_0 = e1
        delta_1 = -1 + 0 - V(3) = -4                              z_1 = e3
        w += alpha * (delta_0 z_0 + delta_1 z_1) / 2  ->  w1 = 1 + 0.25,  w3 = 3 - 1
    """
    agent = make_td(num_envs=2, lr=0.5, gamma=0.5, lam=0.0)
    agent.value.flat_params = [0.0, 1.0, 2.0, 3.0, 4.0]
    e = np.eye(5, dtype=np.float32)
    step = Step(np.stack([e[0 + 1], e[3]]), np.zeros(2, np.int64), np.array([1.0, -1.0]),
                np.stack([e[2], np.zeros(5, np.float32)]), np.array([False, True]), np.array([False, False]), {})
    metrics = agent.observe(step)
    assert np.allclose(agent.value.flat_params, [0.0, 1.25, 2.0, 2.0, 4.0])
    assert metrics["td/error"] == pytest.approx((1 - 4) / 2) and metrics["td/abs_error"] == pytest.approx(5 / 2)
    assert np.array_equal(agent.traces.z, [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])  # only env 1's trace is cleared
    assert agent.updates == 1
    agent.observe(step)
    assert agent.updates == 2


def test_rms_error_and_predictions_of_a_linear_value():
    agent = make_td(n_states=5)
    agent.value.flat_params = [1.0, 0.0, 0.0, 0.0, -1.0]
    states = np.eye(5, dtype=np.float32)
    assert agent.predict_episode(states[[0, 4, 2]]).tolist() == [1.0, -1.0, 0.0]
    assert agent.rms_error(states, np.zeros(5)) == pytest.approx(np.sqrt(2 / 5))
    assert agent.rms_error(states, np.array([1.0, 0.0, 0.0, 0.0, 1.0])) == pytest.approx(np.sqrt(4 / 5))


def test_mlp_value_and_adam_are_built_when_asked():
    agent = make_td(value="mlp", optimizer="adam")
    assert isinstance(agent.optimizer, nn.Adam) and agent.value.num_params() == 5 * 8 + 8 + 8 + 1
    rng = np.random.default_rng(0)
    rng.spawn(1)  # the agent's evaluation generator, spawned first: the bit stream is untouched
    value_head = mlp(5, 1, ModelConfig(hidden=[8], activation="tanh"), rng, output_gain=1.0)  # a value head's gain
    assert np.array_equal(agent.value.flat_params, value_head.flat_params)
    assert agent.traces.z.dtype == agent.value.dtype == np.float32
    assert agent.spec.num_envs == 1 and agent.model_config.hidden == [8]  # kept for checkpoints and evaluation
    assert isinstance(make_td().optimizer, nn.SGD) and make_td().value.num_params() == 5  # w only, no bias
    assert not make_td().value.flat_params.any()  # the table starts at V = 0


def test_behaviour_policy_normalises_and_validates():
    policy = BehaviourPolicy(gym.spaces.Discrete(2), [1.0, 3.0])
    assert policy.probs.tolist() == [0.25, 0.75]
    draws = policy.sample(20_000, np.random.default_rng(0))
    assert draws.dtype == np.int64 and abs(draws.mean() - 0.75) < 0.01
    assert BehaviourPolicy(gym.spaces.Discrete(4), None).probs.tolist() == [0.25] * 4
    single = BehaviourPolicy(gym.spaces.Discrete(1), None).sample(3, np.random.default_rng(0))
    assert single.tolist() == [0, 0, 0] and single.dtype == np.int64
    assert BehaviourPolicy(gym.spaces.Discrete(2), [0.0, 1.0]).probs.tolist() == [0.0, 1.0]  # a zero is allowed
    for bad in ([1.0], [1.0, -1.0], [2.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ConfigError, match=r"agent.action_probs: expected 2 non-negative numbers"):
            BehaviourPolicy(gym.spaces.Discrete(2), bad)
    with pytest.raises(ConfigError, match="discrete action space"):
        BehaviourPolicy(gym.spaces.Box(0, 1, (1,)), None)


def test_acting_for_evaluation_leaves_the_training_stream_alone():
    """Two actions (so acting draws random numbers): evaluation draws from eval_rng, training (the default)
    from rng."""
    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Discrete(2), 1)
    agent = TD(TDConfig(), spec, ModelConfig(hidden=[]), np.random.default_rng(0))
    rng, eval_rng = agent.rng.bit_generator.state, agent.eval_rng.bit_generator.state
    agent.act(np.zeros((3, 3)), explore=False)
    assert agent.rng.bit_generator.state == rng and agent.eval_rng.bit_generator.state != eval_rng
    eval_rng = agent.eval_rng.bit_generator.state
    agent.act(np.zeros((3, 3)))
    assert agent.rng.bit_generator.state != rng and agent.eval_rng.bit_generator.state == eval_rng


def test_traces_decay_add_clear_and_reject_a_foreign_shape():
    traces = EligibilityTraces(num_envs=2, size=3, dtype=np.float64)
    traces.decay_and_add(0.5, np.array([[1.0, 0, 0], [0, 2.0, 0]]))
    z = traces.decay_and_add(0.5, np.array([[1.0, 0, 0], [0, 0, 4.0]]))
    assert z.tolist() == [[1.5, 0, 0], [0, 1.0, 4.0]]
    traces.clear(np.array([False, True]))
    assert traces.z.tolist() == [[1.5, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"traces of shape \(1, 3\) cannot load into \(2, 3\)"):
        traces.load_state_dict({"z": np.zeros((1, 3))})


def test_prediction_error_on_held_out_walks():
    """gamma 1 on the walk: every return is the final reward, +-1, so V = 0 is off by exactly 1 everywhere;
    V = the true values has zero error against them."""
    agent = make_td(n_states=5, gamma=1.0)
    env = RandomWalk(5)
    assert prediction_error(agent, env, episodes=5, seed=0) == pytest.approx(1.0)
    agent.value.flat_params = random_walk_true_values(5)
    assert prediction_error(agent, env, episodes=5, seed=0, against="true_values") == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="against must be 'returns' or 'true_values', got 'values'"):
        prediction_error(agent, env, episodes=1, seed=0, against="values")


def test_prediction_error_plays_each_seed_with_its_own_generator():
    """The spec written out: episode k resets with seed + k, actions come from default_rng(seed) through the
    behaviour policy, and V(s_t) is compared with the discounted return that followed (CartPole: 2 actions)."""
    env = gym.make("CartPole-v1")
    spec = EnvSpec(env.observation_space, env.action_space, 1)
    agent = TD(TDConfig(gamma=0.9, action_probs=[0.3, 0.7]), spec, ModelConfig(hidden=[]), np.random.default_rng(0))
    agent.value.flat_params = [0.5, -1.0, 2.0, 0.25]
    rng, errors = np.random.default_rng(11), []
    for k in range(3):
        obs, _ = env.reset(seed=11 + k)
        observations, rewards, done = [obs], [], False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(rng.choice(2, p=[0.3, 0.7])))
            rewards.append(reward)
            done = terminated or truncated
            if not done:
                observations.append(obs)
        values = np.asarray(observations) @ np.array([0.5, -1.0, 2.0, 0.25])
        errors.append(values - discounted_returns(np.asarray(rewards), 0.9))
    expected = np.sqrt(np.mean(np.concatenate(errors) ** 2))
    assert prediction_error(agent, env, episodes=3, seed=11) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"^the env does not report info\['true_value'\]; use against='returns'$"):
        prediction_error(agent, env, episodes=1, seed=0, against="true_values")


def test_prediction_error_skips_truncated_episodes():
    """Five states, cut after 4 steps: an episode ends in 3 steps (terminated) or is truncated and skipped.
    With V = 0 and gamma 1 every scored error is the final reward, +-1."""
    agent = make_td(n_states=5, gamma=1.0)
    walks = gym.wrappers.TimeLimit(RandomWalk(5), max_episode_steps=4)
    ends = []
    for seed in range(6):
        walks.reset(seed=seed)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = walks.step(0)
        ends.append(terminated)
    first = ends.index(True)
    assert first > 0, ends  # a truncated episode comes first: the function must skip it, not stop
    assert prediction_error(agent, walks, episodes=first + 1, seed=0) == 1.0
    short = gym.wrappers.TimeLimit(RandomWalk(5), max_episode_steps=2)  # too short to ever terminate
    with pytest.raises(ValueError, match=r"^every held-out episode was truncated: no Monte-Carlo return to "
                                         r"compare with$"):
        prediction_error(agent, short, episodes=3, seed=0)


def test_checkpoint_names_of_the_td_agent():
    """Checkpoints store components by these names: renaming one would orphan every saved run."""
    assert set(make_td().components()) == {"rng", "eval_rng", "value", "optimizer", "traces"}


def test_command_line_prints_the_held_out_error_of_the_latest_checkpoint(tmp_path, capsys):
    config, _ = load_config("td_lambda_random_walk", ["train.total_steps=300", f"log.root={tmp_path}",
                                                      "log.tensorboard=false", "log.progress=false"])
    run = tmp_path / "run"
    train(config, run)
    capsys.readouterr()  # the training log
    _, agent, _ = load_trained_agent(run)
    for against, words in (("true_values", "true values"), ("returns", "returns")):
        main([str(run), "--episodes", "4", "--against", against, "--seed", "7"])
        expected = prediction_error(agent, make_env(config.env, evaluation=True), 4, 7, against)
        assert 0 < expected < 1
        assert capsys.readouterr().out == f"{run}: RMS error against {words} over 4 held-out episodes: {expected:.4f}\n"
    main([str(run)])  # the defaults: 1,000 episodes from seed 10^6, against the Monte-Carlo returns
    expected = prediction_error(agent, make_env(config.env, evaluation=True), 1000, 10**6, "returns")
    assert capsys.readouterr().out == f"{run}: RMS error against returns over 1000 held-out episodes: {expected:.4f}\n"
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--against", "values"])
    assert exit_info.value.code == 2 and "invalid choice: 'values'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    usage = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert exit_info.value.code == 0 and usage.startswith("usage: python -m rlscratch.agents.td ")
    assert "RMS value-prediction error of a trained td/td_gru run on held-out episodes (its latest checkpoint)" in usage
    assert "first reset seed of the held-out episodes" in usage


def test_an_episode_end_with_true_values_reports_the_rms_error_after_the_update():
    """The random walk's terminal info carries every state's true value; env 1 of 2 ends here. V after the
    update: w = (0, 0.25, 0, 0, 0) (delta = 1 at state 2, alpha 1/2, halved by the mean over 2 envs)."""
    agent = make_td(num_envs=2, lr=0.5, gamma=1.0, lam=0.0)
    e = np.eye(5, dtype=np.float32)
    true_values = np.array([-2, -1, 0, 1, 2]) / 3
    info = {"true_values": np.array([None, true_values], dtype=object), "_true_values": np.array([False, True]),
            "state_observations": np.array([None, np.eye(5)], dtype=object)}
    step = Step(np.stack([e[0], e[1]]), np.zeros(2, np.int64), np.array([0.0, 1.0]),
                np.stack([e[1], np.zeros(5, np.float32)]), np.array([False, True]), np.array([False, False]), info)
    metrics = agent.observe(step)
    assert np.allclose(agent.value.flat_params, [0, 0.25, 0, 0, 0])
    expected = np.sqrt(np.mean((np.array([0, 0.25, 0, 0, 0]) - true_values) ** 2))
    assert metrics["value/rms_error"] == pytest.approx(expected)
