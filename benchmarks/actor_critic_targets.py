"""Multi-seed target runs for the actor-critic agents (A2C, A2C+GAE, PPO): one table per env.

    python benchmarks/actor_critic_targets.py                          # every suite below
    python benchmarks/actor_critic_targets.py --suites cartpole-ppo --seeds 0,1,2 --jobs 2
    python benchmarks/actor_critic_targets.py --suites acrobot --set agent.lr=1e-3 --json out.json

Each (suite, seed) trains the suite's shipped config through rlscratch's own training loop (the
code path of ``python -m rlscratch.train``) in a subprocess of its own, ``--jobs`` at a time, with
numpy's BLAS pinned to one thread: the networks are small, and on a shared machine a second BLAS
thread waiting for a busy core makes every matrix product many times slower.

Per seed the table shows: steps to threshold (the first evaluation -- ``eval_episodes`` greedy
episodes every ``eval_every`` steps, as the config says -- whose mean reaches the threshold; "-" if
none did within the budget), the final evaluation at the end of the budget, and the wall-clock
seconds of the run (noisy on a shared machine: compare only within one table). A suite passes when
at least ``need`` seeds reach the threshold within the budget. The MNIST bandit suite reports online
accuracy (1 - cumulative regret / rounds: the regret of a round is 1 - reward) and the regret after
its rounds, plus greedy accuracy on the 10,000 test images.
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


@dataclass(frozen=True)
class Suite:
    name: str
    config: str  # a config in configs/
    seeds: tuple[int, ...]
    threshold: float | None  # eval mean return to reach (None: the bandit, reported differently)
    need: int  # seeds that must reach it
    title: str


SUITES = {s.name: s for s in (
    Suite("cartpole-a2c-gae", "a2c_gae_cartpole", (0, 1, 2, 3, 4), 475.0, 4,
          "CartPole-v1, A2C + GAE: 20-episode greedy eval >= 475 within 200,000 steps, 4 of 5 seeds"),
    Suite("cartpole-ppo", "ppo_cartpole", (0, 1, 2, 3, 4), 475.0, 4,
          "CartPole-v1, PPO: 20-episode greedy eval >= 475 within 100,000 steps, 4 of 5 seeds"),
    Suite("cartpole-a2c", "a2c_cartpole", (0, 1, 2, 3, 4), 475.0, 4,
          "CartPole-v1, plain A2C (lambda = 1; no target of its own, shown for comparison)"),
    Suite("acrobot", "a2c_gae_acrobot", (0, 1, 2), -100.0, 3,
          "Acrobot-v1, A2C + GAE: 20-episode greedy eval >= -100 within 500,000 steps, 3 of 3 seeds"),
    Suite("mnist-bandit", "a2c_mnist_bandit", (0, 1, 2), None, 0,
          "MNIST contextual bandit, policy gradient (A2C, gamma = 0): online accuracy and regret"),
    Suite("lunarlander-ppo", "ppo_lunarlander", (0, 1, 2), 200.0, 2,
          "LunarLander-v3, PPO: 20-episode greedy eval >= 200 (needs Box2D)"),
)}
DEFAULT_SUITES = ("cartpole-a2c-gae", "cartpole-ppo", "acrobot", "mnist-bandit")


# -- one run, in its own process ------------------------------------------------------------------
def run_job(config_name: str, seed: int, root: str, overrides: list[str]) -> dict:
    """Train one seed; return the evaluation history and the summary (called in the subprocess)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # after numpy is imported: threadpoolctl limits the libraries already loaded
    from rlscratch.config import load_config
    from rlscratch.events import read_scalars
    from rlscratch.trainer import new_run_dir, train

    # A folder per (config, seed): runs started in the same second never share a run directory.
    folder = Path(root) / f"{config_name}-seed{seed}"
    config, _ = load_config(str(ROOT / "configs" / f"{config_name}.yaml"),
                            [f"log.root={folder}", "log.progress=false", "log.tensorboard=true", *overrides], seed)
    run_dir = new_run_dir(config, None)
    start = time.perf_counter()
    summary = train(config, run_dir)
    wall = time.perf_counter() - start
    scalars = read_scalars(run_dir)
    steps, means = scalars.get("eval/mean_return", (np.array([]), np.array([])))
    result = {"config": config_name, "seed": seed, "run_dir": str(run_dir), "env_steps": summary["env_steps"],
              "seconds": wall, "final_eval": summary["eval_mean"], "final_eval_std": summary["eval_std"],
              "evals": [[int(s), float(m)] for s, m in zip(steps, means)]}
    if "cumulative_regret" in summary:
        result["cumulative_regret"] = summary["cumulative_regret"]
        result["rounds"] = summary["episodes"]
    return result


