"""MNIST contextual-bandit targets for the three bandit agents, over several seeds.

    python benchmarks/bandit_targets.py                                   # 3 agents x 5 seeds, 2 at a time
    python benchmarks/bandit_targets.py --agents linucb_bandit --seeds 0,1 --set agent.alpha=0.2
    python benchmarks/bandit_targets.py --json results.json

Each (agent, seed) trains the agent's shipped config, ``configs/<agent>_mnist.yaml`` (one bandit pass
over the 60,000 training images), through rlscratch's own training loop -- the code path of
``python -m rlscratch.train`` -- in a subprocess of its own, ``--jobs`` at a time, with numpy's BLAS
pinned to one thread (the matrices are small, and on a shared machine a second BLAS thread waiting
for a busy core makes every product many times slower). Needs real MNIST ($RLSCRATCH_DATA, or the
cache that ``python -m rlscratch.data fetch mnist`` fills).

Targets, per agent (mean over the seeds):

* cumulative regret after 10,000 rounds <= 900 -- the number of wrong guesses, read back from the
  run's charts/cumulative_regret at step 10,000 (published neural bandits on MNIST: ~970-1,070);
* greedy test accuracy >= 97.5% after the pass -- the final evaluation: one greedy guess on each of
  the 10,000 test images (the mean evaluation return).

Wall-clock seconds are per run, including the six 10,000-image evaluations; on a shared machine
they are noisy, so compare them only within one table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("epsilon_greedy_bandit", "policy_gradient_bandit", "linucb_bandit")
REGRET_ROUNDS = 10_000
REGRET_TARGET = 900.0
ACCURACY_TARGET = 0.975


# -- one run, in its own process ------------------------------------------------------------------
def run_job(agent: str, seed: int, root: str, overrides: list[str]) -> dict:
    """Train one seed of one agent; return regret after REGRET_ROUNDS, test accuracy and wall-clock."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # after numpy is imported: threadpoolctl limits the libraries already loaded
    from rlscratch.config import load_config
    from rlscratch.events import read_scalars
    from rlscratch.trainer import new_run_dir, train

    folder = Path(root) / f"{agent}-seed{seed}"  # one folder per job: no two runs share a directory
    config, _ = load_config(str(ROOT / "configs" / f"{agent}_mnist.yaml"),
                            [f"log.root={folder}", "log.progress=false", "log.tensorboard=true", *overrides], seed)
    if REGRET_ROUNDS % config.train.log_every or REGRET_ROUNDS % config.env.num_envs:
        raise SystemExit(f"train.log_every={config.train.log_every} with {config.env.num_envs} envs does not log "
                         f"the regret at round {REGRET_ROUNDS}")
    run_dir = new_run_dir(config, None)
    start = time.perf_counter()
    summary = train(config, run_dir)
    seconds = time.perf_counter() - start
    scalars = read_scalars(run_dir)
    steps, regret = scalars["charts/cumulative_regret"]
    at = int(np.searchsorted(steps, REGRET_ROUNDS))
    evals = scalars.get("eval/mean_return", (np.array([]), np.array([])))
    return {"agent": agent, "seed": seed, "run_dir": str(run_dir), "seconds": seconds,
            "regret_10k": float(regret[at]) if at < len(steps) else None,
            "regret_final": summary["cumulative_regret"], "rounds": summary["env_steps"],
            "test_accuracy": summary["eval_mean"],
            "evals": [[int(s), float(m)] for s, m in zip(*evals)]}


def launch(agent: str, seed: int, root: Path, overrides: list[str]) -> dict:
    """Run one job as ``python THIS_FILE --job ...`` and parse its last output line."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, __file__, "--job", agent, str(seed), str(root), "--", *overrides]
    process = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines or not lines[-1].startswith("{"):
        message = (process.stderr.strip().splitlines() or ["no output"])[-1]
        return {"agent": agent, "seed": seed, "error": message}
    result = json.loads(lines[-1])
    print(f"  {agent} seed {seed}: regret@10k {result['regret_10k']:.0f}, test accuracy "
          f"{result['test_accuracy']:.4f}, {result['seconds']:.0f} s", flush=True)
    return result


# -- the table ------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5


def format_table(results: list[dict], agents: list[str]) -> str:
    lines = [f"| agent | seeds | regret @ {REGRET_ROUNDS:,} rounds (<= {REGRET_TARGET:.0f}) | "
             f"test accuracy after the pass (>= {ACCURACY_TARGET:.1%}) | wall-clock s / run |",
             "| --- | --- | --- | --- | --- |"]
    for agent in agents:
        runs = [r for r in results if r["agent"] == agent and "error" not in r]
        failed = [r for r in results if r["agent"] == agent and "error" in r]
        if not runs:
            lines.append(f"| {agent} | 0 | error: {failed[0]['error'] if failed else 'no runs'} | | |")
            continue
        regret = mean_std([r["regret_10k"] for r in runs])
        accuracy = mean_std([r["test_accuracy"] for r in runs])
        seconds = mean_std([r["seconds"] for r in runs])
        lines.append(
            f"| {agent} | {len(runs)} | {regret[0]:.0f} ± {regret[1]:.0f} "
            f"({'PASS' if regret[0] <= REGRET_TARGET else 'FAIL'}) | {accuracy[0]:.2%} ± {accuracy[1]:.2%} "
            f"({'PASS' if accuracy[0] >= ACCURACY_TARGET else 'FAIL'}) | {seconds[0]:.0f} ± {seconds[1]:.0f} |")
    lines.append("")
    lines.append("per seed (regret @ 10,000 rounds / test accuracy / seconds):")
    for agent in agents:
        cells = [f"{r['seed']}: error ({r['error']})" if "error" in r else
                 f"{r['seed']}: {r['regret_10k']:.0f} / {r['test_accuracy']:.4f} / {r['seconds']:.0f}"
                 for r in results if r["agent"] == agent]
        lines.append(f"  {agent}: " + "; ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--job":  # the subprocess end: --job AGENT SEED ROOT -- OVERRIDES...
        agent, seed, root = argv[1], int(argv[2]), argv[3]
        print(json.dumps(run_job(agent, seed, root, argv[5:])), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default=",".join(AGENTS), help=f"comma list from: {', '.join(AGENTS)}")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma list (default 0,1,2,3,4)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable), e.g. --set agent.lr=1e-3")
    parser.add_argument("--root", default=str(ROOT / "runs" / "bandit_targets"), help="where the run directories go")
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    args = parser.parse_args(argv)

    agents = args.agents.split(",")
    for agent in agents:
        if agent not in AGENTS:
            parser.error(f"unknown agent '{agent}' (choose from {', '.join(AGENTS)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.root) / time.strftime("%Y%m%d-%H%M%S")
    jobs = [(agent, seed) for agent in agents for seed in seeds]
    print(f"{len(jobs)} runs, {args.jobs} at a time, run directories under {root}", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: launch(*job, root, args.set), jobs))
    print(f"\n{format_table(results, agents)}\n\ntotal wall-clock {time.perf_counter() - start:.0f} s "
          f"({args.jobs} runs at a time)")
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": args.set, "results": results}, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
