"""Exact resume on MinAtar (envs/minatar_env.py).

MinAtar draws sticky actions, ball starts and spawns from its own ``RandomState`` (not gymnasium's
``np_random``) and repeats its last action when an action sticks -- both carried from one episode into
the next. The collector rebuilds an env on resume by replaying its current episode from the state
saved just before that episode's reset, so both must be in that state. The env-level tests replay an
episode in a second env; the last tests send a real SIGTERM to real training processes (the harness
of tests/test_faults.py) and compare the resumed run's final checkpoint with an uninterrupted one's.
"""

from __future__ import annotations

import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

pytest.importorskip("minatar")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fault_injection as fi  # noqa: E402
from rlscratch.envs.factory import make_env, register_minatar  # noqa: E402
from rlscratch.envs.minatar_env import ENTRY_POINT, MINATAR_OWN_ENTRY_POINT, MinAtarEnv  # noqa: E402

from rlscratch.collector import Collector  # noqa: E402
from rlscratch.config import EnvConfig, load_config  # noqa: E402
from rlscratch.trainer import train  # noqa: E402

RIGHT = 2  # Breakout-v1's minimal action set is [noop, left, right]


def minatar(sticky: float = 0.1, game: str = "Breakout") -> gym.Env:
    return make_env(EnvConfig(id=f"MinAtar/{game}-v1", kwargs={"sticky_action_prob": sticky}))


def play(env: gym.Env, actions: list[int]) -> list[np.ndarray]:
    """Observations after each action (the episode may end early: MinAtar then repeats its last one)."""
    return [env.step(a)[0].copy() for a in actions]


def finish_episode(env: gym.Env, rng: np.random.Generator) -> None:
    terminated = False
    while not terminated:
        terminated = env.step(int(rng.integers(env.action_space.n)))[2]


def test_minatar_ids_are_made_by_the_class_that_saves_their_state():
    """Even when minatar's own register_envs() registered the ids first (its class has no get_state)."""
    spec = gym.registry["MinAtar/Breakout-v1"] if "MinAtar/Breakout-v1" in gym.registry else None
    if spec is not None:
        spec.entry_point = MINATAR_OWN_ENTRY_POINT  # as minatar.gym.register_envs() leaves it
    register_minatar()
    assert gym.registry["MinAtar/Breakout-v1"].entry_point == ENTRY_POINT
    assert isinstance(minatar().unwrapped, MinAtarEnv)


@pytest.mark.parametrize("game", ["Breakout", "Asterix"])
def test_a_later_episode_replays_exactly_from_the_state_before_its_reset(game):
    """Env A plays three episodes; the state captured before the fourth's reset, loaded into a fresh env B
    (seeded differently, and used), replays A's fourth episode exactly. Without the generator in the
    state, B's ball would start, its actions stick and (Asterix) its enemies spawn as its own generator says."""
    rng = np.random.default_rng(0)
    a = minatar(game=game)
    a.reset(seed=1)
    for _ in range(3):
        finish_episode(a, rng)
        a.reset()
    finish_episode(a, rng)
    state = a.unwrapped.get_state()
    first_a = a.reset()[0]
    actions = [int(x) for x in rng.integers(a.action_space.n, size=40)]
    steps_a = play(a, actions)

    b = minatar(game=game)
    b.reset(seed=2)
    play(b, [RIGHT] * 5)
    b.unwrapped.set_state(state)
    assert np.array_equal(b.reset()[0], first_a)
    assert all(np.array_equal(x, y) for x, y in zip(play(b, actions), steps_a))


