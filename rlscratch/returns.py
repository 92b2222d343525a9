"""Return computations shared by the agents: the arithmetic of bootstrapped targets, in one place.

n-step returns (DQN's replay buffer, and n-step A2C) live here; GAE and MuZero's value targets will
join them. Arrays are time-major: axis 0 is time, any further axes (parallel envs) ride along.
"""

from __future__ import annotations

import numpy as np


def n_step_returns(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, gamma: float,
                   n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step returns of every step of a time-major stretch of experience.

    The window of step t runs from t to the first of: step t+n-1, the step that ends t's episode
    (terminated or truncated), the last step of the data (T-1). With m its length:

        G_t        = sum_{k=0}^{m-1} gamma^k r_{t+k}
        discount_t = 0      if the window ends in a termination (no value beyond it),
                     gamma^m otherwise (n steps taken, a time limit cut the episode, or the data ran out)
        last_t     = t + m - 1

    so the bootstrapped target is  G_t + discount_t * V(next_obs[last_t]):  a truncation stops the
    sum but still bootstraps, from the final observation of its episode.

    Args:
        rewards, terminated, truncated: (T, ...) arrays.
    Returns:
        (returns, discounts, last), each (T, ...); returns and discounts as float64, last as int64.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    terminated = np.asarray(terminated, dtype=bool)
    done = terminated | np.asarray(truncated, dtype=bool)
    T = rewards.shape[0]
    returns = np.zeros_like(rewards)
    discounts = np.ones_like(rewards)
    t = np.broadcast_to(np.arange(T).reshape((T,) + (1,) * (rewards.ndim - 1)), rewards.shape)
    last = t.copy()
    open_ = np.ones(rewards.shape, dtype=bool)  # the window of step t still takes rewards
    for k in range(min(n, T)):
        # windows t = 0..T-k-1 look at step t+k, i.e. the rows k.. of the data
        live = open_[:T - k]
        returns[:T - k] += np.where(live, discounts[:T - k] * rewards[k:], 0.0)
        discounts[:T - k] = np.where(live, discounts[:T - k] * gamma, discounts[:T - k])
        last[:T - k] = np.where(live, t[:T - k] + k, last[:T - k])
        discounts[:T - k] = np.where(live & terminated[k:], 0.0, discounts[:T - k])
        open_[:T - k] &= ~done[k:]  # an episode end is the last step its windows take
    return returns, discounts, last


# -- on-policy rollouts: bootstrapped returns and GAE(lambda) --------------------------------------
# A rollout is T steps of N parallel envs, arrays (T, N). ``dones[t]`` is 1 where the episode ended at
# step t, terminated *or* truncated: nothing flows back into step t from step t+1 (a new episode).
# The two endings differ only in the reward: after a termination the value is 0, so r_t stands alone;
# a time limit's future still had value, so the caller folds gamma * V(final observation) into r_t
# (rlscratch.rollout.RolloutBuffer.add does) and the step then ends the recursion like a termination.
# The masks restart the recursions at every episode boundary, in the middle of a rollout as well.
def bootstrapped_returns(rewards: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float,
                         out: np.ndarray | None = None) -> np.ndarray:
    """Discounted returns of a rollout, bootstrapped from the value of the state after it: A2C's
    n-step return (step t of a T-step rollout looks T - t rewards ahead).

        R_T = V(s_T)                              (last_values: the observation after the last step)
        R_t = r_t + gamma * R_{t+1} * (1 - d_t)

    rewards, dones: (T, N);  last_values: (N,).  Returns R: (T, N), written into ``out`` if given.
    """
    returns = np.empty(rewards.shape, np.result_type(rewards, last_values)) if out is None else out
    future = last_values
    for t in reversed(range(len(rewards))):
        future = rewards[t] + gamma * future * (1.0 - dones[t])
        returns[t] = future
    return returns


def gae_advantages(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_values: np.ndarray,
                   gamma: float, lam: float, out: np.ndarray | None = None) -> np.ndarray:
    """Generalised advantage estimation (Schulman et al. 2016) over a rollout.

        TD_t = V_{t+1} * gamma * (1 - d_t) + r_t - V_t        (V_T = last_values)
        A_t  = TD_t + gamma * lam * A_{t+1} * (1 - d_t)       (A_T = 0)

    lam = 1 gives A_t = R_t - V_t, R_t the bootstrapped return above: the n-step A2C advantage.
    lam = 0 gives the one-step TD error. The value target that goes with A_t is A_t + V_t.

    rewards, values, dones: (T, N);  last_values: (N,).  Returns A: (T, N), written into ``out`` if given.
    """
    advantages = np.empty_like(values) if out is None else out
    next_values = last_values
    next_advantage = np.zeros_like(last_values)
    for t in reversed(range(len(rewards))):
        not_done = 1.0 - dones[t]
        td = next_values * gamma * not_done + rewards[t] - values[t]
        next_advantage = td + gamma * lam * next_advantage * not_done
        advantages[t] = next_advantage
        next_values = values[t]
    return advantages


# -- value targets bootstrapped from stored values (MuZero) ------------------------------------------
def n_step_value_targets(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, values: np.ndarray,
                         gamma: float, n: int) -> np.ndarray:
    """n-step value targets bootstrapped from stored state values, as MuZero trains its value head:

        z_t = sum_{k=0}^{m-1} gamma^k r_{t+k}  +  discount_t * values[last_t + 1]

    with m, discount_t and last_t from ``n_step_returns`` (a termination ends the sum with no
    bootstrap; a truncation or the end of the data bootstraps from the state after the window's
    last step). ``values[t]`` is the value of the state *before* step t -- MuZero's search value at
    that state, or a target network's -- and ``values[T]`` that of the state after the last step, so
    ``values`` is one row longer than ``rewards``: for a truncated episode, the row after its last
    step holds the value of its final observation.

    Args:
        rewards, terminated, truncated: (T, ...);  values: (T + 1, ...).
    Returns:
        z: (T, ...) float64.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] != np.shape(rewards)[0] + 1:
        raise ValueError(f"values needs one row more than rewards: {values.shape[0]} vs {np.shape(rewards)[0]}")
    returns, discounts, last = n_step_returns(rewards, terminated, truncated, gamma, n)
    return returns + discounts * np.take_along_axis(values, last + 1, axis=0)
