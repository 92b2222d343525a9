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
import importlib
import math
import re
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
    hidden: list[int] = bounded(default_factory=lambda: [64, 64], ge=1, help="units of each hidden layer")
    activation: str = bounded("relu", choices=("relu", "tanh", "sigmoid", "elu", "leaky_relu"))
    init: str = bounded("he", choices=("he", "he_uniform", "xavier", "xavier_normal", "orthogonal"))
    # The network in the arrow notation (docs/notation.md), e.g. "M_1: dense(128); X --[M_1|relu]-> h --[M_2]-> Q";
    # when given, it replaces hidden/activation (init stays the default initialiser of its dense layers).
    notation: str | None = None
    # An image encoder before the MLP head: a preset name (minatar, nature) or {type: conv, channels: [...],
    # kernel, stride, padding, dense: [...]}; see rlscratch/encoders.py.
    encoder: str | dict | None = None


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
    stop_at_return: float | None = bounded(None, help="stop the run, as finished, when an evaluation's mean return "
                                                       "reaches this; null: never")
    distributed: dict | None = bounded(None, help="MuZero on Ray: {self_play_workers, reanalyze_workers, address, "
                                                  "weight_sync_interval, replay_ratio, ...} (rlscratch/distributed.py)")


@dataclass
class LogConfig:
    root: str = "runs"
    tensorboard: bool = True
    progress: bool = True


@dataclass
class RunConfig:
    name: str
    seed: int = bounded(0, ge=0)
    # Modules imported before the agent is looked up: where your own register_agent(...) calls live.
    imports: list[str] = field(default_factory=list)
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
                errors.append((option, str(err)))
        # Report the error of the option the value was meant for: a mapping for a dataclass (a schedule),
        # anything else for the plain types (so `lr: .inf` is "not a finite number", not "expected a mapping").
        for option, message in errors:
            if isinstance(value, dict) == (dataclasses.is_dataclass(option) or option is dict):
                raise ConfigError(message)
        raise ConfigError(errors[0][1])
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
        if isinstance(value, float) and not math.isfinite(value):  # YAML's .inf and .nan
            raise ConfigError(f"{where}: {value!r} is not a finite number; give a finite value")
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
    if isinstance(value, list):  # a list field's limits hold for every item (model.hidden: each size >= 1)
        for i, item in enumerate(value):
            _check_range(item, meta, f"{where}[{i}]")
        return
    if isinstance(value, float) and not math.isfinite(value):  # inside untyped lists (schedules) too
        raise ConfigError(f"{where}: {value!r} is not a finite number; give a finite value")
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
def packaged_configs_dirs() -> list[Path]:
    """The folders of the installed ``rlscratch.configs`` (a namespace package: it has no
    ``__init__.py``, so ``importlib.resources`` hands back a multiplexed path; its ``__path__`` is
    the list of real folders, from an editable install, a plain one, or the checkout)."""
    try:
        module = importlib.import_module("rlscratch.configs")
    except ImportError:
        return []
    return [Path(p) for p in getattr(module, "__path__", []) if Path(p).is_dir()]


def config_folders() -> list[Path]:
    """Where bare config names are looked up: ./configs, then the installed configs."""
    folders = [Path("configs"), *packaged_configs_dirs()]
    return [f for f in folders if f.is_dir()]


def shipped_configs() -> list[str]:
    """Names of the configs a bare ``--config NAME`` finds."""
    return sorted({p.stem for folder in config_folders() for p in folder.glob("*.yaml")})


