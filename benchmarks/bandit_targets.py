"""MNIST contextual-bandit targets for the three bandit agents, over several seeds.

    python benchmarks/bandit_targets.py                                   # 3 agents x 5 seeds, 2 at a time
    python benchmarks/bandit_targets.py --agents linucb_bandit --seeds 0,1 --set agent.alpha=0.2
    python benchmarks/bandit_targets.py --json results.json

Each (agent, seed) trains the agent's shipped config, ``configs/<agent>_mnist.yaml`` (one bandit pass
over the 60,000 training images), through rlscratch's own training loop -- the code path of
``python -m rlscratch.train`` -- in a subprocess of its own, ``--jobs`` at a time, with numpy's BLAS
pinned to one thread (benchmarks/seed_runs.py). Needs real MNIST ($RLSCRATCH_DATA, or the cache that
``python -m rlscratch.data fetch mnist`` fills).

Targets, per agent (mean over the seeds):

* cumulative regret after 10,000 rounds <= 900 -- the number of wrong guesses, read back from the
  run's charts/cumulative_regret at step 10,000 (published neural bandits on MNIST: ~970-1,070);
* greedy test accuracy >= 97.5% after the pass -- the final evaluation: one greedy guess on each of
  the 10,000 test images (the mean evaluation return).

Wall-clock seconds are per run, including the six 10,000-image evaluations; on a shared machine
they are noisy, so compare them only within one table. A run cut shorter than 10,000 rounds (say
``--set train.total_steps=600`` for a quick check) has no regret at 10,000: its cell shows "-".
"""

from __future__ import annotations

import argparse
import sys
import time

import seed_runs
from seed_runs import mean_std

AGENTS = ("epsilon_greedy_bandit", "policy_gradient_bandit", "linucb_bandit")
SEEDS = (0, 1, 2, 3, 4)
REGRET_ROUNDS = 10_000
REGRET_TARGET = 900.0
ACCURACY_TARGET = 0.975


def config_name(agent: str) -> str:
    return f"{agent}_mnist"


def logging_problem(agent: str, overrides: list[str]) -> str | None:
    """Why ``agent``'s runs would never log their regret at round REGRET_ROUNDS (None if they will).
    Checked before any run starts: otherwise a whole benchmark would end with no regret to report."""
    from rlscratch.config import load_config
    from rlscratch.errors import ConfigError

    try:
        config, _ = load_config(str(seed_runs.ROOT / "configs" / f"{config_name(agent)}.yaml"), overrides)
    except ConfigError as err:
        return str(err)
    if REGRET_ROUNDS % config.train.log_every or REGRET_ROUNDS % config.env.num_envs:
        return (f"train.log_every={config.train.log_every} with {config.env.num_envs} envs does not log "
                f"the regret at round {REGRET_ROUNDS}")
    return None


def regret_at_target(result: dict) -> float | None:
    """The cumulative regret the run logged at round REGRET_ROUNDS (None if it stopped before)."""
    return next((regret for step, regret in result["regret_curve"] if step == REGRET_ROUNDS), None)


def or_dash(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_progress(result: dict) -> None:
    if "error" not in result:
        print(f"  {result['config'].removesuffix('_mnist')} seed {result['seed']}: regret@10k "
              f"{or_dash(regret_at_target(result), '.0f')}, test accuracy {result['final_eval']:.4f}, "
              f"{result['seconds']:.0f} s", flush=True)


# -- the table ------------------------------------------------------------------------------------
def format_table(results: list[dict], agents: list[str]) -> str:
    lines = [f"| agent | seeds | regret @ {REGRET_ROUNDS:,} rounds (<= {REGRET_TARGET:.0f}) | "
             f"test accuracy after the pass (>= {ACCURACY_TARGET:.1%}) | wall-clock s / run |",
             "| --- | --- | --- | --- | --- |"]
    for agent in agents:
        runs = [r for r in results if r["config"] == config_name(agent) and "error" not in r]
        failed = [r for r in results if r["config"] == config_name(agent) and "error" in r]
        if not runs:
            lines.append(f"| {agent} | 0 | error: {failed[0]['error'] if failed else 'no runs'} | | |")
            continue
        regrets = [regret_at_target(r) for r in runs]
        if None in regrets:
            regret_cell = f"- (runs shorter than {REGRET_ROUNDS:,} rounds)"
        else:
            regret = mean_std(regrets)
            regret_cell = f"{regret[0]:.0f} ± {regret[1]:.0f} ({'PASS' if regret[0] <= REGRET_TARGET else 'FAIL'})"
        accuracy = mean_std([r["final_eval"] for r in runs])
        seconds = mean_std([r["seconds"] for r in runs])
        lines.append(
            f"| {agent} | {len(runs)} | {regret_cell} | {accuracy[0]:.2%} ± {accuracy[1]:.2%} "
            f"({'PASS' if accuracy[0] >= ACCURACY_TARGET else 'FAIL'}) | {seconds[0]:.0f} ± {seconds[1]:.0f} |")
    lines.append("")
    lines.append("per seed (regret @ 10,000 rounds / test accuracy / seconds):")
    for agent in agents:
        cells = [f"{r['seed']}: error ({r['error']})" if "error" in r else
                 f"{r['seed']}: {or_dash(regret_at_target(r), '.0f')} / {r['final_eval']:.4f} / {r['seconds']:.0f}"
                 for r in results if r["config"] == config_name(agent)]
        lines.append(f"  {agent}: " + "; ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default=",".join(AGENTS), help=f"comma list from: {', '.join(AGENTS)}")
    seed_runs.add_run_arguments(parser, "bandit_targets")
    args = parser.parse_args(argv)

    agents = seed_runs.choose(parser, args.agents, AGENTS, "agent")
    for agent in agents:
        problem = logging_problem(agent, args.set)
        if problem:
            parser.error(f"{agent}: {problem}")
    jobs = [(config_name(agent), seed) for agent in agents for seed in seed_runs.seeds_from(args, SEEDS)]
    start = time.perf_counter()
    results = seed_runs.launch_from_args(args, jobs, on_result=print_progress)
    print(f"\n{format_table(results, agents)}\n\ntotal wall-clock {time.perf_counter() - start:.0f} s "
          f"({args.jobs} runs at a time)")
    seed_runs.write_json(args, results)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
