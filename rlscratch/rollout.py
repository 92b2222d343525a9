"""The rollout buffer every on-policy agent (A2C, PPO) fills and learns from.

It holds the last ``n_steps`` vector steps of ``n_envs`` parallel envs, time-major (T, N, ...), in
arrays allocated once: adding a step is a handful of copies into row ``pos``. When it is full the
agent computes the values of the stored observations (one batched forward pass over all T*N of
them), asks ``compute_advantages`` for advantages and value targets, learns, and calls ``reset``.

Episode ends are handled where the rewards go in, so the return recursions in rlscratch.returns only
ever see ``dones``:

* terminated: no value after the step -- the reward stands alone;
* truncated (a time limit): the episode's future still had value, so ``add`` folds
  gamma * V(final observation) into that step's reward. The agent passes V(final observation): the
  step's ``next_obs`` is the true final observation even though the loop has already reset the env.

Either can happen at any step of the rollout, not only at its end.
"""

from __future__ import annotations

import numpy as np

from rlscratch.returns import gae_advantages


class RolloutBuffer:
    """Preallocated (n_steps, n_envs) storage of observations, actions, rewards and episode ends,
    plus the values, log-probabilities, advantages and returns computed from them."""

    def __init__(self, n_steps: int, n_envs: int, obs_shape: tuple[int, ...], gamma: float,
                 obs_dtype: np.dtype | type = np.float32, action_shape: tuple[int, ...] = (),
                 action_dtype: np.dtype | type = np.int64, dtype: np.dtype | type = np.float32) -> None:
        self.n_steps, self.n_envs, self.gamma = n_steps, n_envs, float(gamma)
        shape = (n_steps, n_envs)
        self.obs = np.zeros(shape + tuple(obs_shape), dtype=obs_dtype)
        self.actions = np.zeros(shape + tuple(action_shape), dtype=action_dtype)
        self.rewards = np.zeros(shape, dtype=dtype)  # with gamma * V(final obs) folded in at truncations
        self.dones = np.zeros(shape, dtype=dtype)  # 1.0 where the episode ended at this step
        # Filled by the agent once the rollout is complete:
        self.values = np.zeros(shape, dtype=dtype)  # V(s_t) under the parameters that acted
        self.log_probs = np.zeros(shape, dtype=dtype)  # log pi(a_t | s_t) under the same (PPO's "old")
        self.advantages = np.zeros(shape, dtype=dtype)
        self.returns = np.zeros(shape, dtype=dtype)  # value targets: A_t + V_t
        self.pos = 0

    @property
    def full(self) -> bool:
        return self.pos == self.n_steps

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
            truncated: np.ndarray, final_values: np.ndarray | None = None) -> None:
        """Store one vector step. ``final_values``: V(final observation) for the envs that were
        truncated (and not terminated) at this step, zeros or anything elsewhere; None if none were."""
        t = self.pos
        if t == self.n_steps:
            raise RuntimeError("the rollout buffer is full: compute advantages, learn, then reset() it")
        self.obs[t] = obs
        self.actions[t] = actions
        self.rewards[t] = rewards
        np.logical_or(terminated, truncated, out=self.dones[t], casting="unsafe")
        if final_values is not None:
            # r_t + gamma * V(s_final): the time limit cut a future that still had value
            bootstrap = truncated & ~terminated
            self.rewards[t] += self.gamma * np.where(bootstrap, final_values, 0.0).astype(self.rewards.dtype)
        self.pos = t + 1

    def compute_advantages(self, last_values: np.ndarray, lam: float) -> None:
        """GAE(lam) advantages and value targets from ``self.values`` (which the agent has filled)
        and V(s_T), the value of the observation after the last step. lam = 1: n-step A2C."""
        gae_advantages(self.rewards, self.values, self.dones, last_values.astype(self.values.dtype),
                       self.gamma, lam, out=self.advantages)
        np.add(self.advantages, self.values, out=self.returns)

    def flat(self, array: np.ndarray) -> np.ndarray:
        """(T, N, ...) -> (T*N, ...), a view: the batch a network sees."""
        return array.reshape((self.n_steps * self.n_envs,) + array.shape[2:])

    def reset(self) -> None:
        self.pos = 0

    # -- checkpoints: a rollout in progress is saved, so a resumed run continues it exactly ----------
    _saved = ("obs", "actions", "rewards", "dones")

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: getattr(self, name)[:self.pos].copy() for name in self._saved}
        state["pos"] = np.array(self.pos, dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pos = int(state["pos"])
        for name in self._saved:
            target = getattr(self, name)
            if state[name].shape[1:] != target.shape[1:] or len(state[name]) != pos or pos > self.n_steps:
                raise ValueError(f"rollout buffer '{name}' has shape {state[name].shape}, expected "
                                 f"({pos}, {', '.join(map(str, target.shape[1:]))}) with at most {self.n_steps} steps")
            target[:pos] = state[name]
        self.pos = pos
