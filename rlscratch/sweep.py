"""python -m rlscratch.sweep --config NAME --seeds 0-9 [--grid KEY=V1,V2 ...] [--set KEY=VALUE ...]
       [--address auto|HOST:PORT] [--cpus-per-trial 1] [--max-failures 3] [--threshold X] [--out DIR]
python -m rlscratch.sweep --config NAME --search optuna --samples N --space KEY=loguniform:1e-4:1e-2 ...
       [--metric eval/mean_return] [--mode max] [--search-seed 0] [--concurrent 2]

Many seeds, and a grid over hyperparameters, on Ray Tune: on this machine (Ray started in-process)
or on a cluster (--address). Every trial is an ordinary training run -- ``python -m rlscratch.train
--config NAME --seed S --set ... --run-dir OUT/runs/TRIAL`` in a subprocess -- so evaluate, plot and
resume work on its run directory. A trial whose worker dies is retried (up to --max-failures times)
with ``python -m rlscratch.train --resume``: it continues from its own last checkpoint and ends with
exactly the parameters an undisturbed run would have. At the end: a table of aggregates per
configuration (mean, median and IQM of the final evaluation with stratified-bootstrap 95% CIs, steps
to --threshold, wall and CPU time) on stdout and in OUT/summary.json.

    sweep(trials, out)             the runner; benchmarks/seed_runs.py calls it too
      -> Tune, one trial per Trial:  run_trial  ->  python -m rlscratch.train ...  (retried: --resume)
      -> collect(run_dir)            what a finished run directory says (evaluations, steps, times)
    summarize(results)             groups runs by their resolved config (seed and log settings aside)

With ``--search optuna`` Ray Tune's OptunaSearch (TPE, seeded by --search-seed) proposes --samples
points of the --space; each point trains every --seeds seed (run_search_trial) and scores the mean of
--metric's final value. Proposals come in batches of --concurrent, each batch seeing only the results
of the batches before it, so the same command proposes the same points whatever the machines' speeds.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlscratch.cli import run_cli
from rlscratch.errors import ConfigError, UserError
from rlscratch.ray_cluster import PACKAGE_PARENT, start_ray  # trials put PACKAGE_PARENT on PYTHONPATH


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: a config (a name in configs/ or a path), a seed, overrides."""

    config: str
    seed: int
    overrides: tuple[str, ...] = ()
    name: str = ""  # its run directory's name under OUT/runs (default: derived from the above)

    def folder(self) -> str:
        if self.name:
            return self.name
        tag = hashlib.sha1("\n".join(self.overrides).encode()).hexdigest()[:6] if self.overrides else ""
        return f"{Path(self.config).stem}{'-' + tag if tag else ''}-seed{self.seed}"


# -- the command line -----------------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    """'0-9' -> 0..9; '0,3,5-7' -> [0, 3, 5, 6, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ConfigError(f"--seeds {text!r}: expected seeds like 0-9 or 0,3,5-7")
        first = int(match.group(1))
        seeds.extend(range(first, int(match.group(2) or first) + 1))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} names a seed twice; give each seed once")
    return seeds


def parse_grid(entries: list[str]) -> list[tuple[str, list[str]]]:
    """['agent.lr=1e-3,5e-4'] -> [('agent.lr', ['1e-3', '5e-4'])]."""
    grid = []
    for entry in entries:
        key, sep, values = entry.partition("=")
        if not sep or not key or not all(v.strip() for v in values.split(",")):
            raise ConfigError(f"--grid {entry!r}: expected KEY=V1,V2,... e.g. --grid agent.lr=1e-3,5e-4")
        grid.append((key.strip(), [v.strip() for v in values.split(",")]))
    return grid


def expand(config: str, seeds: list[int], grid: list[tuple[str, list[str]]], sets: list[str]) -> list[Trial]:
    """Every grid point (the Cartesian product of the --grid values) times every seed."""
    points = itertools.product(*[[f"{key}={value}" for value in values] for key, values in grid])
    return [Trial(config, seed, tuple(sets) + point) for point in points for seed in seeds]


