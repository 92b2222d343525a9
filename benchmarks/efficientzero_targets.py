"""Multi-seed target runs for EfficientZero (MuZero's agent with EfficientZero's switches on).

    python benchmarks/efficientzero_targets.py                        # CartPole, seeds 0-4
    python benchmarks/efficientzero_targets.py --suites breakout --seeds 0 --jobs 1
    python benchmarks/efficientzero_targets.py --set agent.reanalyze_fraction=0.25 --json out.json
    python benchmarks/efficientzero_targets.py --suites ablation --seeds 0,1 --jobs 2   # issue 15's 4-row ablation

Targets (issue 15): CartPole-v1 -- a 20-episode greedy evaluation mean >= 475 within 10,000 env
steps in at least 4 of 5 seeds (configs/efficientzero_cartpole.yaml, MLP networks); MinAtar Breakout,
Space Invaders and Freeway at 100,000 env steps over 3 seeds (configs/efficientzero_minatar_*.yaml,
the conv networks): the table shows the greedy evaluations (the bar is the issue's: Breakout 9,
Space Invaders 33, Freeway 40).

Each (suite, seed) trains the shipped config through rlscratch's own training loop in a subprocess
(benchmarks/seed_runs.py). Per seed: env steps to the threshold (the first evaluation whose mean
reaches it; "-" if none did within the budget), the final and best evaluations, the mean training
return of the last 100 episodes (the MinAtar paper's measure), wall-clock and CPU seconds of the run.
Under each table, the run's own CPU split (the agent's cpu/* timers, CPU ms per env step averaged
over the logged windows: search, reanalyze, train, env) and what it projects to per 100,000 env steps.

    python benchmarks/efficientzero_targets.py --split RUN_DIR ... [--after STEP]   # finished runs' splits only
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import seed_runs
from seed_runs import steps_to


@dataclass(frozen=True)
class Suite:
    name: str
    config: str
    seeds: tuple[int, ...]
    need: int
    threshold: float
    budget: int
    title: str


# Issue 15's ablation on Breakout at 100k, 2 seeds: MuZero -> + consistency -> + value prefix -> + the
# off-policy correction (= the shipped config). Rows 1-3 are the shipped config with EfficientZero's later
# parts switched off (configs/ablation/, kept in step with it by tests/test_efficientzero_ablation.py).
ABLATION = (
    ("configs/ablation/efficientzero_breakout_1_muzero.yaml", "1: MuZero (conv networks, Gumbel search)"),
    ("configs/ablation/efficientzero_breakout_2_consistency.yaml", "2: + temporal consistency"),
    ("configs/ablation/efficientzero_breakout_3_value_prefix.yaml", "3: + value prefix"),
    ("efficientzero_minatar_breakout", "4: + off-policy correction (the shipped config)"),
)

SUITES = {s.name: s for s in (
    Suite("cartpole", "efficientzero_cartpole", (0, 1, 2, 3, 4), 4, 475.0, 10_000,
          "CartPole-v1, EfficientZero (MLP): 20-episode greedy eval >= 475 within 10,000 steps, 4 of 5 seeds"),
    Suite("breakout", "efficientzero_minatar_breakout", (0, 1, 2), 2, 9.0, 100_000,
          "MinAtar Breakout, EfficientZero (conv): greedy eval >= 9 within 100,000 steps"),
    Suite("space_invaders", "efficientzero_minatar_space_invaders", (0, 1, 2), 2, 33.0, 100_000,
          "MinAtar Space Invaders, EfficientZero (conv): greedy eval >= 33 within 100,000 steps"),
    Suite("freeway", "efficientzero_minatar_freeway", (0, 1, 2), 2, 40.0, 100_000,
          "MinAtar Freeway, EfficientZero (conv): greedy eval >= 40 within 100,000 steps"),
    *(Suite(f"ablation_{row}", config, (0, 1), 2, 9.0, 100_000, f"Ablation row {title}, MinAtar Breakout at 100k")
      for row, (config, title) in enumerate(ABLATION, start=1)),
)}


PARTS = ("search", "reanalyze", "train", "env")


def run_log(run_dir: str | Path, after: int = 0) -> dict:
    """From a run's TensorBoard scalars: the mean return of its last 100 training episodes and its CPU
    split (mean CPU ms per env step of each part over the logged windows, which are equally long;
    only the windows ending after env step ``after``, e.g. past the warm-up of a short profiling run)."""
    from rlscratch.events import read_scalars

    scalars = read_scalars(run_dir)
    returns = scalars.get("charts/episodic_return", (None, []))[1]
    split = {}
    for part in PARTS:
        if f"cpu/{part}_ms" in scalars:
            steps, values = scalars[f"cpu/{part}_ms"]
            split[part] = float(values[steps > after].mean())
    return {"last100": float(returns[-100:].mean()) if len(returns) else float("nan"), "split": split}


def format_split(name: str, split: dict) -> str:
    """One line: each part's CPU ms per env step and share, and the CPU minutes per 100,000 env steps."""
    if not split:
        return f"{name}: no cpu/* timers in its log"
    total = sum(split.values())
    parts = "  ".join(f"{part} {ms:.2f} ({ms / total:.0%})" for part, ms in split.items())
    return f"{name}: CPU ms per env step: {parts}; total {total:.2f} -> {total * 100_000 / 60_000:.1f} CPU-min per 100k"


