"""Multi-seed target runs for MuZero and Gumbel MuZero on CartPole-v1.

    python benchmarks/muzero_targets.py                                   # both suites, seeds 0-4
    python benchmarks/muzero_targets.py --suites gumbel --seeds 0,1 --jobs 2
    python benchmarks/muzero_targets.py --set agent.train_ratio=0.75 --json out.json

Targets (the GitHub issue "MuZero-style model-based agent with batched MCTS"): a 20-episode greedy
evaluation mean >= 475 within 25,000 env steps in at least 3 of 5 seeds, each run under 30 minutes
on a 2-core CPU -- for MuZero (configs/muzero_cartpole.yaml, 50 simulations per move) and for Gumbel
MuZero with 8 simulations per move (configs/gumbel_muzero_cartpole.yaml).

Each (suite, seed) trains the shipped config through rlscratch's own training loop (the code path of
``python -m rlscratch.train``) in a subprocess of its own, ``--jobs`` at a time, numpy's BLAS pinned
to one thread. Per seed the table shows: env steps to 475 (the first evaluation -- every
``eval_every`` steps, as the config says -- whose mean reaches it; "-" if none did within the
budget), the final evaluation, the best evaluation, the wall-clock seconds of the run and its CPU
seconds (the process's own time: on a shared, busy machine wall-clock time also counts the time the
run waited for a core, so the CPU figure is what an idle 2-core machine would take, give or take).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 475.0
BUDGET_S = 30 * 60


@dataclass(frozen=True)
class Suite:
    name: str
    config: str
    seeds: tuple[int, ...]
    need: int
    title: str


SUITES = {s.name: s for s in (
    Suite("muzero", "muzero_cartpole", (0, 1, 2, 3, 4), 3,
          "CartPole-v1, MuZero (50 simulations): 20-episode greedy eval >= 475 within 25,000 steps, 3 of 5 seeds"),
    Suite("gumbel", "gumbel_muzero_cartpole", (0, 1, 2, 3, 4), 3,
          "CartPole-v1, Gumbel MuZero (8 simulations): the same bar"),
)}


def run_job(config_name: str, seed: int, root: str, overrides: list[str]) -> dict:
    """Train one seed (in the subprocess); return its evaluations and timings."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    from rlscratch.config import load_config
    from rlscratch.events import read_scalars
    from rlscratch.trainer import new_run_dir, train

    config, _ = load_config(str(ROOT / "configs" / f"{config_name}.yaml"),
                            [f"log.root={root}", "log.progress=false", "log.tensorboard=true", *overrides], seed)
    run_dir = new_run_dir(config, None)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = train(config, run_dir)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    steps, means = read_scalars(run_dir).get("eval/mean_return", (np.array([]), np.array([])))
    return {"config": config_name, "seed": seed, "run_dir": str(run_dir), "env_steps": summary["env_steps"],
            "updates": summary["updates"], "seconds": wall, "cpu_seconds": cpu, "final_eval": summary["eval_mean"],
            "final_eval_std": summary["eval_std"], "evals": [[int(s), float(m)] for s, m in zip(steps, means)]}


def launch(suite: Suite, seed: int, root: Path, overrides: list[str]) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, __file__, "--job", suite.config, str(seed), str(root), "--"] + overrides
    process = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines or not lines[-1].startswith("{"):
        message = (process.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": suite.config, "seed": seed, "error": message}
    result = json.loads(lines[-1])
    result["suite"] = suite.name
    return result


def steps_to(evals: list[list[float]], threshold: float = THRESHOLD) -> int | None:
    for step, mean in evals:
        if mean >= threshold:
            return int(step)
    return None


def format_suite(suite: Suite, results: list[dict]) -> str:
    lines = [suite.title, "",
             f"{'seed':>4}  {'steps to 475':>12}  {'final eval':>15}  {'best eval':>9}  {'steps':>6}  "
             f"{'updates':>7}  {'wall s':>7}  {'CPU s':>6}"]
    reached = 0
    for r in results:
        if "error" in r:
            lines.append(f"{r['seed']:>4}  error: {r['error']}")
            continue
        hit = steps_to(r["evals"])
        reached += hit is not None and hit <= 25_000
        best = max((m for _, m in r["evals"]), default=float("nan"))
        final = f"{r['final_eval']:.1f} ± {r['final_eval_std']:.1f}"
        lines.append(f"{r['seed']:>4}  {'-' if hit is None else hit:>12}  {final:>15}  {best:>9.1f}  "
                     f"{r['env_steps']:>6}  {r['updates']:>7}  {r['seconds']:>7.0f}  {r['cpu_seconds']:>6.0f}")
    ok = [r for r in results if "error" not in r]
    slowest_cpu = max((r["cpu_seconds"] for r in ok), default=0.0)
    slowest_wall = max((r["seconds"] for r in ok), default=0.0)
    verdict = "PASS" if reached >= suite.need else "FAIL"
    lines.append(f"reached 475 within 25,000 steps: {reached}/{len(results)} seeds (need {suite.need}) -> {verdict}; "
                 f"slowest run {slowest_wall / 60:.1f} min wall, {slowest_cpu / 60:.1f} min CPU "
                 f"(budget {BUDGET_S // 60} min)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--job":  # the subprocess end: --job CONFIG SEED ROOT -- OVERRIDES...
        print(json.dumps(run_job(argv[1], int(argv[2]), argv[3], argv[5:])), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="muzero,gumbel", help=f"comma list from: {', '.join(SUITES)}")
    parser.add_argument("--seeds", help="comma list overriding the suites' seeds (0-4)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable)")
    parser.add_argument("--root", default=str(ROOT / "runs" / "muzero_targets"), help="where run directories go")
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    args = parser.parse_args(argv)
    suites = []
    for name in args.suites.split(","):
        if name not in SUITES:
            parser.error(f"unknown suite '{name}' (choose from {', '.join(SUITES)})")
        suites.append(SUITES[name])
    seeds_override = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    root = Path(args.root) / time.strftime("%Y%m%d-%H%M%S")
    jobs = [(suite, seed) for suite in suites for seed in (seeds_override or suite.seeds)]
    load = os.getloadavg()[0]
    print(f"{len(jobs)} runs, {args.jobs} at a time, run directories under {root} "
          f"(1-minute load average {load:.1f} on {os.cpu_count()} CPUs)", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(launch, suite, seed, root, args.set) for suite, seed in jobs]
        results = [f.result() for f in futures]
    report = [format_suite(suite, [r for (s, _), r in zip(jobs, results) if s is suite]) for suite in suites]
    print("\n\n".join(report))
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": args.set, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
