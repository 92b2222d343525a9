"""The Ray side of ``python -m rlscratch.sweep --search optuna`` (its arguments are parsed and checked
in rlscratch.sweep, before Ray starts).

Ray Tune's OptunaSearch (TPE, seeded by --search-seed) proposes --samples points of the --space.
Each point is one Tune trial that trains every --seeds seed, one after the other, as ordinary runs
(rlscratch.sweep.run_trial), and scores the mean of --metric's final value over them.

Reproducible: the proposals come in batches of --concurrent (Tune's ConcurrencyLimiter with
``batch=True``), and the sampler is told a batch's scores only when all of them are in. So what TPE
knows before each proposal never depends on which trial finished first, and the same command proposes
the same points, in the same order, whatever the machines' speeds. Each proposal is numbered (its
``sample``) as it is made; the number names its run directories, and a retried trial keeps it, so the
retry resumes them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from rlscratch.ray_cluster import start_ray
from rlscratch.sweep import PACKAGE_PARENT, Search, Trial, _absolute_if_file, run_trial, tune_domain


class NumberedOptunaSearch(OptunaSearch):
    """OptunaSearch that numbers its proposals 0, 1, 2, ... in the order it makes them (the number
    travels in the trial's config as ``sample``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.proposed = 0

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config = dict(config, sample=self.proposed)
            self.proposed += 1
        return config


def run_search_trial(tune_config: dict) -> None:
    """The Tune trainable of a search: one sampled point, trained with every seed one after the other;
    reports the mean of the metric's final values."""
    base, params, sample = tune_config["spec"], tune_config["params"], tune_config["sample"]
    point = [f"{key}={assignment(params[key])}" for key in base["keys"]]
    values, names = [], []
    for seed in base["seeds"]:
        name = f"{base['stem']}-sample{sample:03d}-seed{seed}"
        spec = dict(base, name=name, seed=seed, overrides=base["overrides"] + point,
                    run_dir=str(Path(base["out"]) / "runs" / name),
                    record=str(Path(base["out"]) / "trials" / f"{name}.json"))
        values.append(final_value(run_trial({"spec": spec}), base["metric"]))
        names.append(name)
    tune.report({"objective": float(np.mean(values)), "runs": names, "values": values})


def assignment(value: object) -> str:
    """A sampled value as --set writes it (floats in full: repr round-trips)."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def final_value(result: dict, metric: str) -> float:
    """A finished run's last logged value of ``metric`` (eval/mean_return: its final evaluation)."""
    from rlscratch.events import read_scalars

    scalars = read_scalars(Path(result["run_dir"]))
    if metric not in scalars:  # (a search reads the runs' TensorBoard events: log.tensorboard must stay on)
        raise RuntimeError(f"--metric {metric} was not logged by {result['run_dir']} (it logged: "
                           f"{', '.join(sorted(scalars)) or 'nothing; is log.tensorboard false?'})")
    return float(scalars[metric][1][-1])


def search_sweep(trials: list[Trial], out: Path, search: Search, address: str | None = None, cpus: int | None = None,
                 cpus_per_trial: float = 1.0, max_failures: int = 3) -> tuple[list[dict], dict]:
    """Run the search; returns (one result per run, with its sample's number; timings, with every
    sample's point and score in proposal order and the best under ``timing["search"]``).
    ``trials``: the base config's seeds (their overrides are every trial's)."""
    import ray

    out = out.resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "trials").mkdir(exist_ok=True)
    begin = time.perf_counter()
    ray_start = start_ray(address, cpus)
    first = trials[0]
    base = {"config": _absolute_if_file(first.config), "stem": Path(first.config).stem,
            "seeds": [t.seed for t in trials], "overrides": list(first.overrides), "keys": list(search.space),
            "metric": search.metric, "out": str(out), "pythonpath": str(PACKAGE_PARENT), "cwd": os.getcwd()}
    searcher = ConcurrencyLimiter(NumberedOptunaSearch(seed=search.seed), max_concurrent=search.concurrent,
                                  batch=True)
    try:
        tuner = tune.Tuner(
            tune.with_resources(run_search_trial, {"cpu": cpus_per_trial}),
            param_space={"spec": base, "params": {key: tune_domain(*spec) for key, spec in search.space.items()}},
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=search.samples, metric="objective",
                                        mode=search.mode, reuse_actors=True),
            run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=0, callbacks=[JsonLoggerCallback()],
                                      failure_config=tune.FailureConfig(max_failures=max_failures)))
        grid = tuner.fit()
        samples = []
        for r in grid:
            metrics = r.metrics or {}
            samples.append({"sample": r.config["sample"], "params": dict(r.config["params"]),
                            "runs": metrics.get("runs", []), "value": metrics.get("objective") if not r.error else None,
                            "error": str(r.error).strip().splitlines()[-1] if r.error else None})
    finally:
        ray.shutdown()
    wall = time.perf_counter() - begin
    samples.sort(key=lambda entry: entry["sample"])
    results = []
    for entry in samples:
        for name in entry["runs"]:
            record = out / "trials" / f"{name}.json"
            result = json.loads(record.read_text())
            result["attempts"] = len(record.with_suffix(".attempts").read_text().splitlines())
            result["sample"] = entry["sample"]
            results.append(result)
        if entry["error"] is not None:
            results.append({"trial": f"sample{entry['sample']}", "seed": None, "overrides": [],
                            "error": entry["error"]})
    scored = [e for e in samples if e["value"] is not None]
    best = (max if search.mode == "max" else min)(scored, key=lambda e: e["value"]) if scored else None
    timing = {"wall_seconds": wall, "ray_start_seconds": ray_start, "trials": len(results),
              "trial_seconds_total": sum(r.get("attempt_seconds", 0.0) for r in results),
              "search": {"metric": search.metric, "mode": search.mode, "seed": search.seed, "samples": samples,
                         "best": best}}
    return results, timing