SPACE_KINDS = ("uniform", "loguniform", "randint", "choice")
SPACE_USAGE = ("expected KEY=uniform:LOW:HIGH, loguniform:LOW:HIGH, randint:LOW:HIGH (both included) or "
               "choice:V1,V2,... e.g. --space agent.optim.lr=loguniform:1e-4:1e-2")


@dataclass(frozen=True)
class Search:
    """An Optuna search: ``space`` maps a config key to (kind, arguments) as ``parse_space`` reads them."""

    space: dict
    samples: int
    metric: str = "eval/mean_return"
    mode: str = "max"
    seed: int = 0
    concurrent: int = 2


def parse_space(entries: list[str]) -> dict[str, tuple[str, list]]:
    """['agent.optim.lr=loguniform:1e-4:1e-2', 'agent.gamma=choice:0.98,0.99'] ->
    {'agent.optim.lr': ('loguniform', [1e-4, 1e-2]), 'agent.gamma': ('choice', ['0.98', '0.99'])}."""
    space: dict[str, tuple[str, list]] = {}
    for entry in entries:
        key, sep, spec = entry.partition("=")
        kind, colon, rest = spec.partition(":")
        key = key.strip()
        if not sep or not key or not colon or kind.strip() not in SPACE_KINDS:
            raise ConfigError(f"--space {entry!r}: {SPACE_USAGE}")
        kind = kind.strip()
        if key in space:
            raise ConfigError(f"--space names {key} twice; give each key one space")
        if kind == "choice":
            values = [v.strip() for v in rest.split(",")]
            if not all(values):
                raise ConfigError(f"--space {entry!r}: choice needs values V1,V2,... with none empty")
            space[key] = (kind, values)
            continue
        try:
            low, high = (int(b) if kind == "randint" else float(b) for b in rest.split(":"))
        except ValueError:
            raise ConfigError(f"--space {entry!r}: {kind} needs two {'integers' if kind == 'randint' else 'numbers'} "
                              "LOW:HIGH") from None
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ConfigError(f"--space {entry!r}: needs finite LOW < HIGH")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"--space {entry!r}: loguniform needs LOW > 0 (use uniform for a range through 0)")
        space[key] = (kind, [low, high])
    return space


def tune_domain(kind: str, args: list):
    """The Ray Tune sampling domain of one parsed --space entry."""
    from ray import tune

    if kind == "choice":
        return tune.choice(args)
    low, high = args
    return {"uniform": tune.uniform, "loguniform": tune.loguniform}[kind](low, high) if kind != "randint" else \
        tune.randint(low, high + 1)  # (Tune's upper end is excluded; ours is included)


def space_corners(space: dict[str, tuple[str, list]]) -> list[tuple[str, ...]]:
    """Override sets that between them give every key each end of its range (every choice): checked
    like a trial before Ray starts, so a misspelt key or an out-of-range bound is one line."""
    columns = [[f"{key}={value!r}" if kind != "choice" else f"{key}={value}" for value in args]
               for key, (kind, args) in space.items()]
    width = max(len(c) for c in columns)
    return [tuple(c[min(i, len(c) - 1)] for c in columns) for i in range(width)]


def check_trials(trials: list[Trial]) -> None:
    """Load every trial's config now, so a typo is one line before Ray starts, not N failed trials."""
    from rlscratch.agent import agent_config, resolve_agent
    from rlscratch.config import load_config

    for trial in trials:
        config, _ = load_config(trial.config, list(trial.overrides), trial.seed)
        agent_config(resolve_agent(config.agent["name"]), config.agent)
    names = [t.folder() for t in trials]
    if len(set(names)) != len(names):
        raise ConfigError("two trials would share a run directory; give each (config, seed, overrides) once")


