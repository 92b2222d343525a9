"""Experiment configs: one YAML file = one experiment, loaded into typed dataclasses.

A config has the sections ``env``, ``agent``, ``model``, ``train``, ``log`` and a ``seed``. Every
section is a dataclass below, except ``agent``: its ``name`` picks the agent class, and the rest is
validated against that agent's own ``Config`` dataclass. ``from_dict`` does the validation for all of
them: unknown keys get a "did you mean", wrong types and out-of-range values name the key, the value
and what is allowed. Range limits live next to each field, in its metadata (``ge``, ``gt``, ``le``,
``lt``, ``choices``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def bounded(default: Any = dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, choices=None,
            default_factory: Any = dataclasses.MISSING, help: str = "") -> Any:
    """A dataclass field with its allowed range/choices recorded for validation."""
    metadata = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, help=help).items()
                if v is not None and v != ""}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# -- the shared sections ----------------------------------------------------------------------------
@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    kwargs: dict = field(default_factory=dict)
    num_envs: int = bounded(1, ge=1)
    vectorization: str = bounded("sync", choices=("sync", "async"))
    # Each item is a name or {name: kwargs}: "normalize_observation" (rlscratch's, saved in
    # checkpoints), one of rlscratch.envs.wrappers, or any gymnasium.wrappers class.
    wrappers: list = field(default_factory=list)
    eval_kwargs: dict = field(default_factory=dict)  # overrides of `kwargs` for evaluation envs
    eval_num_envs: int = bounded(1, ge=1)


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = bounded("relu", choices=("relu", "tanh", "sigmoid", "elu", "leaky_relu"))
    init: str = bounded("he", choices=("he", "he_uniform", "xavier", "xavier_normal", "orthogonal"))
    # The network in the arrow notation (docs/notation.md), e.g. "M_1: dense(128); X --[M_1|relu]-> h --[M_2]-> Q";
    # when given, it replaces hidden/activation (init stays the default initialiser of its dense layers).
    notation: str | None = None


@dataclass
class TrainConfig:
    total_steps: int = bounded(100_000, ge=1, help="environment steps (summed over parallel envs)")
    eval_every: int = bounded(0, ge=0, help="0: evaluate only at the end")
    eval_episodes: int = bounded(20, ge=1)
    checkpoint_every: int = bounded(0, ge=0, help="environment steps between checkpoints; 0: none on the step grid")
    checkpoint_minutes: float = bounded(5.0, ge=0, help="wall-clock minutes between checkpoints; 0: none on a timer")
    keep_checkpoints: int = bounded(3, ge=1)
    log_every: int = bounded(1000, ge=1, help="environment steps between TensorBoard writes")
    divergence_guard: bool = True  # stop with exit status 3 at the first non-finite loss, gradient or parameter
    divergence_limit: float = bounded(1e12, ge=0, help="guard on: a loss/* above this stops the run too; 0: none")


@dataclass
class LogConfig:
    root: str = "runs"
    tensorboard: bool = True
    progress: bool = True


@dataclass
class RunConfig:
    name: str
    seed: int = bounded(0, ge=0)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: dict = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


# -- validation -------------------------------------------------------------------------------------
def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                "dict": "a mapping", "list": "a list"}.get(hint.__name__, hint.__name__)
    return str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting only where YAML is known to be ambiguous
    (PyYAML reads ``1e-3`` as a string, and ``5.0e4`` as a float where an integer is meant)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_hint,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _as_float(value)
        if number is not None and number.is_integer():
            return int(number)
    elif hint is float:
        number = _as_float(value)
        if number is not None and not isinstance(value, bool):
            return number
    elif hint in (str, dict, list) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _check_range(value: Any, meta: typing.Mapping, where: str) -> None:
    choices = meta.get("choices")
    if choices and value not in choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"{where}: {value!r} is not allowed{suggestion}; choose from {', '.join(map(str, choices))}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    limits = {"ge": (">=", value >= meta["ge"]) if "ge" in meta else None,
              "gt": (">", value > meta["gt"]) if "gt" in meta else None,
              "le": ("<=", value <= meta["le"]) if "le" in meta else None,
              "lt": ("<", value < meta["lt"]) if "lt" in meta else None}
    checks = {key: check for key, check in limits.items() if check is not None}
    if not all(ok for _, ok in checks.values()):
        allowed = " and ".join(f"{symbol} {meta[key]}" for key, (symbol, _) in checks.items())
        raise ConfigError(f"{where}: {value!r} is out of range; allowed: {allowed}")


def unknown_key_error(key: str, allowed: typing.Iterable[str], where: str) -> ConfigError:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    suggestion = f" -- did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown key '{where}.{key}'{suggestion} (allowed: {', '.join(allowed) or 'none'})"
                       if where else f"unknown key '{key}'{suggestion} (allowed: {', '.join(allowed)})")


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, validating every key (see module docstring)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise unknown_key_error(str(key), fields, where)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key '{path}'")
            continue
        value = _coerce(data[name], hints[name], path)
        _check_range(value, f.metadata, path)
        values[name] = value
    return cls(**values)


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


# -- files and overrides ----------------------------------------------------------------------------
def packaged_configs_dir() -> Path | None:
    try:
        path = Path(str(importlib.resources.files("rlscratch.configs")))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_dir() else None


def resolve_config_path(name: str) -> Path:
    """A path is used as given; a bare name is looked up in ./configs, then in the installed configs."""
    given = Path(name)
    candidates = [given] if given.suffix else [given, given.with_suffix(".yaml")]
    if given.parent == Path("."):
        for folder in (Path("configs"), packaged_configs_dir()):
            if folder is not None:
                candidates += [folder / c.name for c in candidates[:2]]
    for path in candidates:
        if path.is_file():
            return path
    available = sorted({p.stem for folder in (Path("configs"), packaged_configs_dir()) if folder and folder.is_dir()
                        for p in folder.glob("*.yaml")})
    close = difflib.get_close_matches(given.stem, available, n=1)
    hint = f" -- did you mean '{close[0]}.yaml'?" if close else ""
    raise ConfigError(f"config '{name}' not found{hint} (bare names are looked up in configs/; "
                      f"available: {', '.join(available) or 'none'})")


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections (env, agent, train, ...), got {data!r}")
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``key.path=value`` (the value is read as YAML: 3, 1e-3, true, [64, 64])."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value, e.g. --set agent.lr=0.001")
    path, _, raw = assignment.partition("=")
    keys = path.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {assignment!r}: empty key in '{path}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _as_float(value) is not None:
        value = float(value)  # YAML 1.1 reads 1e-3 as a string; on a command line it means a number
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: '{key}' holds {child!r}, not a section")
        node = child
    node[keys[-1]] = value


def load_config(name: str, overrides: typing.Sequence[str] = (), seed: int | None = None) -> tuple[RunConfig, dict]:
    """Read, override and validate a config. Returns (validated shared sections, raw dict); the
    ``agent`` section is validated later by the agent class it names."""
    path = resolve_config_path(name)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    for assignment in overrides:
        apply_override(data, assignment)
    if seed is not None:
        data["seed"] = seed
    config = from_dict(RunConfig, data)
    if not isinstance(config.agent, dict) or "name" not in config.agent:
        raise ConfigError("missing key 'agent.name' (a registered agent such as 'dqn', or 'package.module:Class')")
    return config, data
