"""Logged and evaluated episode returns are the environment's own, even under a reward-changing
wrapper (envs/wrappers.py RecordEnvReward, placed under every configured wrapper by the factory);
the agent still learns from the wrapped reward."""

from pathlib import Path

import numpy as np

from rlscratch.config import load_config
from rlscratch.events import read_scalars
from rlscratch.trainer import Evaluator, load_trained_agent, train

HALVED = "env.wrappers=[{ClipReward: {min_reward: 0.0, max_reward: 0.5}}]"  # CartPole's 1 per step -> 0.5
QUICK = ["train.total_steps=600", "train.eval_every=300", "train.eval_episodes=3", "log.progress=false",
         "agent.learning_starts=64", "agent.train_freq=4", "agent.gradient_steps=8"]  # not the config's 128


def test_reward_wrapper_changes_learning_not_logged_or_evaluated_returns(tmp_path: Path):
    config, _ = load_config("dqn_cartpole", QUICK + [HALVED, f"log.root={tmp_path}"])
    summary = train(config, tmp_path / "run")
    assert summary["agent"] is not None
    scalars = read_scalars(tmp_path / "run")
    steps, returns = scalars["charts/episodic_return"]
    _, lengths = scalars["charts/episodic_length"]
    assert len(returns) > 5 and np.array_equal(returns, lengths)  # CartPole's own return: 1 per step survived
    # Evaluation: the same agent in the same seeded episodes, with and without the wrapper, scores the same.
    _, agent, normalizer = load_trained_agent(tmp_path / "run")
    wrapped = Evaluator(config, np.random.SeedSequence(5), normalizer).run(agent, 3).returns
    plain_config, _ = load_config("dqn_cartpole", QUICK)
    plain = Evaluator(plain_config, np.random.SeedSequence(5), normalizer).run(agent, 3).returns
    assert np.array_equal(wrapped, plain) and np.all(wrapped == np.round(wrapped)) and wrapped.min() >= 8


def test_agent_learns_from_the_wrapped_reward():
    from rlscratch.envs.factory import make_vec_env

    from rlscratch.collector import Collector

    config, _ = load_config("dqn_cartpole", [HALVED])
    envs = make_vec_env(config.env)
    collector = Collector(envs, [0], None)
    step, _ = collector.step(np.array([0]))
    envs.close()
    assert step.reward.tolist() == [0.5] and collector.episode_return.tolist() == [1.0]
