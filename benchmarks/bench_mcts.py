"""Benchmark: tree-search throughput of rlscratch.muzero.mcts, in simulations per second.
(``python -m rlscratch.bench mcts`` runs this file; ``python benchmarks/bench_mcts.py`` does the same.)

    python -m rlscratch.bench mcts                         # 1 and 64 roots, 50 simulations, pUCT and Gumbel
    python -m rlscratch.bench mcts --roots 1,8,64 --simulations 50 --search puct
    python -m rlscratch.bench mcts --run-dir runs/muzero_cartpole-...   # a trained network's trees
    python -m rlscratch.bench mcts --json
    python -m rlscratch.bench mcts --model conv            # a small conv model (benchmarks/conv_search_model.py)

The network is CartPole-sized, as configs/muzero_cartpole.yaml builds it: 4 observations, 2 actions,
hidden layers [64], a 32-unit hidden state, value support 20 and reward support 5. Without
``--run-dir`` its weights are random, every head included (a freshly initialised MuZeroNet has
zero heads, whose all-equal priors and values would make every tree the same lopsided shape); the
mean depth of the leaves is printed, since a deeper tree costs more per simulation.

A simulation is one leaf of one tree: a search over B roots with S simulations performs B * S of
them, evaluating the B leaves of each step in one batched network call. BLAS runs on one thread
(threadpoolctl), the setting that matters for the small matrices of tree search.

Method: every case is warmed up, then the cases take turns (``--rounds`` rounds of about
``--block`` seconds each, so that slow drift of a shared machine hits all alike); each search is
timed with ``time.perf_counter`` (wall clock) and ``time.process_time`` (this process's CPU time).
The figure is the median search; "CPU" rates count only the time this process was running, which
is what the numbers would be on an idle machine -- both are printed, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from rlscratch.muzero.mcts import MCTS, SearchConfig
from rlscratch.muzero.model import MuZeroNet

TARGETS = {1: 15_000, 64: 100_000}   # simulations/s the project aims for (pUCT, 50 simulations)


def cartpole_net(seed: int = 0) -> MuZeroNet:
    rng = np.random.default_rng(seed)
    net = MuZeroNet(4, 2, rng, state_dim=32, hidden=[64], value_support=20, reward_support=5)
    # give the zero-initialised heads random weights of the scale of the others
    net.dynamics_net.layers[-1].params["W"][32:] = rng.standard_normal((11, 64)) * 0.3
    net.prediction.layers[-1].params["W"][...] = rng.standard_normal((2 + 41, 64)) * 0.3
    return net


def trained_net(run_dir: str) -> MuZeroNet:
    from rlscratch.trainer import load_trained_agent

    _, agent, _ = load_trained_agent(Path(run_dir))
    return agent.net


def mean_leaf_depth(search: MCTS, simulations: int) -> float:
    return float(search.depth[:, 1:simulations + 1].mean())


def measure(net: MuZeroNet, cases: list[tuple[str, int]], simulations: int, rounds: int, block: float,
            warmup: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    setups = []
    for kind, roots in cases:
        search = MCTS(SearchConfig(num_simulations=simulations, gumbel=kind == "gumbel"), net.n_actions)
        obs = rng.uniform(-0.2, 0.2, (roots, net.obs_dim)).astype(np.float32)  # CartPole-like states
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            search.run(net, obs, rng, explore=True)
        setups.append((kind, roots, search, obs))
    wall: list[list[float]] = [[] for _ in cases]
    cpu: list[list[float]] = [[] for _ in cases]
    depth: list[list[float]] = [[] for _ in cases]
    for r in range(rounds):
        order = range(len(cases)) if r % 2 == 0 else reversed(range(len(cases)))
        for i in order:
            _, _, search, obs = setups[i]
            end = time.perf_counter() + block
            while True:
                w0, c0 = time.perf_counter(), time.process_time()
                search.run(net, obs, rng, explore=True)
                w1, c1 = time.perf_counter(), time.process_time()
                wall[i].append(w1 - w0)
                cpu[i].append(c1 - c0)
                depth[i].append(mean_leaf_depth(search, simulations))
                if w1 >= end:
                    break
    results = []
    for i, (kind, roots) in enumerate(cases):
        sims = roots * simulations
        w, c = statistics.median(wall[i]), statistics.median(cpu[i])
        results.append({"search": kind, "roots": roots, "simulations": simulations, "searches": len(wall[i]),
                        "median_search_ms": 1e3 * w, "sims_per_s": sims / w,
                        "median_search_cpu_ms": 1e3 * c, "sims_per_cpu_s": sims / c if c > 0 else float("inf"),
                        "mean_leaf_depth": statistics.fmean(depth[i]),
                        "target_sims_per_s": TARGETS.get(roots) if kind == "puct" else None})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlscratch.bench mcts", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", default="1,64", help="comma list of batch sizes (default: 1,64)")
    parser.add_argument("--simulations", type=int, default=50)
    parser.add_argument("--search", default="puct,gumbel", help="puct, gumbel or both (default: both)")
    parser.add_argument("--run-dir", help="use this run's trained network instead of random weights")
    parser.add_argument("--model", choices=["cartpole", "conv"], default="cartpole",
                        help="random network: CartPole-sized MLP (default) or a small conv model, 4x10x10 input")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=float, default=0.5, help="seconds per case per round")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    kinds = [k.strip() for k in args.search.split(",") if k.strip()]
    unknown = set(kinds) - {"puct", "gumbel"}
    if unknown:
        parser.error(f"--search: unknown {', '.join(sorted(unknown))} (puct, gumbel)")
    cases = [(kind, int(r)) for kind in kinds for r in args.roots.split(",")]
    if args.run_dir:
        net = trained_net(args.run_dir)
    elif args.model == "conv":
        from conv_search_model import ConvSearchModel

        net = ConvSearchModel(np.random.default_rng(0))
    else:
        net = cartpole_net()
    network = "trained: " + args.run_dir if args.run_dir else f"random {args.model}"
    load_before = os.getloadavg()[0]
    with threadpool_limits(1):
        results = measure(net, cases, args.simulations, args.rounds, args.block, args.warmup)
    if args.model == "conv":   # the targets are the CartPole network's
        for r in results:
            r["target_sims_per_s"] = None
    load_after = os.getloadavg()[0]
    notes = []
    if max(load_before, load_after) > (os.cpu_count() or 1) * 0.75:
        notes.append(f"the machine was busy (1-minute load average {load_before:.1f} before, {load_after:.1f} "
                     f"after, on {os.cpu_count()} CPUs): wall-clock rates are depressed; the CPU-time rates "
                     "estimate an idle machine")
    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "python": sys.version.split()[0], "numpy": np.__version__,
                          "network": network,
                          "load_average": [load_before, load_after], "notes": notes, "results": results}, indent=2))
        return 0
    print(f"MCTS throughput: {args.simulations} simulations per search, network: {network}, BLAS 1 thread")
    header = f"{'search':<7} {'roots':>5} {'ms/search':>10} {'sims/s':>10} {'CPU ms':>8} {'sims/CPU-s':>11} " \
             f"{'depth':>6} {'target':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        target = f"{r['target_sims_per_s']:,}" if r["target_sims_per_s"] else "-"
        print(f"{r['search']:<7} {r['roots']:>5} {r['median_search_ms']:>10.2f} {r['sims_per_s']:>10,.0f} "
              f"{r['median_search_cpu_ms']:>8.2f} {r['sims_per_cpu_s']:>11,.0f} {r['mean_leaf_depth']:>6.1f} "
              f"{target:>8}")
    for note in notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
