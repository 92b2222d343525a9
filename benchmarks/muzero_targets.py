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
to one thread (benchmarks/seed_runs.py). Per seed the table shows: env steps to 475 (the first
evaluation -- every ``eval_every`` steps, as the config says -- whose mean reaches it; "-" if none
did within the budget), the final evaluation, the best evaluation, the wall-clock seconds of the run
and its CPU seconds (the process's own time: on a shared, busy machine wall-clock time also counts
the time the run waited for a core, so the CPU figure is what an idle 2-core machine would take,
give or take).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import seed_runs
from seed_runs import steps_to

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


def format_suite(suite: Suite, results: list[dict]) -> str:
    lines = [suite.title, "",
             f"{'seed':>4}  {'steps to 475':>12}  {'final eval':>15}  {'best eval':>9}  {'steps':>6}  "
             f"{'updates':>7}  {'wall s':>7}  {'CPU s':>6}"]
    reached = 0
    for r in results:
        if "error" in r:
            lines.append(f"{r['seed']:>4}  error: {r['error']}")
            continue
        hit = steps_to(r["evals"], THRESHOLD)
        reached += hit is not None and hit <= 25_000
        best = max((m for _, m in r["evals"]), default=float("nan"))
        final = f"{r['final_eval']:.1f} ± {r['final_eval_std']:.1f}"
        lines.append(f"{r['seed']:>4}  {'-' if hit is None else hit:>12}  {final:>15}  {best:>9.1f}  "
                     f"{r['env_steps']:>6}  {r['updates']:>7}  {r['seconds']:>7.0f}  {r['cpu_seconds']:>6.0f}")
    ok = [r for r in results if "error" not in r]
    slowest_cpu = max((r["cpu_seconds"] for r in ok), default=0.0)
    slowest_wall = max((r["seconds"] for r in ok), default=0.0)
    need = seed_runs.passes_needed(suite.need, len(suite.seeds), len(results))
    verdict = "PASS" if reached >= need else "FAIL"
    lines.append(f"reached 475 within 25,000 steps: {reached}/{len(results)} seeds (need {need}) -> {verdict}; "
                 f"slowest run {slowest_wall / 60:.1f} min wall, {slowest_cpu / 60:.1f} min CPU "
                 f"(budget {BUDGET_S // 60} min)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="muzero,gumbel", help=f"comma list from: {', '.join(SUITES)}")
    seed_runs.add_run_arguments(parser, "muzero_targets")
    args = parser.parse_args(argv)
    suites = [SUITES[name] for name in seed_runs.choose(parser, args.suites, SUITES, "suite")]
    seed_runs.run_suites(args, suites, format_suite, load_at_end=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
