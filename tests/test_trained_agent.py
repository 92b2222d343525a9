"""rlscratch.load(run_dir): the agent a run trained, acting on one observation or a batch exactly as
the training loop's greedy policy did -- one short run per agent type."""

from pathlib import Path

import numpy as np
import pytest
from rlscratch.envs.factory import make_vec_env

import rlscratch
from rlscratch.config import load_config
from rlscratch.trainer import train

QUICK = ["train.eval_every=0", "train.eval_episodes=2", "train.checkpoint_every=0", "log.tensorboard=false",
         "log.progress=false"]
MUZERO = ["agent.num_simulations=4", "agent.batch_size=16", "agent.warmup_steps=64", "env.eval_num_envs=1",
          "train.total_steps=256", "agent.unroll_steps=2", "agent.td_steps=3"]
BANDIT = ["train.total_steps=160", "train.eval_episodes=20", "agent.batch_size=16"]
CASES = {
    "dqn": ("dqn_cartpole", ["train.total_steps=400", "agent.learning_starts=64", "agent.train_freq=4",
            "agent.gradient_steps=1"]),
    "a2c (observation normaliser)": ("a2c_gae_acrobot", ["train.total_steps=512", "env.num_envs=4",
                                                         "env.eval_num_envs=2"]),
    "ppo": ("ppo_cartpole", ["train.total_steps=512", "env.num_envs=4", "env.eval_num_envs=2"]),
    "td": ("td_random_walk", ["train.total_steps=300"]),
    "td_gru": ("td_gru_random_walk_moves", ["train.total_steps=256"]),
    "epsilon_greedy_bandit": ("epsilon_greedy_bandit_mnist", BANDIT),
    "policy_gradient_bandit": ("policy_gradient_bandit_mnist", BANDIT),
    "linucb_bandit": ("linucb_bandit_mnist", BANDIT + ["agent.refresh_every=50"]),
    "muzero": ("muzero_cartpole", MUZERO),
    "gumbel_muzero": ("gumbel_muzero_cartpole", MUZERO),
}


def observations(config, n: int = 12) -> np.ndarray:
    """A batch of real observations from the run's evaluation env, under random actions."""
    envs = make_vec_env(config.env, evaluation=True)
    obs, _ = envs.reset(seed=7)
    batch = [obs]
    rng = np.random.default_rng(0)
    while sum(len(b) for b in batch) < n:
        action = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        rng.random()
        obs, _, terminated, truncated, _ = envs.step(action)
        if (terminated | truncated).any():
            obs, _ = envs.reset(seed=int(rng.integers(1 << 30)))
        batch.append(obs)
    envs.close()
    return np.concatenate(batch)[:n]


def run(tmp_path: Path, name: str, overrides: list[str]):
    config, _ = load_config(name, overrides + QUICK + [f"log.root={tmp_path}"])
    summary = train(config, tmp_path / "run")
    return config, summary["agent"], rlscratch.load(tmp_path / "run")


@pytest.mark.parametrize("case", list(CASES))
def test_loaded_agent_acts_like_the_trained_one(tmp_path, case):
    name, overrides = CASES[case]
    config, trained, loaded = run(tmp_path, name, overrides)
    assert trained.updates > 0, "the run must learn something, or a fresh agent would pass too"
    assert loaded.agent.updates == trained.updates
    obs = observations(config)
    normalize = (lambda o: o) if loaded.normalizer is None else loaded.normalizer.normalize
    if "normaliser" in case:
        assert loaded.normalizer is not None and np.abs(loaded.normalizer.state_dict()["mean"]).max() > 0
    # the greedy policy, batch and single: the loaded agent draws on the same random state as the trained one
    np.testing.assert_array_equal(loaded.act(obs), trained.act(normalize(obs), explore=False))
    single = loaded.act(obs[0])
    assert np.shape(single) == np.shape(trained.act(normalize(obs[:1]), explore=False)[0])
    assert single == trained.act(normalize(obs[:1]), explore=False)[0]


def test_loaded_supervised_classifier_matches_the_trained_net(tmp_path):
    config, trained, loaded = run(tmp_path, "supervised_mnist", ["agent.epochs=1"])
    from rlscratch.data import load_mnist, scale_images

    images, labels = load_mnist("test")
    x = scale_images(images[:50], "flat")
    np.testing.assert_array_equal(loaded.act(x), trained.act(x, explore=False))
    assert loaded.act(x[3]) == trained.act(x[3:4], explore=False)[0]
    assert (loaded.act(x) == labels[:50]).mean() > 0.5  # an untrained net guesses at 10%


def test_act_refuses_a_wrongly_shaped_observation(tmp_path):
    _, _, loaded = run(tmp_path, "dqn_cartpole", ["train.total_steps=200", "agent.learning_starts=64"])
    with pytest.raises(ValueError, match=r"expected an observation of shape \(4,\)"):
        loaded.act(np.zeros((2, 5)))
