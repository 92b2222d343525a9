"""DQN's targets, over several seeds: steps to the threshold, final return, wall-clock.

    python benchmarks/dqn_targets.py                          # CartPole, seeds 0-4
    python benchmarks/dqn_targets.py acrobot mountaincar      # 3 seeds each
    python benchmarks/dqn_targets.py lunarlander --seeds 0,1,2 --jobs 1
    python benchmarks/dqn_targets.py cartpole --set agent.optim.lr.start=1e-3 --set train.total_steps=40000

Each (env, seed) is one run of the shipped config through the ordinary trainer, in a subprocess of
its own, ``--jobs`` at a time (default 2: one per core of the development machine), each pinned to
one BLAS thread so that parallel runs do not fight over cores (benchmarks/seed_runs.py). A run
passes when its first evaluation at or above the threshold comes by the step budget, and -- for
CartPole, whose DQN is known to collapse after solving -- its last evaluation is still at or above it.

Columns: ``first >= thr`` the first evaluation step at or above the threshold; ``final`` the
evaluation at the end of the run (20 greedy episodes unless the config says otherwise). Times come
twice: the training loop's wall-clock, and the training process's CPU time -- on a shared machine
the wall-clock includes what other processes took, the CPU time does not. Both include the
evaluations; gradient ``updates/s`` and env ``steps/s`` are per second of each.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import seed_runs
from seed_runs import steps_to


@dataclass(frozen=True)
class Target:
    config: str
    threshold: float
    by: int  # env steps
    seeds: tuple[int, ...]
    must_hold: bool = False  # the final evaluation must also reach the threshold
    need: int | None = None  # passing seeds required (default: all)


TARGETS = {
    "cartpole": Target("dqn_cartpole", 475.0, 50_000, (0, 1, 2, 3, 4), must_hold=True, need=4),
    "acrobot": Target("dqn_acrobot", -100.0, 100_000, (0, 1, 2)),
    "mountaincar": Target("dqn_mountaincar", -110.0, 150_000, (0, 1, 2)),
    "lunarlander": Target("dqn_lunarlander", 200.0, 300_000, (0, 1, 2)),
}


def verdict(target: Target, result: dict) -> tuple[int | None, bool]:
    first = steps_to(result["evals"], target.threshold)
    ok = first is not None and first <= target.by and (not target.must_hold or result["final_eval"] >= target.threshold)
    return first, ok


def format_target(env: str, target: Target, rows: list[dict], curves: bool) -> str:
    lines = []
    passed = 0
    for r in rows:
        if "error" in r:
            lines.append(f"{env:<12}{r['seed']:>5}  error: {r['error']}")
            continue
        first, ok = verdict(target, r)
        passed += ok
        wall, cpu = r["seconds"], r["cpu_seconds"]
        updates = r["updates"] or 0
        lines.append(f"{env:<12}{r['seed']:>5}{first if first is not None else '-':>14}{r['final_eval']:>8.1f}"
                     f"{'yes' if ok else 'no':>5}{wall:>7.1f}{updates / wall:>10.0f}"
                     f"{r['env_steps'] / wall:>9.0f}  {cpu:>6.1f}{updates / cpu:>10.0f}{r['env_steps'] / cpu:>9.0f}")
        if curves:
            lines.append("    " + "  ".join(f"{s // 1000}k:{v:.0f}" for s, v in r["evals"]))
    need = seed_runs.passes_needed(target.need or len(target.seeds), len(target.seeds), len(rows))
    hold = ", still there at the end" if target.must_hold else ""
    lines.append(f"{env}: {passed}/{len(rows)} seeds reach {target.threshold:g} by {target.by:,} steps{hold} "
                 f"(target: {need} of {len(rows)}) -> {'MET' if passed >= need else 'NOT MET'}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("envs", nargs="*", default=["cartpole"], help=f"any of: {', '.join(TARGETS)}")
    parser.add_argument("--curves", action="store_true", help="also print every evaluation")
    seed_runs.add_run_arguments(parser, "dqn_targets")
    args = parser.parse_args(argv)
    unknown = [env for env in args.envs if env not in TARGETS]
    if unknown:
        parser.error(f"unknown env {unknown[0]!r} (choose from {', '.join(TARGETS)})")

    jobs = [(TARGETS[env].config, seed) for env in args.envs for seed in seed_runs.seeds_from(args, TARGETS[env].seeds)]
    results = seed_runs.launch_from_args(args, jobs)

    print(f"{'':<44}{' wall-clock ':-^26}  {' CPU time ':-^25}")
    print(f"{'env':<12}{'seed':>5}{'first >= thr':>14}{'final':>8}{'pass':>5}"
          f"{'s':>7}{'updates/s':>10}{'steps/s':>9}  {'s':>6}{'updates/s':>10}{'steps/s':>9}")
    for env in args.envs:
        target = TARGETS[env]
        print(format_target(env, target, [r for r in results if r["config"] == target.config], args.curves))
    seed_runs.write_json(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
