"""Environment creation, in one place: gymnasium ids and our own registered envs, wrapped as the
config says, vectorised with gymnasium's vector API.

Vector envs are built with autoreset *disabled*: the collector (rlscratch.collector) resets finished
envs itself. That keeps every transition it hands an agent a real one -- the final observation of an
ended episode is the ``next_obs`` it returned, not a reset observation -- and lets it record what it
needs to rebuild each env's state exactly on resume.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from rlscratch.config import EnvConfig
from rlscratch.errors import ConfigError

from .vector import LoopVectorEnv
from .wrappers import WRAPPERS, ObservationNormalizer, RecordEnvReward

VECTOR_LEVEL = ("normalize_observation",)
# Evaluation episodes of envs registered without a time limit (MinAtar's) end after this many steps
# unless env.eval_kwargs sets max_episode_steps.
EVAL_MAX_EPISODE_STEPS = 10_000
MINATAR_PREFIX = "MinAtar/"


def register_minatar() -> None:
    """Register MinAtar's gymnasium ids (MinAtar/Breakout-v1, ...) with envs/minatar_env.py's class: MinAtar's
    own env plus the state (its generator, its last action) that exact resume needs."""
    try:
        from .minatar_env import register
    except ImportError:
        raise ConfigError("env.id: MinAtar games need the minatar package: pip install -e '.[minatar]'") from None
    register()


def _wrapper_specs(config: EnvConfig) -> list[tuple[str, dict]]:
    specs = []
    for i, item in enumerate(config.wrappers):
        if isinstance(item, str):
            specs.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            (name, kwargs), = item.items()
            specs.append((name, dict(kwargs or {})))
        else:
            raise ConfigError(f"env.wrappers[{i}]: expected a name or {{name: {{kwargs}}}}, got {item!r}")
    return specs


def _import_wrapper(path: str) -> Any:
    """A wrapper class by dotted path: ``gymnasium.wrappers.FrameStackObservation`` or ``pkg.mod:Wrapper``."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"env.wrappers: cannot import wrapper '{path}' ({err}); give an importable "
                          "'package.module.Class' or 'package.module:Class'") from None


def _wrap(env: gym.Env, name: str, kwargs: dict[str, Any]) -> gym.Env:
    if "." in name or ":" in name:
        cls = _import_wrapper(name)
    else:
        cls = WRAPPERS.get(name) or getattr(gym.wrappers, name, None)
    if cls is None:
        raise ConfigError(f"env.wrappers: unknown wrapper '{name}' (rlscratch's: {', '.join(WRAPPERS)}, "
                          f"{', '.join(VECTOR_LEVEL)}; a gymnasium.wrappers class name; or a dotted path "
                          "'package.module:Class')")
    try:
        return cls(env, **kwargs)
    except TypeError as err:
        raise ConfigError(f"env.wrappers: {name}: {err}") from None


def make_env(config: EnvConfig, evaluation: bool = False, render_mode: str | None = None) -> gym.Env:
    """One environment, wrapped. Evaluation envs take ``eval_kwargs`` over ``kwargs``."""
    import rlscratch.envs  # noqa: F401 - registers rlscratch's own environment ids

    if config.id.startswith(MINATAR_PREFIX):
        register_minatar()
    kwargs = {**config.kwargs, **(config.eval_kwargs if evaluation else {})}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if evaluation and "max_episode_steps" not in kwargs and config.id in gym.registry \
            and gym.registry[config.id].max_episode_steps is None:
        kwargs["max_episode_steps"] = EVAL_MAX_EPISODE_STEPS  # an episode with no end would hang evaluation
    try:
        env = gym.make(config.id, **kwargs)
    except gym.error.DependencyNotInstalled as err:
        raise ConfigError(f"env.id: {config.id} needs an optional dependency ({str(err).splitlines()[0]}); "
                          "for Box2D envs: pip install -e '.[box2d]'") from None
    except gym.error.Error as err:
        raise ConfigError(f"env.id: {str(err).splitlines()[0]}") from None
    except TypeError as err:
        raise ConfigError(f"env.kwargs: {config.id} rejected them ({err})") from None
    specs = [(name, wrapper_kwargs) for name, wrapper_kwargs in _wrapper_specs(config) if name not in VECTOR_LEVEL]
    if specs:  # under every configured wrapper: logged and evaluated returns stay the env's own
        env = RecordEnvReward(env)
    for name, wrapper_kwargs in specs:
        env = _wrap(env, name, wrapper_kwargs)
    return env


def make_vec_env(config: EnvConfig, evaluation: bool = False) -> gym.vector.VectorEnv:
    """``num_envs`` (or ``eval_num_envs``) copies, sync by default (envs/vector.py), with autoreset disabled."""
    n = config.eval_num_envs if evaluation else config.num_envs
    factory = functools.partial(make_env, config, evaluation)
    probe = make_env(config, evaluation)  # fail here, in this process, with a clear message
    probe.close()
    refuse_structured_observations(probe.observation_space, config)
    vector_cls = gym.vector.AsyncVectorEnv if config.vectorization == "async" else LoopVectorEnv
    return vector_cls([factory] * n, autoreset_mode=AutoresetMode.DISABLED)


def refuse_structured_observations(space: gym.Space, config: EnvConfig) -> None:
    """Tuple and Dict observations (Blackjack-v1's, say) have no array shape for a network's input:
    refuse them up front, naming the wrapper that turns them into one flat vector."""
    if isinstance(space, (gym.spaces.Tuple, gym.spaces.Dict)):
        raise ConfigError(f"env.id: {config.id} observes a {type(space).__name__} space ({space}), which rlscratch's "
                          "networks cannot take; flatten it with gymnasium.wrappers.FlattenObservation: "
                          "add FlattenObservation to env.wrappers")


def make_obs_normalizer(config: EnvConfig, observation_space: gym.Space) -> ObservationNormalizer | None:
    for name, kwargs in _wrapper_specs(config):
        if name == "normalize_observation":
            assert observation_space.shape is not None
            return ObservationNormalizer(tuple(observation_space.shape), **kwargs)
    return None


def spaces_of(vec_env: gym.vector.VectorEnv) -> tuple[gym.Space, gym.Space]:
    """(single observation space, single action space)."""
    return vec_env.single_observation_space, vec_env.single_action_space


def env_seeds(seed_sequence: np.random.SeedSequence, n: int) -> list[int]:
    """Distinct, reproducible reset seeds for ``n`` parallel envs."""
    return [int(s.generate_state(1)[0]) for s in seed_sequence.spawn(n)]
