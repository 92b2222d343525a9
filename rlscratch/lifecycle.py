"""A training run's life apart from what it trains: claim the run directory, resume or start,
checkpoint, stop cleanly on a signal, refuse to save diverged numbers, and close everything.

    open:   lock RUN_DIR (one process per run) -> remove orphan *.tmp files
            -> latest checkpoint? read it and check it belongs to this run and this config
            -> nothing to do if the run already finished -> write config.yaml (atomically, last)
    loop:   (the env loop in trainer.py, or an agent's own offline loop) asks ``should_stop()``
            between units of work and ``checkpoint_due()`` after each one; ``save()`` writes
    close:  flush and close the logger, release the lock (also after an error or a second Ctrl-C)

Signals: the first SIGINT or SIGTERM only sets a flag. The loop finishes its unit of work (an env
step with the agent's update burst, a minibatch), checkpoints and returns; the command exits 130
(SIGINT) or 143 (SIGTERM). A second signal ends the process at once (``os._exit``) with the same
status: nothing more is written and the previous checkpoint stands (a checkpoint write it cuts short
leaves a ``*.tmp`` file, removed at the next start). Unwinding instead -- raising an exception
wherever the main thread happens to be -- can leave a lock inside the TensorBoard writer's queue
held, and the process then hangs at exit.

A checkpoint records the run's identity (RUN_DIR/run_id, made when the run is) and the resolved
config minus the keys a resume may change (``RESUMABLE_KEYS``), so a checkpoint copied from another
run, an edited or truncated config.yaml, or a ``--resume --set`` that would change the experiment is
refused by name.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import rlscratch
from rlscratch.checkpoint import LOOP_META, CheckpointManager, read_checkpoint
from rlscratch.config import ADDED_LATER, RunConfig, to_dict
from rlscratch.errors import CheckpointError
from rlscratch.logger import Logger, flatten_dict
from rlscratch.nn.module import Module
from rlscratch.nn.optim import Optimizer

# What `--resume RUN --set ...` may change: how long the run goes on and how it reports, never what
# it learns from. Every other key is part of the config the checkpoint was written with.
RESUMABLE_KEYS = ("train.total_steps", "train.checkpoint_every", "train.checkpoint_minutes",
                  "train.keep_checkpoints", "train.log_every", "train.divergence_guard", "train.divergence_limit",
                  "train.stop_at_return", "log.progress", "log.tensorboard", "log.root")


class DivergenceError(Exception):
    """A non-finite loss, gradient, parameter or observation: the command exits with status 3."""


class RunDirBusy(CheckpointError):
    """Another process holds the run directory's lock."""


class StopSignals:
    """While active, SIGINT/SIGTERM request a stop instead of raising; a second one aborts."""

    def __init__(self, abort_message: str = "") -> None:
        self.signum: int | None = None
        self.abort_message = abort_message
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            name = signal.Signals(signum).name
            os.write(2, f"aborted by a second {name}: nothing more written, the last checkpoint stands"
                        f"{self.abort_message}\n".encode())
            os._exit(128 + signum)
        self.signum = signum  # the loop notices it between units of work

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None


