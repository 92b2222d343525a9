"""What every multi-seed target benchmark shares: its runs go through the project's one multi-seed
runner, rlscratch.sweep (Ray Tune; local by default, --address joins a cluster), and the helpers
their tables use. A benchmark is a spec -- configs, seeds, thresholds -- plus its table.

    from seed_runs import launch_all, steps_to
    results = launch_all([("dqn_cartpole", 0), ("dqn_cartpole", 1)], root, overrides=[], workers=2)

A benchmark script takes the common options with ``add_run_arguments(parser, name)`` and then runs
its jobs with ``launch_from_args(args, jobs)`` and saves them with ``write_json(args, results)``.

Each run is an ordinary ``python -m rlscratch.train --config CONFIG --seed SEED --run-dir ...`` in a
subprocess of its own (rlscratch/sweep.py), numpy's BLAS pinned to one thread, ``workers`` at a time
(one CPU each): the networks are small, and a second BLAS thread waiting for a busy core makes every
product many times slower on a shared machine. A run whose worker dies is resumed from its checkpoint.

A run's result holds its evaluation curve (``evals``: [step, mean return] pairs, read back from its
TensorBoard events), the final evaluation, counters, and its time twice -- ``seconds``, the training
loop's wall-clock (as its checkpoint records it), and ``cpu_seconds``, the CPU time of the training
process (on a shared machine wall-clock also counts the time spent waiting for a core; CPU time does
not). A bandit run also reports its regret: the total (``cumulative_regret``) and its curve
(``regret_curve``: [step, cumulative regret] pairs, one every ``train.log_every`` rounds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import this checkout's rlscratch
    sys.path.insert(0, str(ROOT))

from rlscratch.stats import steps_to  # noqa: E402  (re-exported for the target scripts)

__all__ = ["launch_all", "launch_from_args", "steps_to"]


def as_result(trial: dict) -> dict:
    """A sweep trial's result in the shape the target tables read."""
    if "error" in trial:
        return {"config": trial["config"], "seed": trial["seed"], "error": trial["error"]}
    result = {key: trial[key] for key in ("config", "seed", "run_dir", "env_steps", "episodes", "updates",
                                          "final_eval", "final_eval_std", "evals")}
    result.update(seconds=trial["seconds"], cpu_seconds=trial["attempt_cpu_seconds"], attempts=trial["attempts"])
    for key in ("cumulative_regret", "regret_curve"):
        if key in trial:
            result[key] = trial[key]
    return result


def launch_all(jobs: list[tuple[str, int]], root: Path, overrides: list[str], workers: int,
               on_result: Callable[[dict], None] | None = None, address: str | None = None) -> list[dict]:
    """Every (config, seed) job through rlscratch.sweep, ``workers`` at a time (on this machine; or on the
    cluster at ``address``); results in the order of ``jobs``. ``on_result`` sees each result at the end."""
    from rlscratch import sweep

    trials = [sweep.Trial(config, seed, tuple(overrides)) for config, seed in jobs]
    sweep.check_trials(trials)
    results, _ = sweep.sweep(trials, Path(root), address=address, cpus=workers)
    results = [as_result(r) for r in results]
    for result, (config, _) in zip(results, jobs, strict=True):
        result["config"] = config   # as the job named it: the sweep hands a config file's absolute path back
    for result in results:
        if on_result is not None:
            on_result(result)
    return results


def add_run_arguments(parser: argparse.ArgumentParser, root_name: str) -> None:
    """The options every target benchmark takes: seeds, parallel runs, overrides, where runs go, JSON."""
    parser.add_argument("--seeds", help="comma list overriding the default seeds, e.g. 0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable), e.g. --set agent.optim.lr=1e-3")
    parser.add_argument("--root", default=str(ROOT / "runs" / root_name), help="where the run directories go")
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    parser.add_argument("--address", help="run on this Ray cluster (HOST:PORT of `ray start --head`; default: "
                                          "Ray on this machine)")


def choose(parser: argparse.ArgumentParser, names: str, choices: Iterable[str], what: str) -> list[str]:
    """The names of a comma list such as --suites, each checked against ``choices`` (else a usage error)."""
    chosen = names.split(",")
    for name in chosen:
        if name not in choices:
            parser.error(f"unknown {what} '{name}' (choose from {', '.join(choices)})")
    return chosen


def passes_needed(need: int, of: int, runs: int) -> int:
    """A target of ``need`` passing seeds out of ``of``, applied to the ``runs`` seeds actually run
    (--seeds may ask for fewer or others): the same share, rounded up."""
    return math.ceil(need / of * runs)


def seeds_from(args: argparse.Namespace, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(s) for s in args.seeds.split(",")) if args.seeds else default


def new_root(args: argparse.Namespace) -> Path:
    """A fresh folder under --root for this invocation's runs."""
    return Path(args.root) / time.strftime("%Y%m%d-%H%M%S")


def launch_from_args(args: argparse.Namespace, jobs: list[tuple[str, int]],
                     on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """``launch_all`` as the options of ``add_run_arguments`` ask, under a fresh folder of --root, after
    a line saying how many runs there are and where they go."""
    from rlscratch.errors import UserError

    root = new_root(args)
    print(f"{len(jobs)} runs, {args.jobs} at a time, run directories under {root} ({load_note()})", flush=True)
    try:
        return launch_all(jobs, root, args.set, args.jobs, on_result, args.address)
    except UserError as err:  # a bad --set, a missing config: one line before any run starts
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def run_suites(args: argparse.Namespace, suites: list, format_suite: Callable[[Any, list[dict]], str],
               add_to_result: Callable[[dict], None] | None = None, load_at_end: bool = False) -> list[dict]:
    """Every seed of every suite (a suite has .config and .seeds), then one table per suite from
    ``format_suite(suite, its results)``, printed, and --json written. ``add_to_result`` reads more
    from a finished run into its result before the tables."""
    jobs = [(suite.config, seed) for suite in suites for seed in seeds_from(args, suite.seeds)]
    results = launch_from_args(args, jobs)
    if add_to_result is not None:
        for r in results:
            if "run_dir" in r:
                add_to_result(r)
    print("\n\n".join(format_suite(suite, [r for r in results if r["config"] == suite.config]) for suite in suites))
    if load_at_end:
        print(f"\nat the end: {load_note()}")
    write_json(args, results)
    return results


def write_json(args: argparse.Namespace, results: list[dict]) -> None:
    """Every result, and the overrides they ran with, to --json if given."""
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": args.set, "results": results}, indent=1))


def load_note() -> str:
    """The machine's load, for a benchmark's header: on a shared machine it explains wall-clock times."""
    return f"1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation."""
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5
