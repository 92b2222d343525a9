"""envs/vector.py's LoopVectorEnv steps its envs in a plain loop instead of gymnasium's general-purpose
SyncVectorEnv.step: it must return exactly what SyncVectorEnv returns, step for step, through episode
ends and masked resets, with and without per-env info."""

import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from rlscratch.envs.factory import make_env, make_vec_env
from rlscratch.envs.vector import LoopVectorEnv

from rlscratch.config import EnvConfig

CASES = {
    # Box actions; every episode truncated by the time limit (after 30 steps here)
    "pendulum": EnvConfig(id="Pendulum-v1", num_envs=4, kwargs={"max_episode_steps": 30}),
    # Discrete actions, episodes ending at different steps; ClipReward puts RecordEnvReward under it,
    # whose info["env_reward"] exercises the info merging
    "cartpole_info": EnvConfig(id="CartPole-v1", num_envs=3, kwargs={"max_episode_steps": 40},
                               wrappers=[{"ClipReward": {"min_reward": 0.0, "max_reward": 0.5}}]),
}


def side_by_side(config: EnvConfig, steps: int = 200):
    """Both vector envs over the same seeded episodes and actions; yields each step's two results."""
    loop = make_vec_env(config)
    reference = gym.vector.SyncVectorEnv([functools.partial(make_env, config)] * config.num_envs,
                                         autoreset_mode=AutoresetMode.DISABLED)
    assert isinstance(loop, LoopVectorEnv) and loop.loop_step
    seeds = list(range(10, 10 + config.num_envs))
    assert np.array_equal(loop.reset(seed=seeds)[0], reference.reset(seed=seeds)[0])
    space = loop.single_action_space
    space.seed(0)
    for _ in range(steps):
        actions = np.stack([space.sample() for _ in range(config.num_envs)])
        got, want = loop.step(actions), reference.step(actions)
        yield got, want
        done = got[2] | got[3]
        if done.any():
            got_obs, _ = loop.reset(options={"reset_mask": done})
            want_obs, _ = reference.reset(options={"reset_mask": done})
            assert np.array_equal(got_obs, want_obs)
    loop.close()
    reference.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_loop_vector_env_steps_exactly_as_sync_vector_env(case: str):
    ends = 0
    infos = 0
    for (obs, reward, terminated, truncated, info), want in side_by_side(CASES[case]):
        for got_array, want_array in zip((obs, reward, terminated, truncated), want[:4]):
            assert got_array.dtype == want_array.dtype and np.array_equal(got_array, want_array)
        assert info.keys() == want[4].keys()
        for key in info:
            assert np.array_equal(info[key], want[4][key])
        ends += int((terminated | truncated).sum())
        infos += len(info)
    assert ends >= 10  # the resets were exercised
    assert (infos > 0) == (case == "cartpole_info")


def test_returned_arrays_are_copies():
    envs = make_vec_env(CASES["pendulum"])
    envs.reset(seed=1)
    obs, reward, *_ = envs.step(np.zeros((4, 1), dtype=np.float32))
    kept = obs.copy(), reward.copy()
    envs.step(np.ones((4, 1), dtype=np.float32))
    envs.close()
    assert np.array_equal(obs, kept[0]) and np.array_equal(reward, kept[1])  # the next step did not overwrite them


def test_stepping_an_ended_env_without_resetting_it_is_refused():
    envs = make_vec_env(EnvConfig(id="Pendulum-v1", num_envs=2, kwargs={"max_episode_steps": 1}))
    envs.reset(seed=0)
    envs.step(np.zeros((2, 1), dtype=np.float32))  # both truncated
    with pytest.raises(RuntimeError, match=r"envs \[0, 1\] ended and were not reset"):
        envs.step(np.zeros((2, 1), dtype=np.float32))
    envs.close()


def test_other_spaces_go_through_gymnasiums_step():
    """Blackjack observes a Tuple: no array to write rows into, so SyncVectorEnv's own step runs."""
    envs = LoopVectorEnv([lambda: gym.make("Blackjack-v1")] * 2, autoreset_mode=AutoresetMode.DISABLED)
    reference = gym.vector.SyncVectorEnv([lambda: gym.make("Blackjack-v1")] * 2, autoreset_mode=AutoresetMode.DISABLED)
    assert not envs.loop_step
    for vector_env in (envs, reference):
        vector_env.reset(seed=[3, 4])
    got, want = envs.step(np.array([0, 0])), reference.step(np.array([0, 0]))
    assert all(np.array_equal(g, w) for g, w in zip(got[0], want[0])) and np.array_equal(got[1], want[1])
