"""The benchmark runs end to end (tiny timings), and its subprocess protocol works."""

import json
import subprocess
import sys

import numpy as np

from rlscratch import nn
from rlscratch.bench import nn as bench


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
