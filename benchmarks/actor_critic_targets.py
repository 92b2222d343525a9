"""Multi-seed target runs for the actor-critic agents (A2C, A2C+GAE, PPO): one table per env.

    python benchmarks/actor_critic_targets.py                          # every suite below
    python benchmarks/actor_critic_targets.py --suites cartpole-ppo --seeds 0,1,2 --jobs 2
    python benchmarks/actor_critic_targets.py --suites acrobot --set agent.optim.lr=1e-3 --json out.json

Each (suite, seed) trains the suite's shipped config through rlscratch's own training loop in a
subprocess of its own, ``--jobs`` at a time, BLAS pinned to one thread (benchmarks/seed_runs.py).

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
import sys
from dataclasses import dataclass

import seed_runs
from seed_runs import steps_to


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
    # continuous actions: a diagonal Gaussian policy, observations and rewards normalised
    Suite("pendulum-ppo", "ppo_pendulum", (0, 1, 2, 3, 4), -200.0, 4,
          "Pendulum-v1, PPO: 20-episode greedy eval >= -200 within 100,000 steps, 4 of 5 seeds"),
    Suite("pendulum-a2c", "a2c_pendulum", (0, 1, 2), -200.0, 0,
          "Pendulum-v1, A2C (no target of its own: where it lands, against PPO's -200)"),
    Suite("lunarlander-continuous-ppo", "ppo_lunarlander_continuous", (0, 1, 2), 200.0, 2,
          "LunarLanderContinuous-v3, PPO: 20-episode greedy eval >= 200 within 1,000,000 steps, 2 of 3 seeds "
          "(needs Box2D)"),
)}
DEFAULT_SUITES = ("cartpole-a2c-gae", "cartpole-ppo", "acrobot", "mnist-bandit")


# -- tables ---------------------------------------------------------------------------------------
def format_suite(suite: Suite, results: list[dict]) -> str:
    lines = [suite.title, ""]
    if suite.threshold is None:
        lines.append(f"{'seed':>4}  {'rounds':>7}  {'regret':>7}  {'online acc':>10}  {'test acc (greedy)':>17}  "
                     f"{'wall s':>7}")
        for r in results:
            if "error" in r:
                lines.append(f"{r['seed']:>4}  error: {r['error']}")
                continue
            online = 1.0 - r["cumulative_regret"] / r["episodes"]
            lines.append(f"{r['seed']:>4}  {r['episodes']:>7}  {r['cumulative_regret']:>7.0f}  {online:>10.4f}  "
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default=",".join(DEFAULT_SUITES),
                        help=f"comma list from: {', '.join(SUITES)} (default: {','.join(DEFAULT_SUITES)})")
    seed_runs.add_run_arguments(parser, "actor_critic_targets")
    args = parser.parse_args(argv)

    suites = [SUITES[name] for name in seed_runs.choose(parser, args.suites, SUITES, "suite")]
    seed_runs.run_suites(args, suites, format_suite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
