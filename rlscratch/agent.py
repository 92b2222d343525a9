"""What every agent shares: the interface the training loop calls, the spec of the environment it
acts in, and the registry that turns a config's ``agent.name`` into a class.

An agent is driven one vector-env step at a time::

    actions = agent.act(obs)                  # obs: (num_envs, *obs_shape)
    ...the envs step...
    metrics = agent.observe(step)             # learn from the transition batch; metrics to log

and saves everything it needs to resume through ``state_dict``/``load_state_dict``. The loop itself
(resets, episode bookkeeping, evaluation, checkpoints, logging) is rlscratch.trainer's job, so an
agent file holds the algorithm and nothing else. docs/adding-an-agent.md walks through a new one.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from .config import ModelConfig, from_dict
from .errors import ConfigError
from .optim_config import check_renamed
from .state import pack, unpack


@dataclass
class EnvSpec:
    """What an agent may know about its environment before acting."""

    observation_space: gym.Space
    action_space: gym.Space
    num_envs: int = 1

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.observation_space.shape or ())

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))

    @property
    def n_actions(self) -> int:
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ConfigError(f"this agent needs a discrete action space, the env has {self.action_space}")
        return int(self.action_space.n)


@dataclass
class Step:
    """One step of every parallel env. ``next_obs`` is the observation the action led to -- for an env
    whose episode just ended, its *final* observation (the loop has already reset it, and the next
    ``act`` sees the new episode's first observation instead)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray  # the MDP ended: no value beyond this step
    truncated: np.ndarray  # cut by a time limit: the value of next_obs still counts
    info: dict

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


@dataclass
class NoHyperparameters:
    pass


class Agent:
    """Base class. Subclasses set ``Config`` (a dataclass of hyperparameters: the YAML ``agent:``
    section) and implement ``act`` and ``observe``; for checkpoints they list their live parts in
    ``components()`` and their integer/float counters in ``counters``."""

    Config: ClassVar[type] = NoHyperparameters
    counters: ClassVar[tuple[str, ...]] = ("updates",)

    def __init__(self, config: Any, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.spec = spec
        self.model_config = model
        self.rng = rng
        self.updates = 0  # gradient updates so far (the loop reports updates/s)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        """Actions for a batch of observations; ``explore=False`` is the greedy evaluation policy."""
        raise NotImplementedError

    def observe(self, step: Step) -> dict[str, float]:
        """Learn from one vector step; return scalars worth logging (losses, epsilon, ...)."""
        return {}

    def components(self) -> dict[str, Any]:
        """Objects restored in place on resume: modules, optimizers, buffers, random generators."""
        return {"rng": self.rng}

    def state_dict(self) -> dict[str, np.ndarray]:
        state = pack(**self.components())
        state.update({f"counter/{name}": np.asarray(getattr(self, name)) for name in self.counters})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        unpack(state, **self.components())
        for name in self.counters:
            setattr(self, name, state[f"counter/{name}"].item())


# -- registry -------------------------------------------------------------------------------------
# Built-in agents are imported only when named, so `--help` and config errors stay instant.
AGENTS: dict[str, str | type[Agent]] = {
    "dqn": "rlscratch.agents.dqn:DQN",
    "supervised": "rlscratch.agents.supervised:Supervised",
    "epsilon_greedy_bandit": "rlscratch.agents.epsilon_greedy_bandit:EpsilonGreedyBandit",
    "policy_gradient_bandit": "rlscratch.agents.policy_gradient_bandit:PolicyGradientBandit",
    "linucb_bandit": "rlscratch.agents.linucb_bandit:NeuralLinUCBBandit",
    "td": "rlscratch.agents.td:TD",
    "td_gru": "rlscratch.agents.td_gru:RecurrentTD",
    "a2c": "rlscratch.agents.a2c:A2C",
    "ppo": "rlscratch.agents.ppo:PPO",
    "muzero": "rlscratch.agents.muzero:MuZero",
    "gumbel_muzero": "rlscratch.agents.muzero:GumbelMuZero",
    "notation": "rlscratch.agents.notation:NotationAgent",
    "efficientzero": "rlscratch.agents.muzero:EfficientZero",
}


def register_agent(name: str, target: str | type[Agent] | None = None):
    """Register ``target`` ("package.module:Class" or a class) under ``name``; usable as a decorator."""
    if target is not None:
        AGENTS[name] = target
        return target

    def decorator(cls: type[Agent]) -> type[Agent]:
        AGENTS[name] = cls
        return cls

    return decorator


def _import_target(target: str) -> type:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"agent.name: cannot import module '{module_name}' ({err})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"agent.name: module '{module_name}' has no class '{attr}'") from None


def resolve_agent(name: str) -> type[Agent]:
    """A registered name, or a dotted path "package.module:Class" to any importable agent."""
    if ":" in name:
        cls = _import_target(name)
    elif name in AGENTS:
        cls = AGENTS[name]
        cls = _import_target(cls) if isinstance(cls, str) else cls
    else:
        close = difflib.get_close_matches(name, AGENTS, n=1)
        hint = f" -- did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"agent.name: unknown agent '{name}'{hint} (registered: {', '.join(sorted(AGENTS))}; "
                          "or give a dotted path package.module:Class)")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(f"agent.name: '{name}' is not an rlscratch Agent subclass")
    return cls


def agent_config(cls: type[Agent], section: dict) -> Any:
    """Validate the ``agent:`` section (minus ``name``) against the agent's Config dataclass."""
    params = {k: v for k, v in section.items() if k != "name"}
    check_renamed(params, cls.Config)  # lr_final, anneal_steps, ...: "renamed to agent.optim.lr ..."
    return from_dict(cls.Config, params, "agent")


def agent_config_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
