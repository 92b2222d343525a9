"""One vocabulary for every agent's optimizer and every value that changes over training.

An agent's config has one ``optim:`` section, the same for every agent:

    optim:
      name: adam                 # adam, adamw, rmsprop, sgd, momentum, nesterov
      lr: 1.0e-3                 # a number, or a schedule (below)
      max_grad_norm: 10.0        # global gradient-norm clip; 0: none
      weight_decay: 0.0
      betas: [0.9, 0.999]        # adam, adamw
      eps: 1.0e-8                # adam, adamw, rmsprop
      alpha: 0.99                # rmsprop's smoothing
      momentum: 0.9              # momentum, nesterov

Keys left out take the agent's defaults (each agent's Config says which), so ``optim: {lr: 5e-4}``
changes only the learning rate.

A *schedule* is a number that changes over training, written the same way wherever one is allowed
(the learning rate, DQN's epsilon and PER beta, PPO's clip range, an entropy coefficient, ...):

    {kind: linear, start: 1.0e-3, end: 0.0, steps: 50000, clock: env_steps}

``kind``: constant (start), linear (start -> end over ``steps``, then held at end) or cosine (half a
cosine from start down to end, then held). ``clock`` says what ``steps`` counts: ``env_steps`` (the
environment steps of the run, summed over parallel envs -- the count ``train.total_steps`` uses) or
``updates`` (gradient steps taken by the agent's optimizer). ``steps`` left out means "the whole run"
where the agent knows its length (supervised learning: epochs x minibatches per epoch).

Keys from before this vocabulary (``lr_final``, ``anneal_steps``, ...) are refused with a one-line
"renamed to ..." error (``check_renamed``), so an old config fails loudly instead of silently
training with a constant learning rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlscratch import nn
from rlscratch.config import bounded
from rlscratch.errors import ConfigError

CLOCKS = ("env_steps", "updates")
KINDS = ("constant", "linear", "cosine")
OPTIMIZER_NAMES = ("adam", "adamw", "rmsprop", "sgd", "momentum", "nesterov")


@dataclass
class ScheduleConfig:
    """A value over training: constant, linear or cosine from ``start`` to ``end`` over ``steps`` of ``clock``."""

    start: float
    end: float = 0.0
    steps: int | None = bounded(None, ge=1, help="clock ticks from start to end; null: the whole run")
    kind: str = bounded("linear", choices=KINDS)
    clock: str = bounded("env_steps", choices=CLOCKS, help="what steps counts: env_steps or updates")


ScheduleSpec = ScheduleConfig | float


def schedule_field(start: float, end: float, steps: int | None, clock: str = "env_steps", help: str = "") -> Any:
    """A Config field holding a schedule (or a plain number), by default linear from start to end."""
    return field(default_factory=lambda: ScheduleConfig(start, end, steps, "linear", clock),
                 metadata={"help": help} if help else {})


class Schedule:
    """A ``ScheduleSpec`` made callable: ``schedule(env_steps, updates)`` is its value now.

    The same formulas as rlscratch.nn.optim's schedule functions (one place for the maths):
        linear:  start + (end - start) * min(t / steps, 1)
        cosine:  end + (start - end) * (1 + cos(pi * min(t / steps, 1))) / 2
    with t the count of the schedule's clock.
    """

    def __init__(self, spec: ScheduleSpec, where: str = "schedule", run_length: int | None = None) -> None:
        if isinstance(spec, Mapping):
            spec = ScheduleConfig(**spec)
        self.spec, self.where, self.run_length = spec, where, run_length
        waits = isinstance(spec, ScheduleConfig) and spec.kind != "constant" and spec.steps is None
        # (a schedule that spans the run is built once set_run_length knows how long that is)
        self._fn: Callable[[int], float] | None = None if waits and run_length is None else self._build()

    @property
    def clock(self) -> str:
        return self.spec.clock if isinstance(self.spec, ScheduleConfig) else "env_steps"

    def _build(self) -> Callable[[int], float]:
        spec = self.spec
        if not isinstance(spec, ScheduleConfig):
            return nn.optim.constant(float(spec))
        if spec.kind == "constant":
            return nn.optim.constant(spec.start)
        steps = spec.steps if spec.steps is not None else self.run_length
        if steps is None:
            raise ConfigError(f"{self.where}.steps: missing; this agent does not know its run's length, "
                              f"so give the schedule's length (e.g. steps: 100000)")
        if spec.kind == "linear":
            return nn.optim.linear(spec.start, spec.end, steps)
        return nn.optim.cosine(spec.start, steps, min_lr=spec.end)

    def set_run_length(self, run_length: int) -> None:
        """For schedules whose ``steps`` was left out: they span ``run_length`` ticks of their clock."""
        self.run_length = run_length
        self._fn = self._build()

    def __call__(self, env_steps: int, updates: int = 0) -> float:
        if self._fn is None:
            self._fn = self._build()  # raises the one-line "missing steps" error
        return self._fn(updates if self.clock == "updates" else env_steps)


def require_steps(where: str, spec: ScheduleSpec) -> None:
    """Agents that do not know their run's length call this at construction: a schedule without
    ``steps`` is a config error now, not a crash hours later."""
    if isinstance(spec, ScheduleConfig) and spec.kind != "constant" and spec.steps is None:
        raise ConfigError(f"{where}.steps: missing; give the schedule's length in {spec.clock} (e.g. steps: 100000)")


@dataclass
class OptimConfig:
    """The ``optim:`` section. ``None`` means "the agent's default" (filled in by ``with_defaults``)."""

    name: str | None = bounded(None, choices=OPTIMIZER_NAMES)
    lr: ScheduleConfig | float | None = bounded(None, help="a number or a schedule {kind, start, end, steps, clock}")
    max_grad_norm: float | None = bounded(None, ge=0, help="global gradient-norm clip; 0: none")
    weight_decay: float | None = bounded(None, ge=0, help="L2 (AdamW: decoupled weight decay)")
    betas: list[float] | None = None
    eps: float | None = bounded(None, gt=0)
    alpha: float | None = bounded(None, gt=0, lt=1, help="rmsprop's smoothing constant")
    momentum: float | None = bounded(None, ge=0, lt=1)

    def with_defaults(self, **defaults: Any) -> OptimConfig:
        """This section with every key it leaves out taken from ``defaults``, then the library's
        (adam, lr 1e-3, no clipping, no weight decay, betas (0.9, 0.999), eps 1e-8, alpha 0.99, momentum 0.9)."""
        base = dict(name="adam", lr=1e-3, max_grad_norm=0.0, weight_decay=0.0, betas=[0.9, 0.999], eps=1e-8,
                    alpha=0.99, momentum=0.9)
        base.update(defaults)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        filled = {key: base[key] if value is None else value for key, value in values.items()}
        if isinstance(filled["lr"], Mapping):
            filled["lr"] = ScheduleConfig(**filled["lr"])
        if len(filled["betas"]) != 2:
            raise ConfigError(f"agent.optim.betas: expected two numbers [beta1, beta2], got {filled['betas']!r}")
        return OptimConfig(**filled)


def optim_field(**defaults: Any) -> Any:
    """``optim: OptimConfig = optim_field(name=..., lr=...)`` -- the agent's defaults, which a config's
    ``optim:`` section overrides key by key (the agent Config's __post_init__ calls ``with_defaults``)."""
    return field(default_factory=OptimConfig, metadata={"defaults": defaults})


def finish_config(config: Any, knows_run_length: bool = False) -> None:
    """Call from an agent Config's __post_init__: fills every ``optim_field`` with the agent's defaults,
    and -- unless the agent knows its run's length -- requires every schedule to say its ``steps``."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if "defaults" in f.metadata:
            if isinstance(value, Mapping):
                value = OptimConfig(**value)
            value = value.with_defaults(**f.metadata["defaults"])
            setattr(config, f.name, value)
            if not knows_run_length:
                require_steps(f"agent.{f.name}.lr", value.lr)
        elif isinstance(value, ScheduleConfig) and not knows_run_length:
            require_steps(f"agent.{f.name}", value)


def make_optimizer(optim: OptimConfig, model: nn.Module, env_steps: Callable[[], int] | None = None,
                   lr: Schedule | None = None) -> nn.optim.Optimizer:
    """The optimizer an ``optim:`` section describes, over ``model``'s flat parameters.

    The learning rate is evaluated at every step on its clock: ``updates`` is the optimizer's own
    step count; ``env_steps`` reads ``env_steps()`` (the agent's count of environment steps).
    ``lr``: a Schedule built by the caller (to set its run length later); default: from ``optim.lr``.
    """
    schedule = lr if lr is not None else Schedule(optim.lr, "agent.optim.lr")
    if schedule.clock == "env_steps" and isinstance(optim.lr, ScheduleConfig) and optim.lr.kind != "constant":
        if env_steps is None:
            raise ConfigError("agent.optim.lr.clock: this agent counts no env steps; use clock: updates")
        clock = env_steps
    else:
        def clock() -> int:
            return 0  # a constant, or clock: updates -- the optimizer's own step count below

    def rate(update: int) -> float:
        return schedule(clock(), update)
    name, wd = optim.name, optim.weight_decay
    if name in ("adam", "adamw"):
        cls = nn.Adam if name == "adam" else nn.AdamW
        return cls(model, lr=rate, betas=tuple(optim.betas), eps=optim.eps, weight_decay=wd)
    if name == "rmsprop":
        return nn.RMSprop(model, lr=rate, alpha=optim.alpha, eps=optim.eps, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        return nn.optim.Momentum(model, lr=rate, momentum=optim.momentum, nesterov=name == "nesterov",
                                 weight_decay=wd)
    return nn.SGD(model, lr=rate, weight_decay=wd)


# -- keys from before this vocabulary -----------------------------------------------------------------
RENAMED = {
    "lr": "optim.lr",
    "lr_final": "optim.lr: {kind: linear, start: <lr>, end: <lr_final>, steps: <lr_decay_steps>}",
    "lr_end": "optim.lr: {kind: linear, start: <lr>, end: <lr_end>, steps: ..., clock: updates}",
    "lr_decay_steps": "optim.lr.steps (with clock: env_steps)",
    "lr_decay_rounds": "optim.lr.steps (counted in updates: rounds x updates_per_round, clock: updates)",
    "lr_decay_updates": "optim.lr.steps (with clock: updates)",
    "lr_anneal_steps": "optim.lr: {kind: linear, start: <lr>, end: 0, steps: ..., clock: updates}",
    "anneal_steps": "optim.lr: {kind: linear, start: <lr>, end: 0, steps: <anneal_steps>}",
    "lr_schedule": "optim.lr: {kind: cosine, start: <lr>, end: 0, clock: updates}",
    "optimizer": "optim.name",
    "optimizer_eps": "optim.eps",
    "rmsprop_alpha": "optim.alpha",
    "max_grad_norm": "optim.max_grad_norm",
    "weight_decay": "optim.weight_decay",
    "anneal_clip_range": "clip_range: {kind: linear, start: <clip_range>, end: 0, steps: ...}",
    "exploration_initial_eps": "epsilon: {kind: linear, start: ..., end: ..., steps: ...}",
    "exploration_final_eps": "epsilon.end",
    "exploration_steps": "epsilon.steps",
    "epsilon_start": "epsilon: {kind: linear, start: ..., end: ..., steps: ...}",
    "epsilon_end": "epsilon.end",
    "epsilon_decay_rounds": "epsilon.steps",
    "priority_beta_steps": "priority_beta: {kind: linear, start: 0.4, end: 1.0, steps: ...}",
}


def check_renamed(section: Mapping[str, Any], config_cls: type, where: str = "agent") -> None:
    """Refuse a key that was renamed into the vocabulary above, in one line naming the new key.
    Only keys the agent's Config no longer has are checked (MuZero still has its own priority_beta_steps)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for key in section:
        if key in RENAMED and key not in fields:
            raise ConfigError(f"{where}.{key} was renamed: use {where}.{RENAMED[key]} "
                              f"(README: 'Optimizers and schedules')")
