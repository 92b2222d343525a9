"""Why configs/dqn_minatar_freeway.yaml stacks two frames, and that it does (issue 14).

In Freeway the chicken may move only every 3rd frame and each car every (speed + 1)th; neither timer
is in MinAtar's observation. From one frame, "up" and "wait" are indistinguishable on 2 frames in 3,
and a car's next move cannot be timed: DQN on one frame plateaued at "mostly up" (~28 training return).
"""

from __future__ import annotations

import numpy as np
from rlscratch.agents.dqn import q_network
from rlscratch.envs.factory import make_env

from rlscratch.config import load_config

UP = 1  # Freeway-v1's minimal action set: n, u, d


def test_one_freeway_frame_does_not_tell_whether_up_moves_the_chicken():
    """Two moments with the same observation: pressing up moves the chicken in one, not in the other
    (its move timer, hidden, is 0 in one and 2 in the other)."""
    config, _ = load_config("dqn_minatar_freeway")
    env = make_env(config.env).unwrapped
    env.game.sticky_action_prob = 0.0
    env.reset(seed=0)
    game = env.game.env
    for _ in range(3):
        env.step(0)  # wait until the chicken may move (the timer starts at 3)
    game.cars = [[0, row, 99, 1] for row in range(1, 9)]  # cars parked far away: nothing else changes
    game.move_timer = 0
    before = env.game.state()
    env.step(UP)
    assert game.pos == 8  # moved
    game.pos, game.move_timer = 9, 2  # the same picture, but the chicken has just moved
    np.testing.assert_array_equal(env.game.state(), before)
    env.step(UP)
    assert game.pos == 9  # did not move


def test_freeway_config_shows_the_network_the_last_two_frames(rng):
    config, _ = load_config("dqn_minatar_freeway")
    env = make_env(config.env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 10, 10, 7)
    previous = env.unwrapped.game.state()
    obs, *_ = env.step(UP)
    np.testing.assert_array_equal(obs[0], previous)
    np.testing.assert_array_equal(obs[1], env.unwrapped.game.state())
    # the Q-network reads both: 14 channels, frame t-1's first
    q = q_network(env.observation_space, 3, config.model, rng)
    x = q.layers[0].infer(obs[None])
    assert x.shape == (1, 14, 10, 10)
    np.testing.assert_array_equal(x[0, 7:], obs[1].transpose(2, 0, 1))
    env.close()
