"""What every multi-seed target benchmark shares: one shipped config trained for one seed through
rlscratch's own loop (the code path of ``python -m rlscratch.train``), in a subprocess of its own;
a pool of such runs; and the helpers their tables use.

    from seed_runs import launch_all, steps_to
    results = launch_all([("dqn_cartpole", 0), ("dqn_cartpole", 1)], root, overrides=[], workers=2)

A benchmark script takes the common options with ``add_run_arguments(parser, name)`` and then runs
its jobs with ``launch_from_args(args, jobs)`` and saves them with ``write_json(args, results)``.

Each run is ``python benchmarks/seed_runs.py --job CONFIG SEED ROOT -- OVERRIDES...``, which prints
one JSON line. A subprocess per run keeps runs from sharing anything (allocator, imports, BLAS
state), and with numpy's BLAS pinned to one thread ``workers`` runs use ``workers`` cores: the
networks are small, and a second BLAS thread waiting for a busy core makes every product many times
slower on a shared machine.

A run's result holds its evaluation curve (``evals``: [step, mean return] pairs, read back from its
TensorBoard events), the final evaluation, counters, and its time twice -- wall-clock and the
process's CPU time (on a shared machine wall-clock also counts the time spent waiting for a core;
CPU time does not) -- each once in all and once without the evaluations (``train_*``). A bandit run
also reports its regret: the total (``cumulative_regret``) and its curve (``regret_curve``:
[step, cumulative regret] pairs, one every ``train.log_every`` rounds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_job(config_name: str, seed: int, root: str, overrides: list[str]) -> dict:
    """Train one seed of ``configs/<config_name>.yaml`` in this process; return its result."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # after numpy is imported: threadpoolctl limits the libraries already loaded
    import rlscratch.trainer as trainer
    from rlscratch.config import load_config
    from rlscratch.events import read_scalars
    from rlscratch.runtime import keep_freed_memory

    keep_freed_memory()  # the allocator settings python -m rlscratch.train runs with

    eval_wall = eval_cpu = 0.0
    evaluate = trainer.Evaluator.run

    def timed_evaluate(self, agent, episodes):
        nonlocal eval_wall, eval_cpu
        wall0, cpu0 = time.perf_counter(), time.process_time()
        try:
            return evaluate(self, agent, episodes)
        finally:
            eval_wall += time.perf_counter() - wall0
            eval_cpu += time.process_time() - cpu0

    trainer.Evaluator.run = timed_evaluate
    # A folder per (config, seed): runs started in the same second never share a run directory.
    folder = Path(root) / f"{config_name}-seed{seed}"
    config, _ = load_config(str(ROOT / "configs" / f"{config_name}.yaml"),
                            [f"log.root={folder}", "log.progress=false", "log.tensorboard=true", *overrides], seed)
    run_dir = trainer.new_run_dir(config, None)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = trainer.train(config, run_dir)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    scalars = read_scalars(run_dir)
    empty = (np.array([]), np.array([]))
    steps, means = scalars.get("eval/mean_return", empty)
    result = {"config": config_name, "seed": seed, "run_dir": str(run_dir), "env_steps": summary["env_steps"],
              "episodes": summary["episodes"], "updates": summary["updates"],
              "seconds": wall, "cpu_seconds": cpu,
              "train_seconds": wall - eval_wall, "train_cpu_seconds": cpu - eval_cpu,
              "final_eval": summary["eval_mean"], "final_eval_std": summary["eval_std"],
              "evals": [[int(s), float(m)] for s, m in zip(steps, means)]}
    if "cumulative_regret" in summary:
        result["cumulative_regret"] = summary["cumulative_regret"]
        rounds, regret = scalars.get("charts/cumulative_regret", empty)  # empty if it ended before log_every
        result["regret_curve"] = [[int(s), float(r)] for s, r in zip(rounds, regret)]
    return result


def launch(config_name: str, seed: int, root: Path, overrides: list[str]) -> dict:
    """Run one job in a subprocess and parse its JSON line (or return {"error": its last stderr line})."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, __file__, "--job", config_name, str(seed), str(root), "--", *overrides]
    process = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines or not lines[-1].startswith("{"):
        message = (process.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": config_name, "seed": seed, "error": message}
    return json.loads(lines[-1])


def launch_all(jobs: list[tuple[str, int]], root: Path, overrides: list[str], workers: int,
               on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Every (config, seed) job, ``workers`` at a time; results in the order of ``jobs``.
    ``on_result`` sees each result as it arrives (e.g. to print progress)."""
    def one(job: tuple[str, int]) -> dict:
        result = launch(job[0], job[1], root, overrides)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def add_run_arguments(parser: argparse.ArgumentParser, root_name: str) -> None:
    """The options every target benchmark takes: seeds, parallel runs, overrides, where runs go, JSON."""
    parser.add_argument("--seeds", help="comma list overriding the default seeds, e.g. 0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable), e.g. --set agent.optim.lr=1e-3")
    parser.add_argument("--root", default=str(ROOT / "runs" / root_name), help="where the run directories go")
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")


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
    root = new_root(args)
    print(f"{len(jobs)} runs, {args.jobs} at a time, run directories under {root} ({load_note()})", flush=True)
    return launch_all(jobs, root, args.set, args.jobs, on_result)


def write_json(args: argparse.Namespace, results: list[dict]) -> None:
    """Every result, and the overrides they ran with, to --json if given."""
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": args.set, "results": results}, indent=1))


def load_note() -> str:
    """The machine's load, for a benchmark's header: on a shared machine it explains wall-clock times."""
    return f"1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def steps_to(evals: list[list[float]], threshold: float) -> int | None:
    """The first evaluation step whose mean return reaches ``threshold`` (None if none did)."""
    for step, mean in evals:
        if mean >= threshold:
            return int(step)
    return None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation."""
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] != "--job":
        raise SystemExit("usage: seed_runs.py --job CONFIG SEED ROOT -- [OVERRIDES...] (benchmarks call this)")
    print(json.dumps(run_job(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[6:])), flush=True)
