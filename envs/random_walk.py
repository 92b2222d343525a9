"""The random walk of Sutton & Barto: the standard test bed for value prediction.

    T_L = 0   1   2  ...  start  ...  n   n+1 = T_R
    reward -1 <-+                          +-> reward +1

Non-terminal states 1..n (n = 19 in example 7.1 and figures 12.3/12.6; n = 5 in example 6.2), every
episode starts in the middle, (n + 1) // 2, and each step moves left or right with probability 1/2
whatever the agent does (the action space is Discrete(1): nothing to control, only values to predict).
Leaving on the left pays -1, on the right +1, every other step 0.

True values (gamma = 1). V(i) is the probability of leaving on the right minus that of leaving on the
left. The right-exit probability p_i satisfies p_i = (p_{i-1} + p_{i+1}) / 2 with p_0 = 0 and
p_{n+1} = 1, so it is linear, p_i = i / (n + 1), and

    V(i) = p_i - (1 - p_i) = 2 i / (n + 1) - 1            n = 19:  V(i) = (i - 10) / 10,  -0.9 ... 0.9

Observations (``observe="state"``) are one-hot vectors of the state (all zeros for the terminal
states, whose value is 0), so a linear value function on them *is* a table: tabular TD is linear TD on
one-hot features.

``observe="move"`` makes the walk partially observed: the agent sees only which way the last step
went ([1, 0] left, [0, 1] right, [0, 0] at the start), never where it is. The position -- and so the
value -- is the start plus the running sum of the moves: a task for a recurrent encoder
(agents/td_gru.py), with the true values still known exactly. A memoryless predictor can do no better
than E[V(s) | last move]: with 7 states that leaves an RMS error of about 0.35 (0.30 with 5).

Every info holds ``true_value``, v(s) of the state just reached (0 once terminal). With
``observe="state"``, the info of the step that ends an episode also holds ``true_values`` (n,) and
``state_observations`` (n, n), the observation of every non-terminal state in order, so a prediction
agent can report its RMS error over all states without knowing the env's encoding.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def random_walk_true_values(n_states: int = 19) -> np.ndarray:
    """V(1..n) of the n-state random walk under gamma = 1: 2 i / (n + 1) - 1 (see the module docstring)."""
    i = np.arange(1, n_states + 1)
    return (2.0 * i - (n_states + 1)) / (n_states + 1)


class RandomWalk(gym.Env):
    """The n-state random walk (n odd puts the start exactly in the middle)."""

    metadata = {"render_modes": []}

    def __init__(self, n_states: int = 19, observe: str = "state") -> None:
        if n_states < 1:
            raise ValueError(f"n_states must be at least 1, got {n_states}")
        if observe not in ("state", "move"):
            raise ValueError(f"observe must be 'state' or 'move', got {observe!r}")
        self.n_states = n_states
        self.observe = observe
        self.start = (n_states + 1) // 2
        size = n_states if observe == "state" else 2
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(1)
        self.true_values = random_walk_true_values(n_states)
        # Row i-1 is the observation of state i: what V must be evaluated on to compare with true_values.
        self.state_observations = np.eye(n_states, dtype=np.float32)
        self.state = self.start

    def _observation(self, move: int) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        if self.observe == "move":
            if move:
                obs[(move + 1) // 2] = 1.0  # -1 -> [1, 0], +1 -> [0, 1]
        elif 1 <= self.state <= self.n_states:  # a terminal state is all zeros: its value is 0
            obs[self.state - 1] = 1.0
        return obs

    def _true_value(self) -> float:
        return float(self.true_values[self.state - 1]) if 1 <= self.state <= self.n_states else 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = self.start
        return self._observation(0), {"state": self.state, "true_value": self._true_value()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if action != 0:
            raise ValueError(f"the random walk has one action, 0; got {action!r}")
        if not 1 <= self.state <= self.n_states:
            raise RuntimeError("step() after the episode ended; call reset()")
        move = 1 if self.np_random.random() < 0.5 else -1
        self.state += move
        reward = -1.0 if self.state == 0 else 1.0 if self.state == self.n_states + 1 else 0.0
        terminated = reward != 0.0
        info: dict[str, Any] = {"state": self.state, "true_value": self._true_value()}
        if terminated and self.observe == "state":
            info["true_values"] = self.true_values.copy()
            info["state_observations"] = self.state_observations.copy()
        return self._observation(move), reward, terminated, False, info