# -- one trial, on whichever Ray worker runs it ---------------------------------------------------
def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGKILL when the worker that started it dies, so a
    killed worker never leaves an orphan still writing the run directory its retry resumes."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def train_command(spec: dict, run_dir: Path) -> tuple[list[str], bool]:
    """``python -m rlscratch.train`` for this trial: --resume if an earlier attempt left a checkpoint."""
    if any((run_dir / "checkpoints").glob("step_*.npz")):
        return [sys.executable, "-m", "rlscratch.train", "--resume", str(run_dir)], True
    if run_dir.exists():  # an attempt that died before its first checkpoint: nothing to keep
        shutil.rmtree(run_dir)
    command = [sys.executable, "-m", "rlscratch.train", "--config", spec["config"], "--seed", str(spec["seed"]),
               "--run-dir", str(run_dir)]
    for assignment in spec["overrides"]:
        command += ["--set", assignment]
    return command, False


def run_trial(tune_config: dict) -> dict:
    """The Tune trainable: train one run in a subprocess, then report what its run directory holds.
    Raises if the run fails, so Tune retries it (and the retry resumes from the last checkpoint)."""
    spec = tune_config["spec"]
    run_dir = Path(spec["run_dir"])
    record = Path(spec["record"])
    command, resumed = train_command(spec, run_dir)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([spec["pythonpath"], os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    started, cpu_before = time.time(), _child_cpu_seconds()
    # The sweep's own working directory where this machine has it (relative paths in a config mean
    # what they meant there), else the folder rlscratch was imported from.
    cwd = spec["cwd"] if Path(spec["cwd"]).is_dir() else spec["pythonpath"]
    child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    attempt = {"worker_pid": os.getpid(), "child_pid": child.pid, "node": _node_id(), "resumed": resumed,
               "started": started}
    with open(record.with_suffix(".attempts"), "a") as log:  # one line per attempt, for tests and forensics
        log.write(json.dumps(attempt) + "\n")
    _, stderr = child.communicate()
    usage = _child_cpu_seconds() - cpu_before
    attempt.update(ended=time.time(), returncode=child.returncode)
    if child.returncode != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}: {last}")
    collecting = time.perf_counter()
    result = collect(run_dir)
    result.update(collect_seconds=time.perf_counter() - collecting,
                  trial=spec["name"], config=spec["config"], seed=spec["seed"], overrides=spec["overrides"],
                  attempt_seconds=attempt["ended"] - started, attempt_cpu_seconds=usage, resumed=resumed,
                  worker_pid=os.getpid(), node=attempt["node"], started=started, ended=attempt["ended"])
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(record)
    return result


def _node_id() -> str:
    """The Ray node this trial runs on (two nodes on one machine share a host name)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _child_cpu_seconds() -> float:
    """CPU seconds of the children this worker has waited for (a worker runs one trial at a time, so the
    difference across one trial is that trial's)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def collect(run_dir: Path) -> dict:
    """What a finished run directory says: its evaluation curve ([step, mean return], from TensorBoard),
    the final evaluation, counters and times (from the last checkpoint). A resumed run logged the steps
    after its checkpoint twice; the later value of each step wins (they are equal: resume is exact)."""
    from rlscratch.checkpoint import CheckpointManager, read_checkpoint
    from rlscratch.events import read_scalars

    scalars = {tag: dict(zip(steps.tolist(), values.tolist())) for tag, (steps, values) in
               read_scalars(run_dir).items()}
    evals = sorted(scalars.get("eval/mean_return", {}).items())
    stds = scalars.get("eval/std_return", {})
    path = CheckpointManager(run_dir / "checkpoints").latest()
    meta, counters = {}, {}
    if path is not None:
        arrays, meta = read_checkpoint(path)
        if "collector/counters" in arrays:
            counters = json.loads(str(arrays["collector/counters"]))
    final_step, final = evals[-1] if evals else (None, float("nan"))
    result = {"run_dir": str(run_dir), "env_steps": meta.get("env_steps", 0), "episodes": counters.get("episodes"),
              "seconds": meta.get("elapsed"), "final_eval": final, "final_eval_std": stds.get(final_step, float("nan")),
              "evals": [[int(s), float(m)] for s, m in evals], "updates": _updates_from_log(run_dir)}
    regret = scalars.get("charts/cumulative_regret")
    if regret is not None:
        result["cumulative_regret"] = counters.get("info_totals", {}).get("regret", counters.get("regret"))
        result["regret_curve"] = [[int(s), float(r)] for s, r in sorted(regret.items())]
    return result


def _updates_from_log(run_dir: Path) -> int | None:
    """Gradient updates, from the trainer's closing line in log.txt ('... 1234 updates); final eval ...')."""
    log = run_dir / "log.txt"
    found = re.findall(r"(\d+) updates\)", log.read_text()) if log.is_file() else []
    return int(found[-1]) if found else None


# -- the runner -----------------------------------------------------------------------------------
def sweep(trials: list[Trial], out: Path, address: str | None = None, cpus: int | None = None,
          cpus_per_trial: float = 1.0, max_failures: int = 3, search: Search | None = None) -> tuple[list[dict], dict]:
    """Run every trial on Ray Tune; returns (one result per trial, in order; timings of the sweep).
    A trial that failed more than ``max_failures`` times has {"error": ...} instead of results.
    With ``search``, ``trials`` are the seeds of the base config (no grid), and the result is
    ``search_sweep``'s instead."""
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    if search is not None:
        from rlscratch.search import search_sweep

        return search_sweep(trials, out, search, address, cpus, cpus_per_trial, max_failures)

    out = out.resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "trials").mkdir(exist_ok=True)
    begin = time.perf_counter()
    ray_start = start_ray(address, cpus)
    specs = [{"name": t.folder(), "config": _absolute_if_file(t.config), "seed": t.seed,
              "overrides": list(t.overrides), "run_dir": str(out / "runs" / t.folder()),
              "record": str(out / "trials" / f"{t.folder()}.json"), "pythonpath": str(PACKAGE_PARENT),
              "cwd": os.getcwd()}
             for t in trials]
    try:
        tuner = tune.Tuner(
            tune.with_resources(run_trial, {"cpu": cpus_per_trial}),
            param_space={"spec": tune.grid_search(specs)},
            # A worker process kept from one trial to the next: starting a fresh one cost 8-11 s per
            # trial on a loaded 2-core machine (its trials themselves ran 4-5 s).
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0, callbacks=[JsonLoggerCallback()],
                                      failure_config=tune.FailureConfig(max_failures=max_failures)))
        grid = tuner.fit()
        errors = {r.config["spec"]["name"]: str(r.error).strip().splitlines()[-1] for r in grid if r.error}
    finally:
        ray.shutdown()
    wall = time.perf_counter() - begin
    results = []
    for spec in specs:
        record = Path(spec["record"])
        if spec["name"] in errors or not record.is_file():
            results.append({"trial": spec["name"], "config": spec["config"], "seed": spec["seed"],
                            "overrides": spec["overrides"], "error": errors.get(spec["name"], "no result")})
        else:
            result = json.loads(record.read_text())
            result["attempts"] = len(record.with_suffix(".attempts").read_text().splitlines())
            results.append(result)
    trained = sum(r.get("attempt_seconds", 0.0) for r in results)
    timing = {"wall_seconds": wall, "ray_start_seconds": ray_start, "trial_seconds_total": trained,
              "trials": len(trials)}
    return results, timing


