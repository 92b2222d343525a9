"""train.distributed: MuZero's self-play actors and reanalyze workers on a real two-node Ray cluster on
loopback (rlscratch.ray_cluster.local_cluster), the learner in this process. Tiny runs: what is checked is
the machinery -- the replay-ratio throttle, the weight-sync interval, reanalysis by the workers, and
an interrupted run resuming to exactly the parameters of an uninterrupted one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rlscratch.checkpoint import CheckpointManager, read_checkpoint
from rlscratch.cli import run_cli
from rlscratch.config import load_config
from rlscratch.trainer import train

TOTAL, WARMUP, RATIO, SYNC, CHUNK, ENVS, ACTORS = 192, 48, 0.5, 3, 4, 2, 2
ROUND = CHUNK * ENVS * ACTORS  # env steps per round: 16


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on 127.0.0.1, two (logical) CPUs each: two self-play actors and a reanalyze worker."""
    from rlscratch import ray_cluster

    # This process is the driver: it needs the cluster's auth mode, token and loopback switch. Ray is
    # imported first, with no auth mode set, as when another test module of this process used it
    # before: Ray keeps what it read then, and start_ray must make it read the cluster's settings
    # (on CI this order once made every driver here knock with no token).
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.pop("RAY_AUTH_MODE", None)
    try:
        pytest.importorskip("ray")
        os.environ.update(RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        with ray_cluster.local_cluster(nodes=2, cpus_per_node=2) as (address, env):
            os.environ["RAY_AUTH_TOKEN"] = env["RAY_AUTH_TOKEN"]
            yield address
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tiny(address: str, root: Path) -> list[str]:
    dist = (f"{{self_play_workers: {ACTORS}, reanalyze_workers: 1, address: '{address}', "
            f"weight_sync_interval: {SYNC}, replay_ratio: {RATIO}, chunk_steps: {CHUNK}}}")
    return [f"train.distributed={dist}", f"train.total_steps={TOTAL}", "train.eval_every=0", "train.eval_episodes=2",
            f"env.num_envs={ENVS}", "env.eval_num_envs=2", "agent.num_simulations=4", "agent.batch_size=8",
            "agent.state_dim=8", "model.hidden=[16]", f"agent.warmup_steps={WARMUP}", "agent.reanalyze_fraction=0.5",
            "agent.value_target=search", "log.tensorboard=false", "log.progress=false", f"log.root={root}"]


def run(address: str, run_dir: Path, resume: bool = False, stop_at: int | None = None) -> dict:
    config, _ = load_config("muzero_cartpole", tiny(address, run_dir.parent))
    return train(config, run_dir, resume=resume, stop_at=stop_at)


def final_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    arrays, meta = read_checkpoint(CheckpointManager(run_dir / "checkpoints").latest())
    assert meta["env_steps"] == TOTAL and meta["finished"]
    return arrays


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dist") / "calm"
    summary = run(cluster, run_dir)
    rounds = [json.loads(line) for line in (run_dir / "distributed.jsonl").read_text().splitlines()]
    return run_dir, summary, rounds


def test_a_run_on_the_cluster_learns_at_the_replay_ratio(uninterrupted):
    run_dir, summary, rounds = uninterrupted
    assert summary["env_steps"] == TOTAL and not summary["interrupted"]
    assert [r["env_steps"] for r in rounds] == list(range(0, TOTAL, ROUND))
    # Updates owed: RATIO per env step after warm-up = 0.5 * (192 - 48) = 72. Every one is taken but the
    # last round's (the learner takes those while the next round would play): 72 - 0.5 * 16 = 64.
    assert summary["updates"] == RATIO * (TOTAL - WARMUP) - RATIO * ROUND == 64
    arrays = final_arrays(run_dir)
    assert float(arrays["agent/counter/train_credit"]) == RATIO * ROUND
    for r in rounds:
        # the throttle: a round is dispatched only when the learner owes no more than the last round's
        # updates, so what is acted (this round included) stays within warm-up + updates / R + 2 rounds
        assert r["owed"] <= RATIO * ROUND
        assert r["acted"] <= WARMUP + r["updates"] / RATIO + 2 * ROUND
    assert any(r["updates_after"] > r["updates"] for r in rounds)  # the learner trained while actors played


def test_weights_reach_the_actors_every_sync_interval(uninterrupted):
    _, _, rounds = uninterrupted
    for r in rounds:
        # the last broadcast: the update count rounded down to a multiple of K, as the learner's own digest
        assert r["version"] == SYNC * (r["updates"] // SYNC)
        assert r["versions"] == [r["version"]] * ACTORS
        assert r["digests"] == [r["broadcast_digest"]] * ACTORS
    versions = sorted({r["version"] for r in rounds})
    assert len(versions) > 3 and all(v % SYNC == 0 for v in versions)
    assert len({r["broadcast_digest"] for r in rounds}) == len(versions)  # a new version is new weights


def test_reanalyze_workers_refresh_rows(uninterrupted):
    _, _, rounds = uninterrupted
    assert sum(r["reanalyzed"] for r in rounds) > 0
    assert all(r["reanalyzed"] == 0 for r in rounds if r["env_steps"] < WARMUP)  # nothing owed, nothing chosen


def test_an_interrupted_run_resumes_to_the_same_parameters(cluster, uninterrupted, tmp_path):
    calm = final_arrays(uninterrupted[0])
    run_dir = tmp_path / "interrupted"
    stopped = run(cluster, run_dir, stop_at=5 * ROUND)  # after warm-up: updates, broadcasts, reanalysis done
    assert stopped["interrupted"] and stopped["env_steps"] == 5 * ROUND
    resumed = run(cluster, run_dir, resume=True)
    assert resumed["env_steps"] == TOTAL
    again = final_arrays(run_dir)
    assert sorted(again) == sorted(calm) and any(k.startswith("actor1/") for k in calm)
    for key in calm:
        np.testing.assert_array_equal(again[key], calm[key], err_msg=key)


@pytest.mark.parametrize("config, distributed, says", [
    ("dqn_cartpole", "{self_play_workers: 2}", "MuZero agents"),
    ("muzero_cartpole", "{self_play_worker: 2}", "did you mean 'self_play_workers'"),
    ("muzero_cartpole", "{self_play_workers: 0}", "train.distributed.self_play_workers"),
    ("muzero_cartpole", "{reanalyze_workers: 1}", "agent.reanalyze_fraction"),  # the config reanalyses nothing
    ("muzero_cartpole", "[2, 1]", "train.distributed"),
])
def test_bad_distributed_configs_are_one_line_and_exit_2(config, distributed, says, tmp_path, capsys):
    from rlscratch.train import main

    status = run_cli(main, ["--config", config, "--set", f"train.distributed={distributed}",
                            "--run-dir", str(tmp_path / "run"), "--set", "log.progress=false"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not (tmp_path / "run" / "config.yaml").exists()
