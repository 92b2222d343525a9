"""The benchmark runs end to end (tiny timings), and its subprocess protocol works."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlscratch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_nn as bench  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def test_bench_nn_json_runs():
    out = subprocess.run([sys.executable, "-m", "rlscratch.bench", "nn", "--no-torch", "--cases", "cd",
                          "--rounds", "2", "--block", "0.001", "--warmup", "0.01", "--json"],
                         capture_output=True, text=True, check=True).stdout
    results = json.loads(out)["results"]
    assert [r["case"] for r in results] == ["c", "d"]
    assert all(r["median_ms"]["rlscratch"] > 0 for r in results)


def case_loss(net, case: bench.Case, batch: dict, targets: np.ndarray | None) -> float:
    """The loss each case's step descends, on its fixed batch (targets: the Q-learning targets, fixed)."""
    out = net.infer(batch["x"])
    if case.task == "classify":
        return float(nn.softmax_cross_entropy(out, batch["labels"])[0])
    return float(nn.huber(out[np.arange(case.batch), batch["actions"]], targets)[0])


def test_every_case_builds_and_steps(monkeypatch):
    """Each case's timed step is a real training step: three of them lower its loss on its batch."""
    built = []
    build = bench.build_rlscratch
    monkeypatch.setattr(bench, "build_rlscratch", lambda case, rng: built.append(build(case, rng)) or built[-1])
    for case in bench.CASES:
        if case.needs_conv and not bench.conv_available():
            continue
        step = bench.rlscratch_step(case)
        net, batch = built[-1], bench.make_batch(case)
        targets = batch.get("targets")
        if case.task == "dqn":  # r + gamma (1 - done) max_a' Q_target(s', a'), the target net frozen at the start
            targets = batch["rewards"] + bench.GAMMA * (1 - batch["dones"]) * net.infer(batch["next_x"]).max(axis=1)
        before = case_loss(net, case, batch, targets)
        for _ in range(3):
            step()
        assert case_loss(net, case, batch, targets) < before, case.key


def test_remote_side_protocol():
    side = bench.RemoteSide(sys.executable, "rlscratch")
    try:
        assert "numpy" in side.info()
        assert side.setup("c", warmup=0.01) > 0
        times = side.time("c", reps=3)
        assert len(times) == 3 and np.all(np.array(times) > 0)
        side.release("c")
    finally:
        side.close()


WORKER_SCRIPT = """
import os, sys
from worker import serve

def fail(x):
    raise ValueError(f"no {x}")

if sys.argv[1:] == ["--die"]:
    sys.exit(7)
sys.exit(serve({"pid": os.getpid(), "argv": sys.argv[1:]}, {"add": lambda a, b: a + b, "fail": fail}))
"""


def test_worker_protocol(tmp_path):
    """benchmarks/worker.py, both ends: the first line is the worker's info, each call one reply, a
    handler's exception comes back as a WorkerError naming it (the worker lives on), and closing stdin
    ends the worker with status 0."""
    from worker import Worker, WorkerError

    script = tmp_path / "adder.py"
    script.write_text(WORKER_SCRIPT)
    side = Worker(sys.executable, [str(script), "--flag"], name="adder worker")
    try:
        assert side.info["argv"] == ["--flag"] and side.info["pid"] == side.process.pid
        assert side.call("add", a=2, b=3) == 5
        assert side.call("add", a=[1], b=[2, 3]) == [1, 2, 3]
        with pytest.raises(WorkerError, match=r"adder worker .*: ValueError: no luck"):
            side.call("fail", x="luck")
        assert side.call("add", a=1, b=1) == 2
    finally:
        side.close()
    assert side.process.returncode == 0


def test_worker_that_dies_is_reported(tmp_path):
    from worker import Worker, WorkerError

    script = tmp_path / "adder.py"
    script.write_text(WORKER_SCRIPT)
    with pytest.raises(WorkerError, match=r"the adder worker .* exited with code 7"):
        Worker(sys.executable, [str(script), "--die"], name="adder worker")


def test_target_result_of_a_bandit_run(tmp_path):
    """What the target benchmarks read from a finished bandit run (rlscratch.sweep.collect, then
    seed_runs.as_result): the cumulative regret the run ended with, and its logged curve."""
    from conftest import write_config
    from seed_runs import as_result
    from threadpoolctl import threadpool_limits

    from rlscratch.config import load_config
    from rlscratch.sweep import collect
    from rlscratch.trainer import train

    data = {"env": {"id": "rlscratch/MNISTBandit-v0", "num_envs": 2, "kwargs": {"split": "train"},
                    "eval_kwargs": {"split": "test", "order": "sequential"}},
            "agent": {"name": "epsilon_greedy_bandit", "batch_size": 16, "replay_size": 500},
            "model": {"hidden": [16]}, "log": {"tensorboard": True},
            "train": {"total_steps": 400, "eval_every": 0, "eval_episodes": 20, "checkpoint_every": 200,
                      "log_every": 100}}
    config, _ = load_config(str(write_config(tmp_path, data, "bandit.yaml")))
    with threadpool_limits(1):
        summary = train(config, tmp_path / "run")
    trial = dict(collect(tmp_path / "run"), config="bandit", seed=0, attempt_cpu_seconds=1.0, attempts=1)
    result = as_result(trial)
    assert 0 < result["cumulative_regret"] == summary["cumulative_regret"] <= 400
    assert [step for step, _ in result["regret_curve"]] == [100, 200, 300, 400]
    assert result["regret_curve"][-1][1] == result["cumulative_regret"]