def _absolute_if_file(config: str) -> str:
    """A config given as a path must still be found from a worker's own working directory."""
    return str(Path(config).resolve()) if Path(config).is_file() else config


# -- aggregates -----------------------------------------------------------------------------------
def group_key(run_dir: Path) -> tuple[str, str]:
    """(label, key) of a run's configuration: its resolved config.yaml less what does not change what is
    learned (seed, logging, checkpointing). Runs with equal keys are seeds of one configuration."""
    import yaml

    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data.pop("seed", None)
    data.pop("log", None)
    for key in ("checkpoint_every", "keep_checkpoints"):
        data.get("train", {}).pop(key, None)
    key = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{data.get('name', run_dir.name)}#{key}", key


def summarize(results: list[dict], threshold: float | None = None, reps: int = 2000, seed: int = 0) -> list[dict]:
    """Per configuration: mean, median and IQM of the final evaluation with 95% bootstrap CIs, steps to
    ``threshold`` (per seed, and their median), wall and CPU seconds. Failed trials are counted, not scored."""
    from rlscratch import stats

    groups: dict[str, list[dict]] = {}
    labels: dict[str, str] = {}
    for r in results:
        if "error" in r:
            continue
        label, key = group_key(Path(r["run_dir"]))
        groups.setdefault(key, []).append(r)
        labels[key] = label
    rows = []
    for key, runs in groups.items():
        finals = np.array([[r["final_eval"]] for r in runs])  # (runs, tasks=1)
        row = {"config": labels[key], "key": key, "overrides": runs[0]["overrides"],
               "seeds": [r["seed"] for r in runs], "final_evals": finals[:, 0].tolist(),
               "failed": sum(1 for r in results if "error" in r and r["overrides"] == runs[0]["overrides"])}
        for name, statistic in (("mean", stats.mean), ("median", stats.median), ("iqm", stats.iqm)):
            low, high = stats.stratified_bootstrap_ci(finals, statistic, reps=reps, rng=np.random.default_rng(seed))
            row[name] = {"value": float(statistic(finals)), "ci95": [low, high]}
        if threshold is not None:
            hits = [stats.steps_to(r["evals"], threshold) for r in runs]
            reached = [h for h in hits if h is not None]
            row["threshold"] = threshold
            row["steps_to_threshold"] = hits
            row["reached"] = len(reached)
            row["median_steps_to_threshold"] = float(np.median(reached)) if reached else None
        row["wall_seconds"] = [r["attempt_seconds"] for r in runs]
        row["cpu_seconds"] = [r["attempt_cpu_seconds"] for r in runs]
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    def ci(entry: dict) -> str:
        return f"{entry['value']:.1f} [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]"

    lines = [f"{'configuration':<34} {'runs':>4}  {'mean [95% CI]':>22}  {'median [95% CI]':>22}  "
             f"{'IQM [95% CI]':>22}  {'reached':>7}  {'steps to thr':>12}  {'wall s/run':>10}  {'CPU s/run':>9}"]
    for row in rows:
        reached = f"{row['reached']}/{len(row['seeds'])}" if "threshold" in row else "-"
        steps = row.get("median_steps_to_threshold")
        lines.append(f"{row['config']:<34} {len(row['seeds']):>4}  {ci(row['mean']):>22}  {ci(row['median']):>22}  "
                     f"{ci(row['iqm']):>22}  {reached:>7}  {'-' if steps is None else f'{steps:.0f}':>12}  "
                     f"{np.mean(row['wall_seconds']):>10.1f}  {np.mean(row['cpu_seconds']):>9.1f}")
        if row["overrides"]:
            lines.append(f"    {' '.join(row['overrides'])}")
    return "\n".join(lines)