class RunLock:
    """An exclusive ``flock`` on RUN_DIR/.lock for the life of the process's run: the kernel drops
    it when the process dies, however it dies, so a killed run never leaves a stale lock."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise RunDirBusy(f"run directory {run_dir} is in use by another training process (pid {holder}); "
                             "wait for it to finish, or choose another --run-dir") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1


def identity_config(config: RunConfig, agent_cfg: Any) -> dict:
    """The resolved config (defaults filled in) as written to config.yaml."""
    data = to_dict(config)
    data["agent"] = {"name": config.agent["name"], **dataclasses.asdict(agent_cfg)}
    return data


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key != "kwargs" and not key.endswith("_kwargs"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def experiment_keys(data: dict) -> dict[str, Any]:
    """The flattened config minus RESUMABLE_KEYS: what must match between a checkpoint and a resume."""
    flat = _flat(json.loads(json.dumps(data)))  # tuples -> lists, as a checkpoint's JSON holds them
    return {k: v for k, v in flat.items() if k not in RESUMABLE_KEYS}


def config_hash(keys: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def non_finite_module(components: dict[str, Any]) -> str | None:
    """Name of the first module whose parameters or gradients, or optimizer whose state (Adam's
    squared-gradient average overflows before the weights do), hold a NaN or infinity; else None."""
    for name, obj in components.items():
        if isinstance(obj, Optimizer):
            for key in obj.state_names:
                if not np.isfinite(getattr(obj, key)).all():
                    return f"optimizer state {name}.{key}"
        if isinstance(obj, Module):
            for _, module, key in obj.named_params():
                if not np.isfinite(module.params[key]).all():
                    return f"parameters of {name}"
                if not np.isfinite(module.grads[key]).all():
                    return f"gradients of {name}"
    return None


@dataclasses.dataclass
class Resumed:
    """What the latest checkpoint restores."""

    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict


class RunSession:
    """One process's tenure of a run directory (see the module docstring). Use as a context manager."""

    def __init__(self, config: RunConfig, agent_cfg: Any, run_dir: Path, resume: bool) -> None:
        self.config = config
        self.agent_cfg = agent_cfg
        self.run_dir = run_dir
        self.signals = StopSignals(f"; continue with: python -m rlscratch.train --resume {run_dir}")
        self.lock: RunLock | None = None
        self.logger: Logger | None = None
        self.resumed: Resumed | None = None
        self.requested_resume = resume
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", config.train.keep_checkpoints)
        self.config_data = identity_config(config, agent_cfg)
        self.keys = experiment_keys(self.config_data)
        self.elapsed_before = 0.0
        self.start_time = time.perf_counter()
        self._last_save = time.monotonic()
        self.run_id = ""
        self._numpy_errors: dict | None = None

    # -- opening --------------------------------------------------------------------------------
    def __enter__(self) -> RunSession:
        self.signals.__enter__()
        # The guard reports a divergence in one line; numpy's overflow warnings on the way would only bury it.
        self._numpy_errors = np.seterr(all="ignore") if self.config.train.divergence_guard else None
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _open(self) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise CheckpointError(f"run directory {self.run_dir} is a file; choose another --run-dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.run_dir)
        self._remove_orphans()
        id_file = self.run_dir / "run_id"
        self.run_id = id_file.read_text().strip() if id_file.is_file() else ""
        latest = self.checkpoints.latest() if self.requested_resume else None
        if latest is not None:
            arrays, meta = read_checkpoint(latest, LOOP_META)
            self.resumed = Resumed(latest, arrays, meta)
            self._check_identity(latest, meta)
            self.elapsed_before = float(meta.get("elapsed", 0.0))
        if not self.run_id:
            self.run_id = uuid.uuid4().hex
            _atomic_write(id_file, self.run_id + "\n")

    def _remove_orphans(self) -> None:
        """Temporary files of a write that a kill interrupted (safe: we hold the lock)."""
        for folder in (self.run_dir, self.checkpoints.folder):
            if folder.is_dir():
                for path in folder.glob("*.tmp"):
                    path.unlink(missing_ok=True)

    def _check_identity(self, path: Path, meta: dict) -> None:
        for key, expected in (("agent", self.config.agent["name"]), ("env_id", self.config.env.id),
                              ("num_envs", self.config.env.num_envs)):
            if meta.get(key) != expected:
                raise CheckpointError(f"{path} was written with {key}={meta.get(key)!r}, but this config has "
                                      f"{expected!r}; resume with the run's own config (RUN_DIR/config.yaml)")
        if "run_id" in meta and self.run_id and meta["run_id"] != self.run_id:
            raise CheckpointError(f"{path} belongs to another run (run id {meta['run_id'][:8]}, this directory's is "
                                  f"{self.run_id[:8]}); checkpoints cannot move between run directories -- delete it")

    def check_config(self) -> None:
        """Refuse a resume whose config differs from the one the checkpoint was written with. Called
        after the agent loaded the checkpoint, so shape mismatches are reported first, by layer."""
        if self.resumed is None or "config" not in self.resumed.meta:
            return
        saved = self.resumed.meta["config"]
        # A key added to the config after the checkpoint was written stands at its default there.
        defaults = experiment_keys(to_dict(RunConfig(name=self.config.name)))
        # (a mapping's keys are flattened: train.distributed.self_play_workers stands for train.distributed)
        saved = {**{k: defaults[k] for k in ADDED_LATER if k in defaults and k not in saved
                    and not any(s.startswith(k + ".") for s in saved)}, **saved}
        if config_hash(saved) == config_hash(self.keys):
            return
        now, absent = self.keys, "<absent>"
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k, absent) != now.get(k, absent))
        shown = ", ".join(f"{k} ({saved.get(k, absent)!r} -> {now.get(k, absent)!r})" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise CheckpointError(f"{self.resumed.path} was written with another config: {shown}{more}; a resume may "
                              f"change only {', '.join(RESUMABLE_KEYS)} (is {self.run_dir / 'config.yaml'} "
                              "edited or truncated?)")

    @property
    def finished(self) -> bool:
        """The latest checkpoint is a finished run's final one, and total_steps has not been raised."""
        meta = self.resumed.meta if self.resumed else {}
        if meta.get("offline"):  # an offline agent's own length (epochs) is part of its config
            return bool(meta.get("finished"))
        target = self.config.train.stop_at_return
        if meta.get("finished") and meta.get("stopped_at_return") is not None and target is not None:
            return meta["stopped_at_return"] >= target  # stopped early, and the target has not been raised
        return bool(meta.get("finished")) and meta.get("env_steps", 0) >= self.config.train.total_steps

    def start(self, progress_total: int | None = None, progress_initial: int = 0, details: str = "") -> Logger:
        """Every check passed: write config.yaml (atomically), open the logger, say what starts.
        TensorBoard is told to drop whatever a killed run logged after its checkpoint (``purge_step``);
        a run directory without a checkpoint starts over, so everything it logged is dropped."""
        _atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(self.config_data, sort_keys=False))
        if self.resumed is not None:
            meta = self.resumed.meta
            purge, what = meta.get("log_step", meta["env_steps"]) + 1, "resuming"
        elif self.requested_resume:
            purge, what = 0, "starting over (no checkpoint yet)"
        else:
            purge, what = None, "starting"
        self.logger = Logger(self.run_dir, self.config.log.tensorboard, progress_total, progress_initial,
                             self.config.log.progress, purge_step=purge)
        self.logger.line(f"{what} {self.config.name}: agent {self.config.agent['name']}{details}, "
                         f"seed {self.config.seed}, run dir {self.run_dir}")
        # The whole resolved config, at the start (a run cut short still shows its hyperparameters).
        self.logger.hparams_start(flatten_dict(self.config_data), ["eval_mean_return"])
        return self.logger

    # -- during the run -------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.signals.requested

    def checkpoint_due(self) -> bool:
        minutes = self.config.train.checkpoint_minutes
        return minutes > 0 and time.monotonic() - self._last_save >= 60 * minutes

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    def guard(self, step: int, metrics: dict[str, float]) -> None:
        """Stop at the first non-finite scalar an agent reports (its losses)."""
        if self.config.train.divergence_guard:
            limit = self.config.train.divergence_limit
            for key, value in metrics.items():
                if not math.isfinite(value):
                    raise DivergenceError(f"{key} is {value} at step {step}")
                if limit and key.startswith("loss") and abs(value) > limit:
                    raise DivergenceError(f"{key} is {value:.3g} at step {step}, above train.divergence_limit "
                                          f"{limit:g}")

    def guard_modules(self, step: int, components: dict[str, Any]) -> None:
        if self.config.train.divergence_guard and (bad := non_finite_module(components)) is not None:
            raise DivergenceError(f"{bad} not finite at step {step}")

    def save(self, step: int, arrays: dict[str, np.ndarray], components: dict[str, Any], finished: bool = False,
             log_step: int | None = None, best: bool = False, **meta: Any) -> Path:
        """Write a checkpoint -- never of diverged networks, so the last one on disk stays finite.
        ``best``: write it as checkpoints/best.npz instead (the best evaluation so far)."""
        self.guard_modules(step, components)
        full_meta = {"rlscratch": rlscratch.__version__, "config_name": self.config.name,
                     "agent": self.config.agent["name"], "env_id": self.config.env.id,
                     "num_envs": self.config.env.num_envs, "env_steps": step, "elapsed": self.elapsed(),
                     "finished": finished, "log_step": step if log_step is None else log_step,
                     "run_id": self.run_id, "config_hash": config_hash(self.keys), "config": self.keys, **meta}
        if best:
            return self.checkpoints.save_best(arrays, full_meta)
        path = self.checkpoints.save(step, arrays, full_meta)
        if self.logger is not None:
            self.logger.flush()  # a kill now loses no more events than checkpointed state
        self._last_save = time.monotonic()
        return path

    def diverged(self, err: DivergenceError) -> DivergenceError:
        """The one line a diverged run ends with: what went non-finite, where, and what is kept."""
        latest = self.checkpoints.latest()
        message = f"{err}; the last finite checkpoint is {latest or 'none (none written yet)'}"
        if self.logger is not None:
            self.logger.text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} diverged: {message}\n")
        return DivergenceError(message)

    def resume_hint(self) -> str:
        return f"python -m rlscratch.train --resume {self.run_dir}"

    def close(self) -> None:
        try:
            if self.logger is not None:
                self.logger.close()
                self.logger = None
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
            self.signals.__exit__()
            if self._numpy_errors is not None:
                np.seterr(**self._numpy_errors)
                self._numpy_errors = None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
