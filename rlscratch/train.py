"""python -m rlscratch.train --config NAME.yaml [--set key.path=value ...] [--seed N] [--run-dir DIR]
python -m rlscratch.train --resume RUN_DIR [--set train.total_steps=N]

Runs one experiment from a YAML config (a bare name is looked up in configs/) and writes its run
directory: the resolved config, TensorBoard event files, checkpoints and log.txt.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rlscratch.cli import run_cli
from rlscratch.config import load_config
from rlscratch.errors import UserError


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
    args = parser().parse_args(argv)
    from rlscratch.runtime import keep_freed_memory, pin_blas_threads

    # RL networks are small: a second BLAS thread gains little on them and loses badly whenever the
    # envs or other jobs want the cores. And big per-step temporaries (conv layers) should reuse
    # the previous step's pages instead of faulting in fresh ones (rlscratch/runtime.py).
    pin_blas_threads()
    keep_freed_memory()
    from rlscratch.agent import agent_config, resolve_agent
    from rlscratch.trainer import load_run_config, new_run_dir, train

    if args.resume:
        run_dir = Path(args.resume)
        overrides = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
        config, _ = load_run_config(run_dir, overrides)
        summary = train(config, run_dir, resume=True)
    else:
        config, _ = load_config(args.config, args.set, args.seed)
        agent_config(resolve_agent(config.agent["name"]), config.agent)  # fail before creating anything
        run_dir = new_run_dir(config, args.run_dir)
        try:
            summary = train(config, run_dir)
        except UserError:
            # A run that failed before its first checkpoint holds nothing worth keeping.
            if not (run_dir / "checkpoints").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