def format_suite(suite: Suite, results: list[dict]) -> str:
    bar = f"steps to {suite.threshold:g}"
    lines = [suite.title, "",
             f"{'seed':>4}  {bar:>14}  {'final eval':>15}  {'best eval':>9}  {'last 100':>8}  {'steps':>7}  "
             f"{'updates':>7}  {'wall s':>7}  {'CPU s':>6}"]
    reached = 0
    for r in results:
        if "error" in r:
            lines.append(f"{r['seed']:>4}  error: {r['error']}")
            continue
        hit = steps_to(r["evals"], suite.threshold)
        reached += hit is not None and hit <= suite.budget
        best = max((m for _, m in r["evals"]), default=float("nan"))
        final = f"{r['final_eval']:.1f} ± {r['final_eval_std']:.1f}"
        last100 = r.get("last100", float("nan"))
        lines.append(f"{r['seed']:>4}  {'-' if hit is None else hit:>14}  {final:>15}  {best:>9.1f}  {last100:>8.2f}  "
                     f"{r['env_steps']:>7}  {r['updates']:>7}  {r['seconds']:>7.0f}  {r['cpu_seconds']:>6.0f}")
    need = seed_runs.passes_needed(suite.need, len(suite.seeds), len(results))
    verdict = "PASS" if reached >= need else "FAIL"
    lines.append(f"reached {suite.threshold:g} within {suite.budget:,} steps: {reached}/{len(results)} seeds "
                 f"(need {need}) -> {verdict}")
    lines += [format_split(f"seed {r['seed']}", r["split"]) for r in results if "split" in r]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="cartpole",
                        help=f"comma list from: {', '.join(SUITES)}; 'ablation' = its 4 rows")
    parser.add_argument("--split", nargs="+", metavar="RUN_DIR", help="only print these runs' CPU split")
    parser.add_argument("--after", type=int, default=0, help="--split: only the logged windows after this env step "
                                                             "(e.g. a short run's warm-up)")
    seed_runs.add_run_arguments(parser, "efficientzero_targets")
    args = parser.parse_args(argv)
    if args.split:
        for run_dir in args.split:
            log = run_log(run_dir, args.after)
            print(format_split(run_dir, log["split"]) + f"; last-100 training return {log['last100']:.2f}")
        return 0
    rows = [n for n in SUITES if n.startswith("ablation_")]
    names = ",".join(",".join(rows) if n == "ablation" else n for n in args.suites.split(","))  # the 4 rows
    suites = [SUITES[name] for name in seed_runs.choose(parser, names, SUITES, "suite")]
    results = seed_runs.run_suites(args, suites, format_suite,
                                   add_to_result=lambda r: r.update(run_log(r["run_dir"])), load_at_end=True)
    if any(s.name.startswith("ablation_") for s in suites):
        print("\n" + format_ablation(suites, results))
    return 0


def format_ablation(suites: list[Suite], results: list[dict]) -> str:
    """The ablation's one line per row: mean last-100 training return and greedy evaluation over its
    seeds, and its mean wall and CPU seconds."""
    lines = ["Ablation, MinAtar Breakout at 100k (means over seeds)", "",
             f"{'row':<52}  {'seeds':>5}  {'last 100':>8}  {'greedy':>6}  {'wall s':>7}  {'CPU s':>6}"]
    for suite in suites:
        if not suite.name.startswith("ablation_"):
            continue
        rows = [r for r in results if r["config"] == suite.config and "error" not in r]
        title = suite.title.removeprefix("Ablation row ").removesuffix(", MinAtar Breakout at 100k")
        if not rows:
            lines.append(f"{title:<52}  {0:>5}  (no finished run)")
            continue
        last100, greedy, wall, cpu = (sum(r[key] for r in rows) / len(rows)
                                      for key in ("last100", "final_eval", "seconds", "cpu_seconds"))
        lines.append(f"{title:<52}  {len(rows):>5}  {last100:>8.2f}  {greedy:>6.1f}  {wall:>7.0f}  {cpu:>6.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
