"""python -m rlscratch.train --config NAME.yaml [--set key.path=value ...] [--seed N] [--run-dir DIR]
python -m rlscratch.train --resume RUN_DIR [--set train.total_steps=N]

Runs one experiment from a YAML config (a bare name is looked up in configs/) and writes its run
directory: the resolved config, TensorBoard event files, checkpoints and log.txt.

Exit status: 0 done, 2 bad input, 3 diverged (non-finite numbers), 130/143 stopped by SIGINT/SIGTERM
(checkpointed; continue with --resume).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from rlscratch.cli import run_cli
from rlscratch.config import load_config
from rlscratch.errors import ConfigError, UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlscratch.train", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="config file, or a bare name looked up in configs/ (e.g. dqn_cartpole)")
    source.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set agent.lr=0.001 (repeatable)")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--run-dir", help="write the run here instead of runs/<config-name>-<timestamp>")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done (or already finished), 2 bad input, 3 diverged, 128 + signal number when
    stopped by SIGINT (130) or SIGTERM (143) -- checkpointed (a second signal exits at once, in
    rlscratch.lifecycle.StopSignals, writing nothing more)."""
    args = parser().parse_args(argv)
    try:
        return _train(args)
    except KeyboardInterrupt:  # outside the run's own signal handling (start-up, or after it closed)
        print("interrupted outside the training loop; nothing written", file=sys.stderr)
        return 130


def _train(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    from rlscratch.nn.memory import keep_freed_memory

    # RL networks are small: a second BLAS thread gains little on them and loses badly whenever the
    # envs or other jobs want the cores. And big per-step temporaries (conv layers) should reuse
    # the previous step's pages instead of faulting in fresh ones (rlscratch/nn/memory.py).
    threadpool_limits(int(os.environ.get("RLSCRATCH_BLAS_THREADS", "1")))
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
            summary = train(config, run_dir, resume=True)
        else:
            config, _ = load_config(args.config, args.set, args.seed)
            agent_config(resolve_agent(config.agent["name"]), config.agent)  # fail before creating anything
            run_dir = new_run_dir(config, args.run_dir)
            try:
                summary = train(config, run_dir)
            except RunDirBusy:
                raise  # the directory is another process's run: never touch it
            except UserError:
                # A run that failed before its first checkpoint holds nothing worth keeping.
                if not (run_dir / "checkpoints").exists():
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise
    except DivergenceError as err:
        print(f"diverged: {err}", file=sys.stderr)
        return 3
    if summary.get("interrupted"):
        return 128 + (summary.get("signal") or signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