# -- python -m rlscratch.sweep --------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (argparse's default adds the whole usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see python -m rlscratch.sweep --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m rlscratch.sweep", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file, or a bare name looked up in configs/")
    p.add_argument("--seeds", default="0", help="seeds to run, e.g. 0-9 or 0,3,5-7 (default 0)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a hyperparameter and its values (repeatable; the grid is every combination)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every trial")
    p.add_argument("--search", choices=["grid", "optuna"], default="grid",
                   help="grid (default: every --grid combination) or optuna (--samples points of the --space)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=KIND:ARGS",
                   help="optuna: a key's range, uniform:LOW:HIGH, loguniform:LOW:HIGH, randint:LOW:HIGH or "
                        "choice:V1,V2,... (repeatable)")
    p.add_argument("--samples", type=int, help="optuna: points to try (each trains every --seeds seed)")
    p.add_argument("--metric", default="eval/mean_return",
                   help="optuna: the logged scalar whose final value scores a run (default eval/mean_return)")
    p.add_argument("--mode", choices=["max", "min"], default="max", help="optuna: maximize (default) or minimize")
    p.add_argument("--search-seed", type=int, default=0, help="optuna: the sampler's seed (default 0)")
    p.add_argument("--concurrent", type=int, default=2,
                   help="optuna: points trained at once, proposed and scored as one batch (default 2)")
    p.add_argument("--address", help="join a Ray cluster (auto, or HOST:PORT of `ray start --head`); "
                                     "default: start Ray on this machine")
    p.add_argument("--cpus", type=int, help="CPUs Ray may use when started here (default: all)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial (default 1)")
    p.add_argument("--max-failures", type=int, default=3, help="retries of a trial whose worker died (default 3)")
    p.add_argument("--threshold", type=float, help="report the steps each run took to reach this eval return")
    p.add_argument("--out", help="sweep directory (default runs/sweep-<config>-<timestamp>)")
    return p


