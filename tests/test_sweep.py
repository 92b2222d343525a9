"""python -m rlscratch.sweep: argument parsing and bad input, grouping by resolved config, and -- on a
real two-node Ray cluster on loopback, started and torn down here -- a small sweep, then the same sweep
with one trial's worker process killed mid-run: it is retried from its checkpoint and ends with exactly
the parameters of the undisturbed sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlscratch import ray_cluster, sweep
from rlscratch.cli import run_cli
from rlscratch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


# -- the command line -----------------------------------------------------------------------------
def test_parse_seeds():
    assert sweep.parse_seeds("0-9") == list(range(10))
    assert sweep.parse_seeds("0,3,5-7") == [0, 3, 5, 6, 7]
    for bad in ("3-1", "a", "1,1", "0-", ""):
        with pytest.raises(ConfigError):
            sweep.parse_seeds(bad)


def test_grid_expands_to_every_combination_times_every_seed():
    grid = sweep.parse_grid(["agent.lr=1e-3,5e-4", "agent.gamma=0.9,0.99,0.999"])
    assert grid == [("agent.lr", ["1e-3", "5e-4"]), ("agent.gamma", ["0.9", "0.99", "0.999"])]
    trials = sweep.expand("ppo_cartpole", [0, 1], grid, ["train.total_steps=512"])
    assert len(trials) == 2 * 3 * 2
    assert trials[0].overrides == ("train.total_steps=512", "agent.lr=1e-3", "agent.gamma=0.9")
    assert len({t.folder() for t in trials}) == len(trials)  # every trial its own run directory
    with pytest.raises(ConfigError):
        sweep.parse_grid(["agent.lr"])


OPTUNA = ["--config", "dqn_cartpole", "--search", "optuna", "--samples", "4"]


@pytest.mark.parametrize("argv, says", [
    (["--config", "ppo_cartpole", "--seeds", "5-2"], "--seeds"),
    (["--config", "ppo_cartpole", "--grid", "agent.lrr=1e-3,1e-4"], "lrr"),
    (["--config", "no_such_config"], "no_such_config"),
    (["--config", "ppo_cartpole", "--grid", "agent.lr"], "--grid"),
    (["--config", "ppo_cartpole", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--config", "ppo_cartpole", "--cpus-per-trial", "one"], "--cpus-per-trial"),
    # --search optuna: every bad spec is refused before Ray starts
    (["--config", "dqn_cartpole", "--search", "optuna", "--samples", "2"], "--space"),
    (["--config", "dqn_cartpole", "--space", "agent.gamma=choice:0.9,0.99"], "--search optuna"),
    (OPTUNA + ["--space", "agent.optim.lr=lognormal:1:2"], "loguniform:LOW:HIGH"),
    (OPTUNA + ["--space", "agent.optim.lr"], "--space"),
    (OPTUNA + ["--space", "agent.optim.lr=loguniform:0:1e-2"], "LOW > 0"),
    (OPTUNA + ["--space", "agent.optim.lr=uniform:1e-2:1e-4"], "LOW < HIGH"),
    (OPTUNA + ["--space", "agent.optim.lr=uniform:1e-4:nan"], "finite"),
    (OPTUNA + ["--space", "agent.optim.lr=uniform:1e-4"], "two numbers"),
    (OPTUNA + ["--space", "agent.batch_size=randint:32:6.5e1"], "two integers"),
    (OPTUNA + ["--space", "agent.optim.lrr=uniform:0.1:0.2"], "lrr"),
    (OPTUNA + ["--space", "agent.gamma=uniform:0.9:1.5"], "agent.gamma"),  # its HIGH end is out of range
    (OPTUNA + ["--space", "agent.gamma=choice:0.9,,0.99"], "choice"),
    (OPTUNA + ["--space", "agent.gamma=choice:0.9", "--space", "agent.gamma=choice:0.99"], "twice"),
    (OPTUNA + ["--space", "agent.gamma=choice:0.9,0.99", "--grid", "agent.tau=0.1,0.2"], "--grid"),
    (["--config", "dqn_cartpole", "--search", "optuna", "--samples", "0", "--space", "agent.gamma=choice:0.9"],
     "--samples"),
    (OPTUNA + ["--space", "agent.gamma=choice:0.9", "--metric", "accuracy"], "--metric"),
    (OPTUNA + ["--space", "agent.gamma=choice:0.9", "--mode", "maximize"], "--mode"),
    (OPTUNA + ["--space", "agent.gamma=choice:0.9", "--concurrent", "0"], "--concurrent"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, says, capsys, tmp_path):
    try:
        status = run_cli(sweep.main, argv + ["--out", str(tmp_path / "out")])
    except SystemExit as exit:  # argparse's own usage errors
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and says in err, err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_search_space_parsing_and_the_configs_checked_before_ray():
    space = sweep.parse_space(["agent.optim.lr=loguniform:1e-4:1e-2", "agent.gamma=choice:0.98, 0.99,0.999",
                               "agent.batch_size=randint:32:64", "agent.tau=uniform:-0.5:0.5"])
    assert space == {"agent.optim.lr": ("loguniform", [1e-4, 1e-2]),
                     "agent.gamma": ("choice", ["0.98", "0.99", "0.999"]), "agent.batch_size": ("randint", [32, 64]),
                     "agent.tau": ("uniform", [-0.5, 0.5])}
    # every end of every range, and every choice, is one of the configs checked before Ray starts
    assert sweep.space_corners(space) == [
        ("agent.optim.lr=0.0001", "agent.gamma=0.98", "agent.batch_size=32", "agent.tau=-0.5"),
        ("agent.optim.lr=0.01", "agent.gamma=0.99", "agent.batch_size=64", "agent.tau=0.5"),
        ("agent.optim.lr=0.01", "agent.gamma=0.999", "agent.batch_size=64", "agent.tau=0.5")]
    pytest.importorskip("ray")
    domain = sweep.tune_domain("randint", [32, 64])  # both ends included (Tune's own upper end is not)
    assert (domain.lower, domain.upper) == (32, 65)
    assert sweep.tune_domain("loguniform", [1e-4, 1e-2]).lower == 1e-4


# -- aggregates by resolved config ----------------------------------------------------------------
def fake_run(folder: Path, lr: float, seed: int, final: float, evals: list[list[float]]) -> dict:
    folder.mkdir(parents=True)
    config = {"name": "ppo_cartpole", "seed": seed, "agent": {"name": "ppo", "lr": lr},
              "train": {"total_steps": 1000, "checkpoint_every": 100 * seed}, "log": {"root": str(folder)}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return {"run_dir": str(folder), "seed": seed, "overrides": [], "final_eval": final, "evals": evals,
            "attempt_seconds": 2.0, "attempt_cpu_seconds": 1.0}


def test_runs_group_by_resolved_config_not_by_name(tmp_path):
    # Same name, two learning rates: two configurations. Seed, log folder and checkpointing differ
    # between seeds without making them different configurations.
    results = [fake_run(tmp_path / f"a{seed}", 1e-3, seed, final, [[500, final / 2], [1000, final]])
               for seed, final in enumerate([100.0, 200.0, 300.0, 400.0, 10_000.0])]
    results += [fake_run(tmp_path / f"b{seed}", 5e-4, seed, 50.0, [[1000, 50.0]]) for seed in range(2)]
    results.append({"error": "worker died", "seed": 9, "overrides": []})
    rows = sweep.summarize(results, threshold=150.0, reps=200)
    assert len(rows) == 2
    first = next(r for r in rows if len(r["seeds"]) == 5)
    assert first["config"].startswith("ppo_cartpole#")
    assert first["mean"]["value"] == pytest.approx(2200.0)
    assert first["median"]["value"] == pytest.approx(300.0)
    assert first["iqm"]["value"] == pytest.approx(300.0)  # 5 runs: drop 1 from each end -> mean(200, 300, 400)
    assert first["iqm"]["ci95"][0] <= 300.0 <= first["iqm"]["ci95"][1]
    # steps to 150: 100 -> never (eval 50, 100); 200 -> 1000 (100 at 500); 300.. -> 500
    assert first["steps_to_threshold"] == [None, 1000, 500, 500, 500]
    assert first["reached"] == 4 and first["median_steps_to_threshold"] == 500.0
    second = next(r for r in rows if len(r["seeds"]) == 2)
    assert second["key"] != first["key"] and second["reached"] == 0


# -- a real two-node cluster on loopback ----------------------------------------------------------
SMALL = ["--config", "ppo_cartpole", "--seeds", "0-1", "--set", "train.total_steps=8192",
         "--set", "train.eval_every=4096", "--set", "train.eval_episodes=5", "--set", "train.checkpoint_every=1024",
         "--threshold", "50", "--max-failures", "2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes with one CPU each on 127.0.0.1 (ray_cluster.local_cluster stops them, whatever happens).
    Their home has no ~/.ray/auth_token, as on a fresh machine; once they are up, another Ray writes
    a token of its own there -- the race two clusters starting at once ran on CI. Drivers must still
    join with the cluster's own token."""
    pytest.importorskip("ray")
    home = tmp_path_factory.mktemp("home")
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        with ray_cluster.local_cluster(nodes=2, cpus_per_node=1) as (address, env):
            (home / ".ray").mkdir(exist_ok=True)
            (home / ".ray" / "auth_token").write_text("0" * 64)
            yield address, dict(env, OPENBLAS_NUM_THREADS="1")
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved


