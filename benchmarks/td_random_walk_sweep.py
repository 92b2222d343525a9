"""TD(lambda) on the 19-state random walk: the step-size/lambda sweep of Sutton & Barto, figure 12.6.

For every lambda and step size alpha, ``--runs`` independent runs of ``--episodes`` episodes each; the
score of a run is the RMS error of V over the 19 states at the end of each episode, averaged over its
episodes; the table shows the mean over runs (and its standard error). V starts at 0 (RMS error
sqrt(0.3) = 0.548), gamma = 1, linear TD on one-hot features = tabular TD(lambda), accumulating traces,
online updates -- rlscratch.agents.td.TD exactly as a config would build it.

Every cell replays the same random walks (run r uses env seed r: the walk ignores the agent), so the
cells differ only in alpha and lambda. A run whose error passes ``--diverged`` is stopped, and a cell with
any such run is shown as "div".

    python benchmarks/td_random_walk_sweep.py                       # 100 runs x 10 episodes, the book's grid
    python benchmarks/td_random_walk_sweep.py --runs 20 --png sweep.png
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from rlscratch.agents.td import TD, TDConfig
from rlscratch.envs.random_walk import RandomWalk

from rlscratch.agent import EnvSpec, Step
from rlscratch.config import ModelConfig
from rlscratch.optim_config import OptimConfig

N_STATES = 19


def record_walks(seed: int, episodes: int) -> list[Step]:
    """The transitions of ``episodes`` random-walk episodes as one-env Steps (the walk needs no agent)."""
    env = RandomWalk(N_STATES)
    steps = []
    obs, _ = env.reset(seed=seed)
    action = np.zeros(1, dtype=np.int64)
    for _ in range(episodes):
        while True:
            next_obs, reward, terminated, _, info = env.step(0)
            extra = {}
            if terminated:
                extra = {"true_values": info["true_values"][None], "_true_values": np.ones(1, dtype=bool),
                         "state_observations": info["state_observations"][None]}
            steps.append(Step(obs[None], action, np.array([reward]), next_obs[None], np.array([terminated]),
                              np.array([False]), extra))
            if terminated:
                obs, _ = env.reset()
                break
            obs = next_obs
    return steps


def score(lam: float, alpha: float, walks: list[Step], seed: int, diverged: float) -> float:
    """One run: the RMS error at the end of each episode, averaged over the episodes (inf if diverged)."""
    env = RandomWalk(N_STATES)
    spec = EnvSpec(env.observation_space, env.action_space, num_envs=1)
    config = TDConfig(optim=OptimConfig(name="sgd", lr=alpha), gamma=1.0, lam=lam)  # sgd with lr alpha: tabular TD
    agent = TD(config, spec, ModelConfig(), np.random.default_rng(seed))
    errors = []
    with np.errstate(over="ignore", invalid="ignore"):
        for step in walks:
            metrics = agent.observe(step)
            if "value/rms_error" in metrics:
                errors.append(metrics["value/rms_error"])
                if not errors[-1] <= diverged:
                    return math.inf
    return float(np.mean(errors))


def sweep_cell(args: tuple[float, float, int, int, float]) -> tuple[float, float, np.ndarray]:
    lam, alpha, runs, episodes, diverged = args
    scores = np.array([score(lam, alpha, record_walks(run, episodes), run, diverged) for run in range(runs)])
    return lam, alpha, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--lambdas", default="0,0.4,0.8,0.9,0.95,0.975,0.99,1")
    parser.add_argument("--alphas", default="0.01,0.02,0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    parser.add_argument("--diverged", type=float, default=2.0, help="stop a run whose RMS error passes this")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--png", default=None, help="also plot the curves (matplotlib) into this file")
    args = parser.parse_args()
    lambdas = [float(x) for x in args.lambdas.split(",")]
    alphas = [float(x) for x in args.alphas.split(",")]

    start = time.perf_counter()
    cells = [(lam, alpha, args.runs, args.episodes, args.diverged) for lam in lambdas for alpha in alphas]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = {(lam, alpha): scores for lam, alpha, scores in pool.map(sweep_cell, cells)}
    elapsed = time.perf_counter() - start

    print(f"TD(lambda), accumulating traces, 19-state random walk: RMS error over the 19 states, averaged over "
          f"the first {args.episodes} episodes and {args.runs} runs (initial error 0.548); {elapsed:.0f} s\n")
    print("lambda \\ alpha " + "".join(f"{a:>8g}" for a in alphas) + "    best")
    for lam in lambdas:
        means = [float(results[lam, a].mean()) for a in alphas]
        cells_text = "".join(f"{m:8.3f}" if math.isfinite(m) else f"{'div':>8}" for m in means)
        best = int(np.argmin(means))
        if not math.isfinite(means[best]):
            print(f"{lam:<15g}{cells_text}    diverged at every alpha")
            continue
        sem = results[lam, alphas[best]].std(ddof=1) / math.sqrt(args.runs) if args.runs > 1 else 0.0
        print(f"{lam:<15g}{cells_text}    {means[best]:.3f} ± {sem:.3f} at alpha {alphas[best]:g}")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        for lam in lambdas:
            means = np.array([results[lam, a].mean() for a in alphas])
            shown = np.isfinite(means) & (means <= 0.6)
            ax.plot(np.array(alphas)[shown], means[shown], marker="o", ms=3, label=f"λ={lam:g}")
        ax.set_xlabel("α")
        ax.set_ylabel(f"RMS error, first {args.episodes} episodes, {args.runs} runs")
        ax.set_ylim(0.2, 0.6)
        ax.set_title("TD(λ) on the 19-state random walk")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
