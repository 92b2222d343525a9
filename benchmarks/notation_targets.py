"""Multi-seed target runs for the agents written in the arrow notation (agents/notation.py), each next to
the core agent with the same hyperparameters.

    python benchmarks/notation_targets.py                                  # both notation suites, 5 seeds
    python benchmarks/notation_targets.py --suites notation-dqn --seeds 0,1 --json out.json
    python benchmarks/notation_targets.py --suites notation-a2c-gae,core-a2c-gae

Each (suite, seed) trains the suite's shipped config through rlscratch's own training loop in a
subprocess of its own (benchmarks/seed_runs.py: ``--jobs`` at a time, BLAS on one thread). The table is
actor_critic_targets.py's: steps to the threshold (the first evaluation whose 20-episode greedy mean
reaches it), the final and best evaluation, the wall-clock seconds (compare only within one run).
The TD target -- the notation's TD equal to agents/td.py's to 1e-6 on the same seeds -- is a test
(tests/test_notation_rl.py), not a benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import seed_runs
from actor_critic_targets import Suite, format_suite

SEEDS = (0, 1, 2, 3, 4)
SUITES = {s.name: s for s in (
    Suite("notation-a2c-gae", "notation_a2c_gae_cartpole", SEEDS, 475.0, 4,
          "CartPole-v1, A2C + GAE in the notation: 20-episode greedy eval >= 475 within 200,000 steps, 4 of 5 seeds"),
    Suite("notation-dqn", "notation_dqn_cartpole", SEEDS, 475.0, 4,
          "CartPole-v1, DQN in the notation: 20-episode greedy eval >= 475 within 50,000 steps, 4 of 5 seeds"),
    Suite("notation-a2c", "notation_a2c_cartpole", SEEDS, 475.0, 4,
          "CartPole-v1, plain A2C in the notation (no target of its own, shown for comparison)"),
    Suite("core-a2c-gae", "a2c_gae_cartpole", SEEDS, 475.0, 4, "CartPole-v1, the core A2C + GAE (agents/a2c.py)"),
    Suite("core-dqn", "dqn_cartpole", SEEDS, 475.0, 4, "CartPole-v1, the core DQN (agents/dqn.py)"),
)}
DEFAULT_SUITES = ("notation-a2c-gae", "notation-dqn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default=",".join(DEFAULT_SUITES),
                        help=f"comma list from: {', '.join(SUITES)} (default: {','.join(DEFAULT_SUITES)})")
    seed_runs.add_run_arguments(parser, "notation_targets")
    args = parser.parse_args(argv)
    suites = [SUITES[name] for name in seed_runs.choose(parser, args.suites, SUITES, "suite")]
    # --seeds may run fewer or other seeds: the same share of them must pass (4 of 5 -> 1 of 1)
    suites = [dataclasses.replace(s, need=seed_runs.passes_needed(s.need, len(s.seeds),
                                                                  len(seed_runs.seeds_from(args, s.seeds))))
              for s in suites]
    seed_runs.run_suites(args, suites, format_suite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
