"""MuZero's K-step training targets, read from windows of the replay (rlscratch.muzero.replay).

For the position at row t of a stored game, k = 0..K:

    policy  pi_k   the stored search policy of row t+k if it is a STEP row (else masked)
    value   z_k    n-step: sum_{i<m} gamma^i u_{t+k+i} + gamma^m V_{t+k+m}, m = min(n, steps to the
                   episode's end), bootstrapped from stored search values V (or a target network's
                   values); 0 at/after a termination; the stored value of the final observation at a
                   truncation
    reward  u_k    the reward of row t+k-1 (k >= 1); 0 past a termination

So a window of K + n + 1 rows is all one position needs, and only some of its rows are read:
the K + 1 policy rows and, for the values, the rows t+k+m the n-step sums bootstrap from
(``rlscratch.muzero.replay.rows_read`` names them, and a reanalysis searches exactly those).
"""

from __future__ import annotations

import numpy as np

from rlscratch.returns import n_step_value_targets

from .loss import UnrollBatch
from .replay import W_BEYOND, W_FINAL, W_MISSING, W_STEP, Window
from .value_prefix import value_prefix_targets


def make_targets(window: Window, unroll_steps: int, td_steps: int | np.ndarray, discount: float,
                 rng: np.random.Generator, values: np.ndarray | None = None, lstm_horizon: int = 0,
                 consistency: bool = False, search_value: np.ndarray | None = None) -> UnrollBatch:
    """The inputs and targets of ``unrolled_loss`` for windows of length >= K + n + 1 (module docstring).

    ``values`` (B, W) replaces the stored search values as the bootstrap (a target network's).
    Importance weights are left at 1 (the caller sets them). EfficientZero's options:
    ``td_steps`` may be one n per window (B,) (the off-policy correction shortens it for old data);
    ``lstm_horizon`` > 0 turns the reward targets into value prefixes (value_prefix.py);
    ``consistency`` adds the observations o_{t+1..t+K} and where they exist (consistency.py);
    ``search_value`` (B,) bool marks windows whose value targets are the stored search root values
    themselves instead of n-step returns (EfficientZero V2's search-based value estimation, for data
    too old for its rewards to reflect the current policy)."""
    K = unroll_steps
    n_each = np.broadcast_to(np.asarray(td_steps, dtype=np.int64), (len(window.status),))
    n = int(n_each.max())
    status, terminated = window.status, window.terminated
    B, W = status.shape
    if W < K + n + 1:
        raise ValueError(f"a window of {W} rows cannot give {K} unroll steps with {n}-step targets")
    step = status == W_STEP
    final = status == W_FINAL
    values = window.values if values is None else values
    # the value of each row as a bootstrap: a terminated episode's final row is worth 0
    bootstrap = np.where(step | (final & ~terminated[:, None]), values, 0.0)

    # n-step returns over the transitions j = 0..W-2 (time-major for rlscratch.returns)
    next_status = status[:, 1:]
    rewards = window.rewards[:, :-1]   # (a sum stops at its episode's end: rows past it are never added)
    ends_terminated = (next_status == W_FINAL) & terminated[:, None]
    ends_truncated = (next_status == W_FINAL) & ~terminated[:, None]
    # a STEP row whose successor is not written yet has a reward but no next value: windows stop one
    # step earlier (bootstrapping from that row's own stored value) and its own value goes unused
    last_written = step & np.concatenate([status[:, 1:] == W_MISSING, np.zeros((B, 1), bool)], axis=1)
    ends_truncated |= last_written[:, 1:]
    z = np.zeros_like(rewards)
    for horizon in np.unique(n_each):   # one pass per distinct n (one, unless the horizon varies)
        rows = n_each == horizon
        z[rows] = n_step_value_targets(rewards[rows].T, ends_terminated[rows].T, ends_truncated[rows].T,
                                       bootstrap[rows].T, discount, int(horizon)).T

    k = slice(0, K + 1)
    if search_value is not None:   # z_k = V_search(t+k) for the marked windows
        z = np.where(np.asarray(search_value)[:, None], window.values[:, :z.shape[1]], z)
    value_target = np.where(step[:, k], z[:, k], 0.0)
    value_target = np.where(final[:, k], bootstrap[:, k], value_target)    # 0 if terminated
    absorbing = terminated[:, None] & (final | (status == W_BEYOND))[:, k]
    value_mask = (step[:, k] & ~last_written[:, k]) | final[:, k] | absorbing
    value_target = np.where(value_mask, value_target, 0.0)   # unknown: 0, and not trained

    policy_mask = step[:, k]
    target_policy = np.where(policy_mask[..., None], window.policies[:, k], 0.0)

    # reward u_k of the transition from row k-1 (column 0 unused)
    reward_target = np.zeros((B, K + 1))
    reward_target[:, 1:] = np.where(step[:, :K], window.rewards[:, :K], 0.0)
    reward_mask = np.zeros((B, K + 1))
    reward_mask[:, 1:] = step[:, :K] | absorbing[:, :K]

    random_actions = rng.integers(0, window.policies.shape[-1], (B, K))
    actions = np.where(step[:, :K], window.actions[:, :K], random_actions)
    if lstm_horizon:
        reward_target = value_prefix_targets(reward_target, lstm_horizon)
    batch = UnrollBatch(obs=window.obs[:, 0], actions=actions, target_policy=target_policy,
                        policy_mask=policy_mask.astype(np.float64), target_value=value_target,
                        value_mask=value_mask.astype(np.float64), target_reward=reward_target,
                        reward_mask=reward_mask, weights=np.ones(B))
    if consistency:   # a real observation exists at every STEP row and at the final row
        batch.target_obs = window.obs[:, 1:K + 1]
        batch.consistency_mask = (step | final)[:, k].astype(np.float64)
    return batch
