"""python -m rlscratch.train --config NAME.yaml [--set key.path=value ...] [--seed N] [--run-dir DIR]
python -m rlscratch.train --resume RUN_DIR [--set train.total_steps=N]
python -m rlscratch.train --list | --describe AGENT

Runs one experiment from a YAML config (a bare name is looked up in configs/) and writes its run
directory: the resolved config, TensorBoard event files, checkpoints and log.txt.

Exit status: 0 done, 2 bad input, 3 diverged (non-finite numbers), 130/143 stopped by SIGINT/SIGTERM
(checkpointed; continue with --resume).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import textwrap
from pathlib import Path

from rlscratch.cli import Parser, memory_message, run_cli
from rlscratch.config import RunConfig, describe_fields, load_config, shipped_configs
from rlscratch.errors import ConfigError, UserError


def catalogue() -> str:
    """What can be named in a config: registered agents, shipped configs and rlscratch's own envs."""
    import gymnasium as gym

    import rlscratch.envs  # noqa: F401 - registers rlscratch's env ids
    from rlscratch.agent import AGENTS

    envs = sorted(name for name in gym.registry if name.startswith("rlscratch/"))

    def names(items: list[str]) -> str:
        return textwrap.fill(", ".join(items), width=100, initial_indent="  ", subsequent_indent="  ",
                             break_on_hyphens=False)

    return "\n".join([
        "agents (agent.name; --describe AGENT lists its hyperparameters):", names(sorted(AGENTS)),
        "configs (--config NAME):", names(shipped_configs()),
        "environments of rlscratch's own (env.id; plus any gymnasium id):", names(envs),
    ])


def describe(name: str) -> str:
    """Every hyperparameter of one agent: type, default, allowed range and meaning."""
    from rlscratch.agent import resolve_agent

    cls = resolve_agent(name)
    doc = (cls.__doc__ or "").strip().splitlines()
    title = f"{name}: {doc[0]}" if doc else name
    lines = describe_fields(cls.Config)
    return "\n".join([title, f"agent: section ({cls.Config.__name__}):", *("  " + line for line in lines)])


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m rlscratch.train", description=__doc__.split("\n\n")[1], epilog=catalogue(),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", help="config file, or a bare name looked up in configs/ (e.g. dqn_cartpole)")
    source.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    source.add_argument("--list", action="store_true", help="list agents, shipped configs and environments")
    source.add_argument("--describe", metavar="AGENT", help="list an agent's hyperparameters (type, default, range)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set agent.optim.lr=0.001 (repeatable)")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--run-dir", help="write the run here instead of runs/<config>-<env>-s<seed>-<timestamp>")
    return p


def check_run_dir_target(config: RunConfig, run_dir: str | None) -> None:
    """Refuse, before anything is created, a run directory or log.root that would sit on a file."""
    target, key = (Path(run_dir), "--run-dir") if run_dir is not None else (Path(config.log.root), "log.root")
    for folder in (target, *target.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{key} {target}: {folder} is a file, not a directory; choose another {key}")
            return


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done (or already finished), 2 bad input, 3 diverged, 128 + signal number when
    stopped by SIGINT (130) or SIGTERM (143) -- checkpointed (a second signal exits at once, in
    rlscratch.lifecycle.StopSignals, writing nothing more)."""
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        print(catalogue())
        return 0
    if args.describe:
        print(describe(args.describe))
        return 0
    if not (args.config or args.resume):
        p.error("one of --config, --resume, --list or --describe is required")
    try:
        return _train(args)
    except KeyboardInterrupt:  # outside the run's own signal handling (start-up, or after it closed)
        print("interrupted outside the training loop; nothing written", file=sys.stderr)
        return 130


def _train(args: argparse.Namespace) -> int:
    from rlscratch.runtime import keep_freed_memory, pin_blas_threads

    # RL networks are small: a second BLAS thread gains little on them and loses badly whenever the
    # envs or other jobs want the cores. And big per-step temporaries (conv layers) should reuse
    # the previous step's pages instead of faulting in fresh ones (rlscratch/runtime.py).
    pin_blas_threads()
    keep_freed_memory()
    from rlscratch.agent import agent_config, resolve_agent
    from rlscratch.lifecycle import RESUMABLE_KEYS, DivergenceError, RunDirBusy
    from rlscratch.trainer import load_run_config, new_run_dir, train

    try:
        if args.resume:
            run_dir = Path(args.resume)
            overrides = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
            for assignment in overrides:
                key = assignment.partition("=")[0].strip()
                if key not in RESUMABLE_KEYS:
                    raise ConfigError(f"--resume cannot change {key} (a resumed run is the same experiment); "
                                      f"on resume --set may change only {', '.join(RESUMABLE_KEYS)} -- "
                                      "start a new run for other changes")
            config, _ = load_run_config(run_dir, overrides)
            try:
                summary = train(config, run_dir, resume=True)
            except MemoryError as err:
                raise UserError(memory_message(err, config.agent)) from None
        else:
            config, _ = load_config(args.config, args.set, args.seed)
            agent_config(resolve_agent(config.agent["name"]), config.agent)  # fail before creating anything
            check_run_dir_target(config, args.run_dir)
            root_existed = Path(config.log.root).exists()
            try:
                run_dir = new_run_dir(config, args.run_dir)
            except OSError as err:
                raise ConfigError(f"cannot create the run directory ({err.strerror}: {err.filename}); "
                                  "choose another --run-dir or log.root") from None
            try:
                summary = train(config, run_dir)
            except RunDirBusy:
                raise  # the directory is another process's run: never touch it
            except (UserError, MemoryError) as err:
                # A run that failed before its first checkpoint holds nothing worth keeping.
                if not (run_dir / "checkpoints").exists():
                    shutil.rmtree(run_dir, ignore_errors=True)
                    if args.run_dir is None and not root_existed:  # nor an empty runs/ it created for it
                        with contextlib.suppress(OSError):
                            Path(config.log.root).rmdir()
                if isinstance(err, MemoryError):
                    raise UserError(memory_message(err, config.agent)) from None
                raise
    except DivergenceError as err:
        print(f"diverged: {err}", file=sys.stderr)
        return 3
    if summary.get("interrupted"):
        return 128 + (summary.get("signal") or signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