def launch(suite: Suite, seed: int, root: Path, overrides: list[str]) -> dict:
    """Run one job as ``python THIS_FILE --job ...`` and parse its last output line."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, __file__, "--job", suite.config, str(seed), str(root), "--"] + overrides
    process = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines or not lines[-1].startswith("{"):
        message = (process.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": suite.config, "seed": seed, "error": message}
    return json.loads(lines[-1])


# -- tables ---------------------------------------------------------------------------------------
def steps_to(evals: list[list[float]], threshold: float) -> int | None:
    for step, mean in evals:
        if mean >= threshold:
            return int(step)
    return None


def format_suite(suite: Suite, results: list[dict]) -> str:
    lines = [suite.title, ""]
    if suite.threshold is None:
        lines.append(f"{'seed':>4}  {'rounds':>7}  {'regret':>7}  {'online acc':>10}  {'test acc (greedy)':>17}  "
                     f"{'wall s':>7}")
        for r in results:
            if "error" in r:
                lines.append(f"{r['seed']:>4}  error: {r['error']}")
                continue
            online = 1.0 - r["cumulative_regret"] / r["rounds"]
            lines.append(f"{r['seed']:>4}  {r['rounds']:>7}  {r['cumulative_regret']:>7.0f}  {online:>10.4f}  "
                         f"{r['final_eval']:>17.4f}  {r['seconds']:>7.1f}")
        return "\n".join(lines)
    lines.append(f"{'seed':>4}  {'steps to ' + format(suite.threshold, 'g'):>14}  {'final eval':>16}  "
                 f"{'best eval':>9}  {'budget':>8}  {'wall s':>7}")
    reached = 0
    for r in results:
        if "error" in r:
            lines.append(f"{r['seed']:>4}  error: {r['error']}")
            continue
        hit = steps_to(r["evals"], suite.threshold)
        reached += hit is not None
        best = max((m for _, m in r["evals"]), default=float("nan"))
        final = f"{r['final_eval']:.1f} ± {r['final_eval_std']:.1f}"
        lines.append(f"{r['seed']:>4}  {'-' if hit is None else hit:>14}  {final:>16}  {best:>9.1f}  "
                     f"{r['env_steps']:>8}  {r['seconds']:>7.1f}")
    finals = sum(1 for r in results if "error" not in r and r["final_eval"] >= suite.threshold)
    verdict = "PASS" if reached >= suite.need else "FAIL"
    lines.append(f"reached the threshold: {reached}/{len(results)} seeds (need {suite.need}) -> {verdict}; "
                 f"final eval at or above it: {finals}/{len(results)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--job":  # the subprocess end: --job CONFIG SEED ROOT -- OVERRIDES...
        config_name, seed, root = argv[1], int(argv[2]), argv[3]
        print(json.dumps(run_job(config_name, seed, root, argv[5:])), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default=",".join(DEFAULT_SUITES),
                        help=f"comma list from: {', '.join(SUITES)} (default: {','.join(DEFAULT_SUITES)})")
    parser.add_argument("--seeds", help="comma list overriding every suite's seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable), e.g. --set agent.lr=1e-3")
    parser.add_argument("--root", default=str(ROOT / "runs" / "actor_critic_targets"),
                        help="where the run directories go")
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
    print(f"{len(jobs)} runs, {args.jobs} at a time, run directories under {root}", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(launch, suite, seed, root, args.set) for suite, seed in jobs]
        results = [f.result() for f in futures]
    report = []
    for suite in suites:
        suite_results = [r for (s, _), r in zip(jobs, results) if s is suite]
        report.append(format_suite(suite, suite_results))
    print("\n\n".join(report))
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": args.set, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