def test_the_last_action_carries_into_the_next_episode_and_is_restored():
    """With every other action sticky, A ends an episode having moved right; the next episode's first
    action (noop) sticks, so the paddle moves right. B, restored from A's state, does the same; a fresh
    env's last action (noop) would leave the paddle where it starts."""
    rng = np.random.default_rng(3)
    a = minatar(sticky=0.5)
    a.reset(seed=4)
    terminated = False
    while not terminated:
        terminated = a.step(RIGHT)[2]
    state = a.unwrapped.get_state()
    assert state["last_action"] == 3  # MinAtar's own index of "right"
    start = a.reset()[0]
    actions = [0] + [int(x) for x in rng.integers(3, size=30)]
    steps_a = play(a, actions)
    paddle = 0  # channel
    assert np.flatnonzero(steps_a[0][9, :, paddle]).tolist() == [np.flatnonzero(start[9, :, paddle])[0] + 1]  # stuck

    b = minatar(sticky=0.5)
    b.reset(seed=5)
    b.unwrapped.set_state(state)
    assert np.array_equal(b.reset()[0], start)
    assert all(np.array_equal(x, y) for x, y in zip(play(b, actions), steps_a))


def test_a_seeded_reset_starts_as_a_new_env():
    """Evaluations reseed their envs each time: a used env reseeded plays exactly as a new one, whatever
    action it took last (MinAtar itself kept it)."""
    actions = [0] * 10 + [1, 2] * 10
    used = minatar(sticky=0.5)
    used.reset(seed=6)
    play(used, [RIGHT] * 8)
    used.reset(seed=7)
    new = minatar(sticky=0.5)
    new.reset(seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(play(used, actions), play(new, actions)))


def collector_past_episodes(make: Callable[[], gym.Env]) -> tuple[Collector, dict[str, np.ndarray]]:
    """A collector on Asterix stopped 30 steps into a later episode; its checkpoint state."""
    collector = Collector(gym.vector.SyncVectorEnv([make], autoreset_mode=AutoresetMode.DISABLED), seeds=[8])
    rng = np.random.default_rng(9)
    while collector.episodes < 2 or collector.episode_length[0] < 30:
        collector.step(rng.integers(6, size=1))
    return collector, collector.state_dict()


def test_a_resume_that_does_not_replay_exactly_says_so():
    """minatar's own class (no get_state): the replayed episode drifts from the saved observation, and the
    collector warns; with MinAtarEnv it arrives there, silently."""
    from minatar.gym import BaseEnv

    _, state = collector_past_episodes(lambda: BaseEnv("asterix"))
    with pytest.warns(RuntimeWarning, match=r"env\(s\) \[0\] did not replay to the checkpoint's observation"):
        Collector(gym.vector.SyncVectorEnv([lambda: BaseEnv("asterix")], autoreset_mode=AutoresetMode.DISABLED),
                  seeds=[8]).load_state_dict(state)

    collector, state = collector_past_episodes(lambda: MinAtarEnv("asterix"))
    fresh = Collector(gym.vector.SyncVectorEnv([lambda: MinAtarEnv("asterix")], autoreset_mode=AutoresetMode.DISABLED),
                      seeds=[8])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_state_dict(state)
    action = np.array([3])
    assert np.array_equal(fresh.step(action)[0].next_obs, collector.step(action)[0].next_obs)


# -- real processes, a real SIGTERM, --resume, and the final checkpoints compared -------------------
# the signal's moment: the K-th stop check of training, after several episodes of every env
STOP_CHECK = {"dqn_minatar": 400, "ppo_minatar": 150, "efficientzero_minatar": 40}


@pytest.mark.parametrize("case", list(STOP_CHECK))
def test_sigterm_and_resume_on_minatar_end_bit_identical(tmp_path, case):
    name, overrides = fi.CASES[case]
    config, _ = load_config(name, overrides + fi.QUIET)
    assert not train(config, tmp_path / "reference")["interrupted"]
    expected = fi.final_state(tmp_path / "reference")

    run_dir = tmp_path / "run"
    trial = fi.inject(case, run_dir, signal.SIGTERM, "train", STOP_CHECK[case], resume=False)
    assert trial.delivered and trial.exit_code == fi.EXIT[signal.SIGTERM], (trial.notes, trial.stderr[-500:])
    assert not fi.final_state(run_dir)["finished"]
    done = fi.run_to_end(case, run_dir, resume=True)
    assert done.returncode == 0, done.stderr[-1000:]
    final = fi.final_state(run_dir)
    assert final["finished"]
    assert fi.differences(final, expected) == []