def run_sweep(address: str, env: dict, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlscratch.sweep", *SMALL, "--address", address, "--out", str(out)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def final_arrays(run_dir: str) -> dict[str, np.ndarray]:
    from rlscratch.checkpoint import CheckpointManager, read_checkpoint

    arrays, meta = read_checkpoint(CheckpointManager(Path(run_dir) / "checkpoints").latest())
    assert meta["env_steps"] == 8192
    return arrays


@pytest.fixture(scope="module")
def undisturbed(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "undisturbed"
    process = run_sweep(*cluster, out)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return json.loads((out / "summary.json").read_text()), output


def test_sweep_on_a_two_node_cluster(undisturbed):
    summary, output = undisturbed
    trials = summary["trials"]
    assert [t["seed"] for t in trials] == [0, 1] and all("error" not in t for t in trials)
    assert len({t["node"] for t in trials}) == 2  # one CPU per node, one per trial: both nodes trained
    for trial in trials:
        run_dir = Path(trial["run_dir"])
        assert (run_dir / "config.yaml").is_file() and (run_dir / "log.txt").is_file()  # an ordinary run dir
        assert trial["env_steps"] == 8192 and [s for s, _ in trial["evals"]] == [4096, 8192]
        assert trial["attempts"] == 1 and not trial["resumed"]
    (row,) = summary["configurations"]
    assert row["seeds"] == [0, 1] and "ppo_cartpole#" in output


def test_a_killed_worker_resumes_and_ends_with_the_same_parameters(cluster, undisturbed, tmp_path):
    out = tmp_path / "killed"
    process = run_sweep(*cluster, out)
    try:
        name = Path(undisturbed[0]["trials"][0]["run_dir"]).name  # the same trial names in both sweeps
        attempts = out / "trials" / f"{name}.attempts"
        checkpoints = out / "runs" / name / "checkpoints"
        deadline = time.monotonic() + 300
        while not (attempts.is_file() and list(checkpoints.glob("step_*.npz"))):
            assert process.poll() is None and time.monotonic() < deadline, "the trial never checkpointed"
            time.sleep(0.1)
        first = json.loads(attempts.read_text().splitlines()[0])
        assert not (checkpoints / "step_0000008192.npz").exists()  # still mid-run
        os.kill(first["worker_pid"], signal.SIGKILL)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(line) for line in attempts.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["resumed"] and not lines[0]["resumed"]
    for killed, calm in zip(summary["trials"], undisturbed[0]["trials"]):
        assert killed["final_eval"] == calm["final_eval"] and killed["evals"] == calm["evals"]
        a, b = final_arrays(killed["run_dir"]), final_arrays(calm["run_dir"])
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


SEARCH = ["--config", "dqn_cartpole", "--search", "optuna", "--samples", "3", "--concurrent", "2", "--seeds", "0",
          "--space", "agent.optim.lr=loguniform:1e-4:1e-2", "--space", "agent.gamma=choice:0.98,0.99",
          "--set", "train.total_steps=300", "--set", "agent.learning_starts=100", "--set", "train.eval_episodes=2",
          "--max-failures", "0", "--search-seed", "7"]


def test_an_optuna_search_on_the_cluster_is_reproducible(cluster, tmp_path):
    summaries = []
    for name in ("first", "second"):
        process = subprocess.run([sys.executable, "-m", "rlscratch.sweep", *SEARCH, "--address", cluster[0],
                                  "--out", str(tmp_path / name)], env=cluster[1], cwd=ROOT, capture_output=True,
                                 text=True, timeout=600)
        assert process.returncode == 0, process.stdout + process.stderr
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
    first, second = (s["search"] for s in summaries)
    assert [e["sample"] for e in first["samples"]] == [0, 1, 2]
    # the same seed proposes the same points in the same order, and the runs score them the same
    assert [(e["params"], e["value"]) for e in first["samples"]] == \
        [(e["params"], e["value"]) for e in second["samples"]]
    for entry in first["samples"]:
        assert 1e-4 <= entry["params"]["agent.optim.lr"] <= 1e-2 and entry["params"]["agent.gamma"] in ("0.98", "0.99")
        (run,) = entry["runs"]
        config = yaml.safe_load((tmp_path / "first" / "runs" / run / "config.yaml").read_text())
        assert config["agent"]["optim"]["lr"] == entry["params"]["agent.optim.lr"]  # trained as proposed
        assert config["agent"]["gamma"] == float(entry["params"]["agent.gamma"])
    assert all(np.isfinite(e["value"]) for e in first["samples"])
    assert first["best"]["value"] == max(e["value"] for e in first["samples"])
    assert len(summaries[0]["trials"]) == 3 and all("error" not in t for t in summaries[0]["trials"])


def write_events(folder: Path, points: list[tuple[int, float]]) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step, value in points:
        writer.add_scalar("eval/mean_return", value, step)
    writer.close()


def test_plot_draws_iqm_per_configuration_with_a_band(tmp_path):
    from rlscratch import plot

    # Configuration A (lr 1e-3), 4 seeds; B (lr 5e-4, the same name), 4 seeds. IQM of 4 = mean of the middle 2.
    finals_a = [10.0, 20.0, 30.0, 1000.0]
    for seed, final in enumerate(finals_a):
        fake_run(tmp_path / "runs" / f"a{seed}", 1e-3, seed, final, [])
        write_events(tmp_path / "runs" / f"a{seed}", [(100, seed), (200, final)])
    for seed in range(4):
        fake_run(tmp_path / "runs" / f"b{seed}", 5e-4, seed, 5.0, [])
        write_events(tmp_path / "runs" / f"b{seed}", [(100, 5.0), (200, 5.0)])
    curves = plot.aggregate_curves(plot.expand_sweeps([tmp_path]), "eval/mean_return", "iqm")
    assert len(curves) == 2  # grouped by resolved config: one name, two configurations
    (a,) = [c for c in curves.values() if c[1][-1] != 5.0]
    steps, value, low, high, runs = a
    assert runs == 4 and steps.tolist() == [100, 200]
    np.testing.assert_allclose(value, [1.5, 25.0])  # middle two of (0, 1, 2, 3) and of (10, 20, 30, 1000)
    assert np.all(low <= value) and np.all(value <= high) and high[1] > low[1]
    out = tmp_path / "iqm.png"
    assert run_cli(plot.main, [str(tmp_path), "--aggregate", "iqm", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