def resolve_config_path(name: str) -> Path:
    """A path is used as given; a bare name is looked up in ./configs, then in the installed configs."""
    given = Path(name)
    candidates = [given] if given.suffix else [given, given.with_suffix(".yaml")]
    if given.parent == Path("."):
        for folder in config_folders():
            candidates += [folder / c.name for c in candidates[:2]]
    for path in candidates:
        if path.is_file():
            return path
    available = shipped_configs()
    close = difflib.get_close_matches(given.stem, available, n=1)
    hint = f" -- did you mean '{close[0]}.yaml'?" if close else ""
    raise ConfigError(f"config '{name}' not found{hint} (bare names are looked up in configs/; "
                      f"available: {', '.join(available) or 'none'})")


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the
    last one silently, so `lr: 0.1` ... `lr: 0.001` further down would quietly win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first is not None:
                where = f"lines {first} and {line}" if first != line else f"line {line}"
                raise ConfigError(f"{self.name}: key '{key}' appears twice ({where}); keep one of them")
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    """A config file as a dict: UTF-8 YAML, a mapping at the top, no key given twice."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); "
                          "save it with UTF-8 encoding") from None
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{at}: {problem}") from None
    finally:
        loader.dispose()
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


def run_name(config: RunConfig, stamp: str) -> str:
    """A run directory's name, ``<config>-<env>-s<seed>-<timestamp>``: a seed sweep or an env swapped
    by --set stays readable in ``ls runs/`` and TensorBoard. The env is its id's last part
    (rlscratch/MNISTBandit-v0 -> MNISTBandit-v0), reduced to characters safe in a file name."""
    env = re.split(r"[/:]", config.env.id)[-1]
    env = re.sub(r"[^A-Za-z0-9._-]", "_", env) or "env"
    return f"{config.name}-{env}-s{config.seed}-{stamp}"


def import_modules(config: RunConfig) -> None:
    """Import the config's ``imports`` (modules whose ``register_agent`` calls name agents)."""
    for name in config.imports:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"imports: cannot import module '{name}' ({err}); is it on the Python path "
                              "(the current directory counts)?") from None


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
    import_modules(config)
    return config, data


# Keys added after runs were already being saved: an older run's config.yaml may lack them.
ADDED_LATER = frozenset({"imports", "train.stop_at_return", "train.distributed"})


def require_complete(data: dict, path: Path) -> None:
    """A run's saved config.yaml holds every key, defaults filled in (the trainer writes it so). One
    that lacks a section or a key was truncated or cut by hand; filling the gap with today's default
    would silently resume a different experiment, so it is refused."""
    def missing(cls: type, section: Any, where: str) -> str | None:
        if not isinstance(section, dict):
            return where
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{where}.{f.name}" if where else f.name
            if f.name not in section:
                if key in ADDED_LATER:
                    continue
                return key
            if dataclasses.is_dataclass(hints[f.name]):
                found = missing(hints[f.name], section[f.name], key)
                if found:
                    return found
        return None

    gap = missing(RunConfig, data, "")
    if gap is None and not (isinstance(data["agent"], dict) and isinstance(data["agent"].get("name"), str)):
        gap = "agent.name"
    if gap is None:
        from .agent import resolve_agent  # the agent's own fields were saved too

        import_modules(from_dict(RunConfig, data))
        cls = resolve_agent(data["agent"]["name"])
        gap = next((f"agent.{f.name}" for f in dataclasses.fields(cls.Config) if f.name not in data["agent"]), None)
    if gap is not None:
        raise ConfigError(f"{path} is incomplete: it has no '{gap}' (truncated or edited?); a run's config.yaml "
                          "holds every key -- restore the file, or start a new run")


def load_saved_config(path: Path, overrides: typing.Sequence[str] = ()) -> tuple[RunConfig, dict]:
    """A run directory's config.yaml (which must be complete: ``require_complete``), plus overrides."""
    data = read_yaml(path)
    require_complete(data, path)
    for assignment in overrides:
        apply_override(data, assignment)
    config = from_dict(RunConfig, data)
    import_modules(config)
    return config, data


def describe_fields(cls: type) -> list[str]:
    """One line per field of a config dataclass: name, type, default, allowed range, help text."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        meta = f.metadata
        limits = [f"{symbol} {meta[key]}" for key, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                  if key in meta]
        allowed = "one of " + ", ".join(map(str, meta["choices"])) if "choices" in meta else " and ".join(limits)
        kind = hints[f.name].__name__ if isinstance(hints[f.name], type) else str(hints[f.name]).replace("typing.", "")
        rows.append((f.name, kind, "null" if default is None else str(default), allowed, meta.get("help", "")))
    rows.insert(0, ("key", "type", "default", "allowed", "meaning"))
    widths = [max([len(r[i]) for r in rows] + [0]) for i in range(4)]
    return [("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]).rstrip() for row in rows]
