"""Stepping parallel environments for an agent: resets, episode bookkeeping, and exact resume.

The vector env runs with autoreset disabled, and the collector resets each env whose episode ended,
right after the step that ended it. So every ``Step`` holds real transitions: ``next_obs`` is what
the action led to (the final observation, for an ended episode), ``terminated`` and ``truncated``
keep their meanings (bootstrap from a truncation's final observation, never past a termination),
and the next ``act`` sees the new episode's first observation.

Exact resume: an env's internal state (CartPole's physics, a bandit's position in its data) is not
something gymnasium lets us save. What *is* saveable is how the current episode began -- the env's
random-generator state just before its reset (plus ``get_state()`` for envs of ours that keep state
across episodes) -- and the actions taken since. Restoring replays exactly that, so a resumed run
continues the same episodes as an uninterrupted one. (Sync vector envs only: async envs live in
other processes, so a resumed async run starts fresh episodes.)
An env whose replay does not arrive at the checkpoint's observation keeps state that this record
lacks; the resume warns (MinAtar's own generator did: envs/minatar_env.py now hands it over).

Env-specific running totals: every floating-point entry of a step's ``info`` (one number per env,
e.g. the MNIST bandit's ``regret``) is summed into ``info_totals`` -- the trainer logs each as
``charts/cumulative_<key>`` -- without the collector knowing what any of them means.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlscratch.agent import Step
from rlscratch.envs.wrappers import ENV_REWARD, ObservationNormalizer, env_reward
from rlscratch.state import from_json_array, json_array


@dataclass
class FinishedEpisode:
    env_index: int
    episode_return: float
    length: int


class Collector:
    """Owns a vector env, its current observations and per-env episode statistics."""

    def __init__(self, envs: gym.vector.VectorEnv, seeds: list[int],
                 normalizer: ObservationNormalizer | None = None) -> None:
        self.envs = envs
        self.num_envs = envs.num_envs
        self.normalizer = normalizer
        self.exact_resume = isinstance(envs, gym.vector.SyncVectorEnv)
        self.episode_return = np.zeros(self.num_envs)
        self.episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self.info_totals: dict[str, float] = {}
        self.episodes = 0
        self._starts: list[dict] = [{"seed": s} for s in seeds]
        self._actions: list[list] = [[] for _ in range(self.num_envs)]
        raw_obs, _ = envs.reset(seed=list(seeds))
        self.raw_obs = raw_obs
        self.obs = self._agent_view(raw_obs, update=True)

    def _agent_view(self, raw: np.ndarray, update: bool) -> np.ndarray:
        if self.normalizer is None:
            return raw
        if update:
            self.normalizer.update(raw)
        return self.normalizer.normalize(raw)

    def _sub_env(self, i: int) -> gym.Env:
        return self.envs.envs[i]  # type: ignore[attr-defined]

    def _capture_start(self, i: int) -> dict:
        """How env i's next episode will begin: its generator state before reset (and its own state)."""
        if not self.exact_resume:
            return {}
        unwrapped = self._sub_env(i).unwrapped
        start = {"rng": unwrapped.np_random.bit_generator.state}
        if hasattr(unwrapped, "get_state"):
            start["env_state"] = unwrapped.get_state()
        return start

    def step(self, actions: np.ndarray) -> tuple[Step, list[FinishedEpisode]]:
        raw_next, reward, terminated, truncated, info = self.envs.step(actions)
        for i in range(self.num_envs):
            self._actions[i].append(actions[i])
        next_obs = self._agent_view(raw_next, update=True)
        step = Step(self.obs, actions, reward, next_obs, terminated, truncated, info)
        self.episode_return += env_reward(reward, info)  # the env's own, whatever reward wrappers do
        self.episode_length += 1
        self._add_info_totals(info)

        done = terminated | truncated
        finished = []
        if done.any():
            for i in np.flatnonzero(done):
                finished.append(FinishedEpisode(int(i), float(self.episode_return[i]), int(self.episode_length[i])))
                self._starts[i] = self._capture_start(i)
                self._actions[i] = []
            self.episode_return[done] = 0.0
            self.episode_length[done] = 0
            self.episodes += len(finished)
            reset_raw, _ = self.envs.reset(options={"reset_mask": done})
            raw_next = np.where(done.reshape((-1,) + (1,) * (raw_next.ndim - 1)), reset_raw, raw_next)
            next_obs = self._agent_view(raw_next, update=False)
        self.raw_obs, self.obs = raw_next, next_obs
        return step, finished

    def _add_info_totals(self, info: dict) -> None:
        for key, value in info.items():
            if key.startswith("_") or key == ENV_REWARD:  # (the env's own rewards: in episode_return)
                continue
            if not isinstance(value, np.ndarray) or value.shape != (self.num_envs,):
                continue
            if np.issubdtype(value.dtype, np.floating):
                mask = info.get(f"_{key}")  # gymnasium's "this env reported it" mask
                total = value[mask].sum() if mask is not None else value.sum()
                self.info_totals[key] = self.info_totals.get(key, 0.0) + float(total)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {
            "raw_obs": self.raw_obs, "obs": self.obs,
            "episode_return": self.episode_return, "episode_length": self.episode_length,
            "counters": json_array({"episodes": self.episodes, "info_totals": self.info_totals}),
            "starts": json_array(_jsonable(self._starts)),
        }
        for i, actions in enumerate(self._actions):
            state[f"actions_{i}"] = np.asarray(actions).reshape((len(actions),) + self.envs.single_action_space.shape)
        if self.normalizer is not None:
            state.update({f"normalizer/{k}": v for k, v in self.normalizer.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state["obs"].shape != self.obs.shape:
            raise ValueError(f"the checkpoint ran {state['obs'].shape[0]} envs of observation shape "
                             f"{state['obs'].shape[1:]}, this config has {self.obs.shape}")
        counters = from_json_array(state["counters"])
        self.episodes = counters["episodes"]
        self.info_totals = dict(counters.get("info_totals", {}))
        if counters.get("regret"):  # checkpoints from before info totals were generic
            self.info_totals["regret"] = counters["regret"]
        self.episode_return = state["episode_return"].copy()
        self.episode_length = state["episode_length"].copy()
        if self.normalizer is not None:
            self.normalizer.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("normalizer/")})
        starts = from_json_array(state["starts"])
        if not (self.exact_resume and all(starts)):
            # Without a replay log the envs simply begin new episodes.
            self.episode_return[:] = 0.0
            self.episode_length[:] = 0
            return
        # A replay that does not arrive at the saved observation means the env keeps state across
        # episodes that its start record lacks: say so, rather than let the run drift silently.
        drifted = [i for i in range(self.num_envs)
                   if not np.array_equal(self._replay(i, starts[i], state[f"actions_{i}"]), state["raw_obs"][i])]
        if drifted:
            warnings.warn(f"resume: env(s) {drifted} did not replay to the checkpoint's observation -- the env keeps "
                          "state across episodes that checkpoints do not hold (give its class get_state/set_state, "
                          "as envs/minatar_env.py does); the run goes on, but not exactly as an uninterrupted one",
                          RuntimeWarning, stacklevel=2)
        self._starts = starts
        self._actions = [list(state[f"actions_{i}"]) for i in range(self.num_envs)]
        self.raw_obs, self.obs = state["raw_obs"].copy(), state["obs"].copy()

    def _replay(self, i: int, start: dict, actions: np.ndarray) -> np.ndarray:
        """Env i brought back to where the checkpoint left it; its observation there."""
        env = self._sub_env(i)
        if "seed" in start:
            obs, _ = env.reset(seed=start["seed"])
        else:
            unwrapped = env.unwrapped
            if "env_state" in start:
                unwrapped.set_state(start["env_state"])
            unwrapped.np_random.bit_generator.state = start["rng"]
            obs, _ = env.reset()
        for action in actions:
            obs = env.step(action)[0]
        return obs


def _jsonable(value):
    """Bit-generator states hold numpy integers and arrays; JSON wants plain Python."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
