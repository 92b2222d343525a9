"""MuZero's replay: game segments per environment, prioritized sampling of positions, and the rows
a reanalysis searches. (The K-step targets read from its windows are built in targets.py.)

**Layout.** Each parallel env writes its own stream of rows into its own ring (arrays [env, slot]).
A row is a *state*: its observation, and -- for a ``STEP`` row -- the action taken there, the reward
received, and the search's root value and policy at it. When an episode ends, one more row holds
its final observation (kind ``TERMINATED`` or ``TRUNCATED``; no action). So an episode of T steps is
T + 1 consecutive rows, and unrolling K steps from row t is reading rows t..t+K of one stream. (The
loop resets an env right after its final step, so the final observation is never the next episode's
first: it needs its own row -- for a truncation, the value bootstraps from it.)

Positions are absolute per stream (row i of env e lives in slot i mod capacity); ``head[e]`` counts
the rows written. A window of rows t..t+W-1 sorts each row into

    STEP      a state of this episode with its action, reward, search value and policy
    FINAL     the episode's final observation (the episode terminated or was truncated)
    BEYOND    past the final observation: a terminated episode is *absorbing* there (value 0,
              reward 0, no policy target); after a truncation nothing is known (masked)
    MISSING   not written yet (the episode is still being played): masked

**Reanalyze** (``reanalyze_rows``): a random subset of the sampled windows -- not the first rows of
the batch, which the sum tree returns ordered by env -- and in them only the rows whose stored
search results the targets will read (``rows_read``), as (env, slot) pairs without repeats, for one
batched search.

**Priorities.** Row t is drawn with probability p_t^alpha / sum p^alpha (rlscratch.buffers.SumTree),
p_t = |v_0 - z_0| after each replay (new rows: the largest p so far), with importance weights
(N P(t))^-beta / max.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch.buffers import SumTree

# stored row kinds
STEP, TERMINATED, TRUNCATED = 0, 1, 2
# window statuses
W_STEP, W_FINAL, W_BEYOND, W_MISSING = 0, 1, 2, 3


@dataclass
class Sample:
    env: np.ndarray      # (B,)
    start: np.ndarray    # (B,) absolute row index in the env's stream
    leaf: np.ndarray     # (B,) index in the sum tree: env * capacity + slot
    weights: np.ndarray  # (B,) importance-sampling weights


@dataclass
class Window:
    """Rows start..start+W-1 of each sampled stream."""

    status: np.ndarray       # (B, W) W_STEP / W_FINAL / W_BEYOND / W_MISSING
    terminated: np.ndarray   # (B,) the episode's end (if inside the window) was a termination
    obs: np.ndarray          # (B, W, *obs_shape)
    actions: np.ndarray      # (B, W)
    rewards: np.ndarray      # (B, W)
    values: np.ndarray       # (B, W) stored search values (final rows: value of the final observation)
    policies: np.ndarray     # (B, W, A)
    slots: np.ndarray        # (B, W)


class GameReplay:
    """Per-env rings of rows with a sum tree over every (env, slot)."""

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], n_actions: int,
                 obs_dtype: np.dtype | type = np.float32, alpha: float = 1.0, eps: float = 1e-6) -> None:
        self.num_envs = num_envs
        self.per_env = max(capacity // num_envs, 2)
        E, C = num_envs, self.per_env
        self.obs = np.zeros((E, C, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((E, C), dtype=np.int64)
        self.rewards = np.zeros((E, C), dtype=np.float32)
        self.values = np.zeros((E, C), dtype=np.float32)
        self.policies = np.zeros((E, C, n_actions), dtype=np.float32)
        self.kind = np.full((E, C), TRUNCATED, dtype=np.uint8)
        self.head = np.zeros(E, dtype=np.int64)
        self.tree = SumTree(E * C)
        self.alpha, self.eps = float(alpha), float(eps)
        self.max_priority = 1.0
        self._arrays = ("obs", "actions", "rewards", "values", "policies", "kind", "head")

    def __len__(self) -> int:
        """Rows held (of every kind)."""
        return int(np.minimum(self.head, self.per_env).sum())

    @property
    def steps_held(self) -> int:
        """STEP rows held: the positions sampling can draw."""
        return int(np.count_nonzero(self.tree.priorities))

    # -- writing ------------------------------------------------------------------------------------
    def _write(self, envs: np.ndarray, kind: int, obs: np.ndarray, action=0, reward=0.0, value=0.0,
               policy=0.0) -> np.ndarray:
        slots = self.head[envs] % self.per_env
        self.obs[envs, slots] = obs
        self.actions[envs, slots] = action
        self.rewards[envs, slots] = reward
        self.values[envs, slots] = value
        self.policies[envs, slots] = policy
        self.kind[envs, slots] = kind
        self.head[envs] += 1
        priority = self.max_priority ** self.alpha if kind == STEP else 0.0
        self.tree.update(envs * self.per_env + slots, priority)
        return slots

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, values: np.ndarray,
            policies: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            final_values: np.ndarray | None = None, envs: np.ndarray | None = None) -> None:
        """One vector step: a STEP row for every env, then a final row for every env whose episode
        ended (``final_values``: values of the final observations, used for truncations). ``envs``:
        the streams these rows go to (default all, in order; a distributed learner writes each
        self-play actor's envs into streams of their own)."""
        envs = np.arange(self.num_envs) if envs is None else np.asarray(envs)
        self._write(envs, STEP, obs, actions, rewards, values, policies)
        for kind, mask in ((TERMINATED, np.asarray(terminated)), (TRUNCATED, np.asarray(truncated) & ~terminated)):
            if mask.any():
                ended = envs[mask]
                value = 0.0 if kind == TERMINATED or final_values is None else final_values[mask]
                self._write(ended, kind, next_obs[mask], value=value)

    # -- sampling -------------------------------------------------------------------------------------
    def sample(self, batch_size: int, rng: np.random.Generator, beta: float) -> Sample:
        leaf = self.tree.sample(batch_size, rng)
        env, slot = np.divmod(leaf, self.per_env)
        head = self.head[env]
        start = head - 1 - (head - 1 - slot) % self.per_env
        probability = self.tree.get(leaf) / self.tree.total
        weights = (self.steps_held * probability) ** -beta
        return Sample(env, start, leaf, weights / weights.max())

    def window(self, env: np.ndarray, start: np.ndarray, length: int) -> Window:
        position = start[:, None] + np.arange(length)
        present = position < self.head[env][:, None]
        slots = position % self.per_env
        rows = env[:, None]
        kind = np.where(present, self.kind[rows, slots], STEP)
        is_final = present & (kind != STEP)
        has_final = is_final.any(axis=1)
        final_at = np.where(has_final, is_final.argmax(axis=1), length)
        j = np.arange(length)
        status = np.where(present, W_STEP, W_MISSING)
        status = np.where(j == final_at[:, None], W_FINAL, status)
        status = np.where(j > final_at[:, None], W_BEYOND, status)
        terminated = has_final & (kind[np.arange(len(env)), np.minimum(final_at, length - 1)] == TERMINATED)
        return Window(status=status, terminated=terminated, obs=self.obs[rows, slots],
                      actions=self.actions[rows, slots], rewards=self.rewards[rows, slots].astype(np.float64),
                      values=self.values[rows, slots].astype(np.float64), policies=self.policies[rows, slots],
                      slots=slots)

    def update_priorities(self, leaf: np.ndarray, errors: np.ndarray) -> None:
        priority = np.abs(np.asarray(errors, dtype=np.float64)) + self.eps
        self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.update(leaf, priority ** self.alpha)

    # -- reanalyze ---------------------------------------------------------------------------------------
    def reanalyze_rows(self, env: np.ndarray, start: np.ndarray, count: int, unroll_steps: int,
                       td_steps: int | np.ndarray, rng: np.random.Generator, *, stored_values: bool,
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The rows to re-search for ``count`` of the sampled windows (env, start), chosen at random:
        the distinct (env, slot) pairs of their ``rows_read``. ``stored_values``: the value targets
        bootstrap from the stored search values (else from a target network: only policies are read).
        ``td_steps``: one n for all, or one per window (the off-policy correction's)."""
        chosen = rng.choice(len(env), size=min(count, len(env)), replace=False)
        env, start = env[chosen], start[chosen]
        td = np.asarray(td_steps, dtype=np.int64)
        if td.ndim:
            td = td[chosen]
        window = self.window(env, start, unroll_steps + int(td.max()) + 1)
        read = rows_read(window, unroll_steps, td, stored_values)
        envs = np.broadcast_to(env[:, None], read.shape)[read]
        key = np.unique(envs * self.per_env + window.slots[read])
        return np.divmod(key, self.per_env)

    def refresh(self, env: np.ndarray, slots: np.ndarray, values: np.ndarray, policies: np.ndarray) -> None:
        """Reanalyze: overwrite the stored search values and policies of these rows (a final row has
        no action: its (zero) policy stays)."""
        self.values[env, slots] = values
        step = self.kind[env, slots] == STEP
        self.policies[env[step], slots[step]] = policies[step]

    # -- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: getattr(self, name).copy() for name in self._arrays}
        state["priorities"] = self.tree.priorities.copy()
        state["max_priority"] = np.array(self.max_priority)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self._arrays:
            target, value = getattr(self, name), state[name]
            if value.shape != target.shape or value.dtype != target.dtype:
                raise ValueError(f"replay '{name}': saved {value.dtype}{list(value.shape)}, "
                                 f"expected {target.dtype}{list(target.shape)}")
            np.copyto(target, value)
        self.tree.load_state_dict({"priorities": state["priorities"]})
        self.max_priority = float(state["max_priority"])


def rows_read(window: Window, unroll_steps: int, td_steps: int | np.ndarray, stored_values: bool,
              policies: bool = True) -> np.ndarray:
    """(B, W) mask of the rows whose stored search results ``make_targets`` reads (targets.py):

    * the policy rows: columns k = 0..K that are STEP rows;
    * with ``stored_values``, the bootstrap rows: z_k (k before the episode's end e) bootstraps from
      column min(k + n, e), where e is the first column after 0 that ends the n-step sums -- the
      final row, or a STEP row whose successor is not written yet -- if that row has a value (a
      STEP row, or the final row of a truncation; a terminated episode's final row is worth 0).
      (``td_steps`` may be one n per window.)

    ``policies=False`` leaves the policy rows out: what remains are the rows whose values the n-step
    sums read, the only rows a target network has to evaluate.
    """
    K, n = unroll_steps, td_steps
    status, terminated = window.status, window.terminated
    B, W = status.shape
    step = status == W_STEP
    read = np.zeros((B, W), dtype=bool)
    if policies:
        read[:, :K + 1] = step[:, :K + 1]
    if stored_values:
        last_written = step & np.concatenate([status[:, 1:] == W_MISSING, np.zeros((B, 1), bool)], axis=1)
        ends = (status == W_FINAL) | last_written
        ends[:, 0] = False
        end = np.where(ends.any(axis=1), ends.argmax(axis=1), W)
        # (for k >= e the column is e itself, which k = e - 1 reaches already)
        column = np.minimum(np.arange(K + 1)[None, :] + np.asarray(n).reshape(-1, 1), end[:, None])
        bootstrap = np.zeros((B, W), dtype=bool)
        np.put_along_axis(bootstrap, column, True, axis=1)
        has_value = step | ((status == W_FINAL) & ~terminated[:, None])
        read |= bootstrap & has_value
    return read
