"""A multi-seed sweep on a local two-node Ray cluster against the same runs one after another, and the
same sweep with one worker killed mid-run (the figures of issue 16).

    python benchmarks/sweep_cluster.py                                   # ppo_cartpole, seeds 0-9
    python benchmarks/sweep_cluster.py --seeds 0-3 --set train.total_steps=20000 --phases sweep,sequential

Phases, in this order, side by side in one invocation (compare only ratios from one run: the machine
is shared):

* ``sweep``: two Ray nodes with one CPU each on 127.0.0.1 (rlscratch.ray_cluster.local_cluster), then
  ``python -m rlscratch.sweep --address ...`` over the seeds; its wall-clock, Ray's start-up inside it,
  and the overhead per trial: sweep wall-clock x 2 slots - the trials' own wall-clock, over the trials;
* ``sequential``: ``python -m rlscratch.train`` for each seed, one after another;
* ``killed``: the sweep again; once the first trial has written its first checkpoint its Ray worker
  process is killed (SIGKILL, by pid); every trial must finish, the killed one resumed.

Per seed: the final evaluation of each phase and whether every array of the final checkpoints
(networks, optimizer, generators, environments) equals the sweep's, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlscratch import ray_cluster, sweep  # noqa: E402
from rlscratch.checkpoint import CheckpointManager, read_checkpoint  # noqa: E402


def final_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    arrays, _ = read_checkpoint(CheckpointManager(run_dir / "checkpoints").latest())
    return arrays


def same(a: Path, b: Path) -> bool:
    x, y = final_arrays(a), final_arrays(b)
    return sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k]) for k in x)


def final_eval(run_dir: Path) -> float:
    return sweep.collect(run_dir)["final_eval"]


def run_sweep(args: argparse.Namespace, address: str, env: dict, out: Path, kill: bool) -> dict:
    command = [sys.executable, "-m", "rlscratch.sweep", "--config", args.config, "--seeds", args.seeds,
               "--address", address, "--out", str(out), "--max-failures", "2"]
    for assignment in args.set:
        command += ["--set", assignment]
    begin = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    if kill:
        while killed is None and process.poll() is None:
            for attempts in sorted((out / "trials").glob("*.attempts")):
                run_dir = out / "runs" / attempts.name.removesuffix(".attempts")
                if list((run_dir / "checkpoints").glob("step_*.npz")):
                    killed = json.loads(attempts.read_text().splitlines()[0])
                    killed["trial"] = run_dir.name
                    os.kill(killed["worker_pid"], signal.SIGKILL)
                    print(f"  killed worker {killed['worker_pid']} of {run_dir.name} "
                          f"({time.perf_counter() - begin:.0f} s in)", flush=True)
                    break
            time.sleep(0.2)
    output, _ = process.communicate()
    wall = time.perf_counter() - begin
    print(output, flush=True)
    if process.returncode != 0:
        raise SystemExit(f"the sweep failed (exit {process.returncode})")
    summary = json.loads((out / "summary.json").read_text())
    trials = summary["trials"]
    overhead = (wall * 2 - sum(t["attempt_seconds"] for t in trials)) / len(trials)
    # inside each attempt: the trial's process start-up (python, imports, envs: the attempt's wall less
    # the run's own training time) and reading its results back (collect)
    startup = float(np.mean([t["attempt_seconds"] - t["seconds"] for t in trials if t.get("seconds") is not None]))
    collecting = float(np.mean([t.get("collect_seconds", float("nan")) for t in trials]))
    return {"wall": wall, "ray_start": summary["timing"]["ray_start_seconds"], "overhead_per_trial": overhead,
            "startup_per_trial": startup, "collect_per_trial": collecting,
            "runs": {t["seed"]: Path(t["run_dir"]) for t in trials}, "killed": killed,
            "attempts": {t["seed"]: t["attempts"] for t in trials}}


def run_sequential(args: argparse.Namespace, out: Path) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    runs, begin = {}, time.perf_counter()
    for seed in sweep.parse_seeds(args.seeds):
        run_dir = out / f"seed{seed}"
        command = [sys.executable, "-m", "rlscratch.train", "--config", args.config, "--seed", str(seed),
                   "--run-dir", str(run_dir)]
        for assignment in args.set:
            command += ["--set", assignment]
        subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        runs[seed] = run_dir
        print(f"  sequential seed {seed}: {time.perf_counter() - begin:.0f} s so far", flush=True)
    return {"wall": time.perf_counter() - begin, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="ppo_cartpole")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--set", action="append", default=["train.checkpoint_every=10000"], metavar="KEY=VALUE",
                        help="overrides for every run (default adds train.checkpoint_every=10000, to resume from)")
    parser.add_argument("--phases", default="sweep,sequential,killed")
    parser.add_argument("--reference", metavar="SWEEP_DIR",
                        help="compare with this earlier sweep's runs (e.g. --phases killed after a sweep run)")
    parser.add_argument("--root", default=str(ROOT / "runs" / f"sweep_cluster-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = parser.parse_args(argv)
    phases = args.phases.split(",")
    root = Path(args.root)
    print(f"{args.config}, seeds {args.seeds}, overrides {args.set}; load at start: {os.getloadavg()}", flush=True)
    results: dict[str, dict] = {}
    if "sweep" in phases or "killed" in phases:
        begin = time.perf_counter()
        with ray_cluster.local_cluster(nodes=2, cpus_per_node=1) as (address, env):
            print(f"two-node cluster at {address} up in {time.perf_counter() - begin:.1f} s", flush=True)
            env = dict(env, OPENBLAS_NUM_THREADS="1")
            if "sweep" in phases:
                results["sweep"] = run_sweep(args, address, env, root / "sweep", kill=False)
                print(f"sweep: {results['sweep']['wall']:.1f} s; load {os.getloadavg()}", flush=True)
            if "sequential" in phases:  # between the two sweeps, under the same cluster's idle load
                results["sequential"] = run_sequential(args, root / "sequential")
                print(f"sequential: {results['sequential']['wall']:.1f} s; load {os.getloadavg()}", flush=True)
            if "killed" in phases:
                results["killed"] = run_sweep(args, address, env, root / "killed", kill=True)
                print(f"killed sweep: {results['killed']['wall']:.1f} s; load {os.getloadavg()}", flush=True)
    elif "sequential" in phases:
        results["sequential"] = run_sequential(args, root / "sequential")

    if args.reference:
        trials = json.loads((Path(args.reference) / "summary.json").read_text())["trials"]
        results = {"sweep": {"runs": {t["seed"]: Path(t["run_dir"]) for t in trials}}, **results}
    reference = results.get("sweep") or results.get("sequential")
    print(f"\n{'seed':>4}  " + "  ".join(f"{name + ' final':>16}" for name in results) + "  "
          + "  ".join(f"{name + ' = sweep':>18}" for name in results if name != "sweep"))
    for seed in sweep.parse_seeds(args.seeds):
        finals = "  ".join(f"{final_eval(r['runs'][seed]):>16.1f}" for r in results.values())
        equal = "  ".join(f"{'yes' if same(r['runs'][seed], reference['runs'][seed]) else 'NO':>18}"
                          for name, r in results.items() if name != "sweep")
        print(f"{seed:>4}  {finals}  {equal}")
    if "wall" in results.get("sweep", {}) and "sequential" in results:
        ratio = results["sweep"]["wall"] / results["sequential"]["wall"]
        print(f"\nsweep on 2 nodes {results['sweep']['wall']:.1f} s vs one after another "
              f"{results['sequential']['wall']:.1f} s: {ratio:.2f}x (target <= 0.6x; 0.5x is the 2-core limit)")
    for name in ("sweep", "killed"):
        if name in results and "wall" in results[name]:
            r = results[name]
            print(f"{name}: Ray start in the driver {r['ray_start']:.1f} s; overhead per trial "
                  f"{r['overhead_per_trial']:.1f} s (2 slots x wall - trials' own wall, per trial); inside each "
                  f"trial: process start-up {r['startup_per_trial']:.1f} s, result collection "
                  f"{r['collect_per_trial']:.2f} s; "
                  f"attempts per seed {r['attempts']}")
    if "killed" in results and results["killed"]["killed"]:
        print(f"killed: worker {results['killed']['killed']['worker_pid']} of {results['killed']['killed']['trial']}")
    print(f"load at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
