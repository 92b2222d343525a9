"""DQN's targets, over several seeds: steps to the threshold, final return, wall-clock.

    python benchmarks/dqn_targets.py                          # CartPole, seeds 0-4
    python benchmarks/dqn_targets.py acrobot mountaincar      # 3 seeds each
    python benchmarks/dqn_targets.py lunarlander --seeds 0 1 2
    python benchmarks/dqn_targets.py cartpole --set agent.lr=1e-3 --set train.total_steps=40000

Each (env, seed) is one run of the shipped config through the ordinary trainer, in a pool of
``--workers`` processes (default 2: one per core of the development machine), each pinned to one
BLAS thread so that parallel runs do not fight over cores. A run passes when its first evaluation
at or above the threshold comes by the step budget, and -- for CartPole, whose DQN is known to
collapse after solving -- its last evaluation is still at or above it.

Columns: ``first >= thr`` the first evaluation step at or above the threshold; ``final`` the
evaluation at the end of the run (20 greedy episodes unless the config says otherwise). Times come
twice: wall-clock, and the process's CPU time -- on a shared machine the wall-clock includes what
other processes took, the CPU time does not. ``all`` is the whole run, ``train`` the same without
the evaluations; gradient ``updates/s`` and env ``steps/s`` are per second of ``train``.
"""

from __future__ import annotations

import os

# One BLAS thread per run: set before numpy loads, here and (inherited) in every worker.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Target:
    config: str
    threshold: float
    by: int  # env steps
    seeds: tuple[int, ...]
    must_hold: bool = False  # the final evaluation must also reach the threshold
    need: int | None = None  # passing seeds required (default: all)


TARGETS = {
    "cartpole": Target("dqn_cartpole.yaml", 475.0, 50_000, (0, 1, 2, 3, 4), must_hold=True, need=4),
    "acrobot": Target("dqn_acrobot.yaml", -100.0, 100_000, (0, 1, 2)),
    "mountaincar": Target("dqn_mountaincar.yaml", -110.0, 150_000, (0, 1, 2)),
    "lunarlander": Target("dqn_lunarlander.yaml", 200.0, 300_000, (0, 1, 2)),
}


def run_one(env: str, seed: int, overrides: tuple[str, ...], root: str) -> dict:
    """Train one seed; returns its evaluation curve and timings."""
    import rlscratch.trainer as trainer
    from rlscratch.config import load_config
    from rlscratch.events import read_scalars
    from rlscratch.nn.memory import keep_freed_memory

    keep_freed_memory()  # as python -m rlscratch.train does (its BLAS thread count is set above)

    target = TARGETS[env]
    config, _ = load_config(str(CONFIGS / target.config),
                            [*overrides, f"log.root={root}", "log.progress=false"], seed=seed)
    eval_seconds = eval_cpu = 0.0
    evaluate = trainer.Evaluator.run

    def timed_evaluate(self, agent, episodes):
        nonlocal eval_seconds, eval_cpu
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            return evaluate(self, agent, episodes)
        finally:
            eval_seconds += time.perf_counter() - start
            eval_cpu += time.process_time() - cpu_start

    trainer.Evaluator.run = timed_evaluate
    run_dir = Path(root) / f"{env}-seed{seed}"
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the table is the output
        summary = trainer.train(config, run_dir)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    steps, returns = read_scalars(run_dir)["eval/mean_return"]
    return {"env": env, "seed": seed, "steps": steps.tolist(), "returns": returns.tolist(),
            "final": summary["eval_mean"], "wall": wall, "train": wall - eval_seconds, "cpu": cpu,
            "train_cpu": cpu - eval_cpu,
            "env_steps": summary["env_steps"], "updates": summary["updates"]}


def verdict(target: Target, result: dict) -> tuple[int | None, bool]:
    first = next((s for s, r in zip(result["steps"], result["returns"]) if r >= target.threshold), None)
    ok = first is not None and first <= target.by and (not target.must_hold or result["final"] >= target.threshold)
    return first, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("envs", nargs="*", default=["cartpole"], help=f"any of: {', '.join(TARGETS)}")
    parser.add_argument("--seeds", type=int, nargs="+", help="override each target's seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="config override for every run (repeatable)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--curves", action="store_true", help="also print every evaluation")
    args = parser.parse_args()
    unknown = [env for env in args.envs if env not in TARGETS]
    if unknown:
        parser.error(f"unknown env {unknown[0]!r} (choose from {', '.join(TARGETS)})")

    jobs = [(env, seed) for env in args.envs for seed in (args.seeds or TARGETS[env].seeds)]
    with tempfile.TemporaryDirectory(prefix="dqn-targets-") as root, \
            ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_one, env, seed, tuple(args.set), root) for env, seed in jobs]
        results = [f.result() for f in futures]

    print(f"{'':<44}{' wall-clock ':-^34}  {' CPU time ':-^33}")
    print(f"{'env':<12}{'seed':>5}{'first >= thr':>14}{'final':>8}{'pass':>5}"
          f"{'all s':>7}{'train s':>8}{'updates/s':>10}{'steps/s':>9}  {'all s':>6}{'train s':>8}{'updates/s':>10}"
          f"{'steps/s':>9}")
    for env in dict.fromkeys(env for env, _ in jobs):
        target = TARGETS[env]
        rows = [r for r in results if r["env"] == env]
        passed = 0
        for r in rows:
            first, ok = verdict(target, r)
            passed += ok
            print(f"{env:<12}{r['seed']:>5}{first if first is not None else '-':>14}{r['final']:>8.1f}"
                  f"{'yes' if ok else 'no':>5}{r['wall']:>7.1f}{r['train']:>8.1f}{r['updates'] / r['train']:>10.0f}"
                  f"{r['env_steps'] / r['train']:>9.0f}  {r['cpu']:>6.1f}{r['train_cpu']:>8.1f}"
                  f"{r['updates'] / r['train_cpu']:>10.0f}{r['env_steps'] / r['train_cpu']:>9.0f}")
            if args.curves:
                print("    " + "  ".join(f"{s // 1000}k:{v:.0f}" for s, v in zip(r["steps"], r["returns"])))
        need = target.need or len(rows)
        hold = ", still there at the end" if target.must_hold else ""
        print(f"{env}: {passed}/{len(rows)} seeds reach {target.threshold:g} by {target.by:,} steps{hold} "
              f"(target: {need}/{len(target.seeds)}) -> {'MET' if passed >= need else 'NOT MET'}\n")


if __name__ == "__main__":
    main()
