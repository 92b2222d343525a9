"""MinAtar targets (issue 14), over several seeds: the training-episode return averaged over the last
100 episodes at 100k, 500k and 1M env steps -- the measure of the MinAtar paper's learning curves --
beside a greedy evaluation and the wall and CPU seconds. Needs the minatar extra
(pip install -e ".[minatar]").

    python benchmarks/minatar_targets.py                              # DQN, the four games, seeds 0-2
    python benchmarks/minatar_targets.py dqn:breakout --seeds 0 --jobs 1
    python benchmarks/minatar_targets.py ppo:breakout ppo:space_invaders
    python benchmarks/minatar_targets.py dqn:breakout --set train.total_steps=200000   # a shorter look

Each (config, seed) is one run of ``configs/<agent>_minatar_<game>.yaml`` through the ordinary
trainer, in a subprocess of its own, ``--jobs`` at a time, one BLAS thread each
(benchmarks/seed_runs.py). The training returns are read back from the run's TensorBoard events
(``charts/episodic_return``, logged at the env step each episode ended); a column whose step the
run did not reach shows '-'.

DQN target: the mean over seeds of the last-100-episode return at 1M steps at least the paper's DQN
at 5M (Breakout 10, Space Invaders 44, Freeway 50, Asterix 17) in at least 3 of the 4 games, and a
1M-step run in at most 30 minutes (wall) on one core. PPO: no pass bar; the anchors are printed
beside it. (Anchors read off the learning-curve figure in the kenjyoung/MinAtar README; gymnax's PPO
after 10M steps for PPO.)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import seed_runs

from rlscratch.events import read_scalars

CHECKPOINTS = (100_000, 500_000, 1_000_000)
GAMES = ("breakout", "space_invaders", "freeway", "asterix")
# The paper's DQN at 100k / 500k / 1M / 5M steps (None: not readable off the figure).
DQN_ANCHORS = {"breakout": (4.5, 8.5, 9.3, 10.0), "space_invaders": (20.0, 28.0, 33.0, 44.0),
               "freeway": (None, 42.0, 48.0, 50.0), "asterix": (0.6, 1.0, 5.0, 17.0)}
PPO_ANCHORS = {"breakout": 28.0, "space_invaders": 131.0, "freeway": 58.0, "asterix": 15.0}  # gymnax, 10M steps
WALL_LIMIT_S = 30 * 60  # per 1M-step DQN run
GAMES_NEEDED = 3
DEFAULT_SEEDS = (0, 1, 2)
WINDOW = 100


def last_window_mean(steps: np.ndarray, returns: np.ndarray, at: int, window: int = WINDOW) -> float | None:
    """The mean return of the last ``window`` training episodes that ended by env step ``at`` (None
    if the run never got that far)."""
    done = returns[steps <= at]
    return float(done[-window:].mean()) if len(done) else None


def training_returns(result: dict) -> list[float | None]:
    steps, returns = read_scalars(result["run_dir"]).get("charts/episodic_return", (np.array([]), np.array([])))
    reached = result["env_steps"]
    return [last_window_mean(steps, returns, at) if reached >= at else None for at in CHECKPOINTS]


def cell(value: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", default=[f"dqn:{game}" for game in GAMES],
                        help="agent:game pairs, agent dqn or ppo, game one of " + ", ".join(GAMES))
    seed_runs.add_run_arguments(parser, "minatar_targets")
    args = parser.parse_args(argv)
    pairs = []
    for item in args.runs:
        agent, _, game = item.partition(":")
        if agent not in ("dqn", "ppo") or game not in GAMES:
            parser.error(f"unknown run '{item}': give agent:game with agent dqn or ppo and game one of "
                         f"{', '.join(GAMES)}")
        if agent == "ppo" and game not in ("breakout", "space_invaders"):
            parser.error(f"no PPO config for {game} (ppo_minatar_breakout, ppo_minatar_space_invaders)")
        pairs.append((agent, game))
    seeds = seed_runs.seeds_from(args, DEFAULT_SEEDS)
    jobs = [(f"{agent}_minatar_{game}", seed) for agent, game in pairs for seed in seeds]
    results = seed_runs.launch_from_args(args, jobs)

    print(f"{'':<28}{' last-100 training return ':-^27}")
    print(f"{'config':<22}{'seed':>5}{'@100k':>9}{'@500k':>9}{'@1M':>9}{'greedy':>8}{'wall s':>9}{'CPU s':>9}"
          f"{'steps/s':>9}")
    games_met = dqn_games = 0
    for agent, game in pairs:
        config = f"{agent}_minatar_{game}"
        rows = [r for r in results if r["config"] == config]
        table = []
        for r in rows:
            if "error" in r:
                print(f"{config:<22}{r['seed']:>5}  error: {r['error']}")
                continue
            values = training_returns(r)
            table.append(values)
            print(f"{config:<22}{r['seed']:>5}{cell(values[0], 9)}{cell(values[1], 9)}{cell(values[2], 9)}"
                  f"{r['final_eval']:>8.1f}{r['seconds']:>9.0f}{r['cpu_seconds']:>9.0f}"
                  f"{r['env_steps'] / r['seconds']:>9.0f}")
        means = [None if not table or any(v[i] is None for v in table) else float(np.mean([v[i] for v in table]))
                 for i in range(len(CHECKPOINTS))]
        print(f"{config:<22}{'mean':>5}{cell(means[0], 9)}{cell(means[1], 9)}{cell(means[2], 9)}")
        if agent == "dqn":
            dqn_games += 1
            anchors = DQN_ANCHORS[game]
            bar = anchors[3]
            met = means[2] is not None and means[2] >= bar
            slow = [r["seed"] for r in rows if "error" not in r and r["env_steps"] >= CHECKPOINTS[-1]
                    and r["seconds"] > WALL_LIMIT_S]
            games_met += met
            print(f"  paper's DQN: {' / '.join('-' if a is None else f'{a:g}' for a in anchors)} at 100k/500k/1M/5M; "
                  f"target at 1M >= {bar:g} -> {'met' if met else 'not met'}"
                  + (f"; over {WALL_LIMIT_S // 60} min: seeds {slow}" if slow else ""))
        else:
            print(f"  gymnax PPO at 10M steps: {PPO_ANCHORS[game]:g} (no pass bar)")
        print()
    if dqn_games:
        need = min(GAMES_NEEDED, dqn_games)
        print(f"DQN: {games_met}/{dqn_games} games at the paper's 5M-step DQN by 1M steps "
              f"(target: {GAMES_NEEDED} of {len(GAMES)}; here {need} of {dqn_games}) -> "
              f"{'MET' if games_met >= need else 'NOT MET'}")
    seed_runs.write_json(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