def parse_search(args: argparse.Namespace) -> Search | None:
    """The --search optuna arguments, checked (None for a grid sweep)."""
    optuna_only = [flag for flag, given in (("--space", args.space), ("--samples", args.samples is not None))
                   if given]
    if args.search == "grid":
        if optuna_only:
            raise ConfigError(f"{optuna_only[0]} is for --search optuna; add it, or use --grid for a grid")
        return None
    if args.grid:
        raise ConfigError("--grid is for --search grid; with --search optuna give ranges with --space")
    if not args.space or args.samples is None or args.samples < 1:
        raise ConfigError("--search optuna needs --samples N (>= 1) and at least one --space KEY=KIND:ARGS")
    if args.concurrent < 1:
        raise ConfigError("--concurrent must be >= 1")
    if not re.fullmatch(r"(eval|charts|loss|train|search)/\w+", args.metric):
        raise ConfigError(f"--metric {args.metric!r}: expected a logged scalar such as eval/mean_return or "
                          "charts/episodic_return")
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise UserError("optuna is not installed; install the extra: pip install -e \".[distributed]\"")
    return Search(parse_space(args.space), args.samples, args.metric, args.mode, args.search_seed, args.concurrent)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cpus_per_trial <= 0 or args.max_failures < 0 or (args.cpus is not None and args.cpus < 1):
        raise ConfigError("--cpus-per-trial must be > 0, --cpus >= 1 and --max-failures >= 0")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UserError("Ray is not installed; install the extra: pip install -e \".[distributed]\"")
    search = parse_search(args)
    trials = expand(args.config, parse_seeds(args.seeds), parse_grid(args.grid), args.set)
    check_trials(trials)
    if search is not None:
        for corner in space_corners(search.space):  # each end of every range is a config this run accepts
            check_trials([Trial(args.config, trials[0].seed, tuple(args.set) + corner)])
    out = Path(args.out or f"runs/sweep-{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "summary.json").exists():
        raise ConfigError(f"{out} already holds a finished sweep (summary.json); choose another --out")
    if search is None:
        print(f"{len(trials)} trials ({len(trials) // len(parse_seeds(args.seeds))} configurations x "
              f"{len(parse_seeds(args.seeds))} seeds) -> {out}", flush=True)
    else:
        print(f"optuna search: {search.samples} points x {len(trials)} seeds, {search.mode} {search.metric} "
              f"(search seed {search.seed}, {search.concurrent} at a time) -> {out}", flush=True)
    results, timing = sweep(trials, out, args.address, args.cpus, args.cpus_per_trial, args.max_failures, search)
    rows = summarize(results, args.threshold)
    print(format_table(rows))
    searched = timing.pop("search", None)
    if searched is not None:
        for entry in searched["samples"]:
            print(f"sample {entry['sample']}: {entry['params']} -> "
                  f"{entry['value'] if entry['error'] is None else 'failed: ' + entry['error']}")
        if searched["best"] is not None:
            print(f"best: {searched['best']['params']} -> {search.metric} {searched['best']['value']:.2f}")
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"trial {r['trial']} failed: {r['error']}")
    print(f"sweep wall {timing['wall_seconds']:.1f} s (Ray start {timing['ray_start_seconds']:.1f} s); "
          f"trials trained {timing['trial_seconds_total']:.1f} s in all")
    summary = {"configurations": rows, "trials": results, "timing": timing, "search": searched,
               "command": ["python", "-m", "rlscratch.sweep", *(argv if argv is not None else sys.argv[1:])]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

