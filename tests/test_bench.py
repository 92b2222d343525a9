"""The benchmark runs end to end (tiny timings), and its subprocess protocol works."""

import json
import subprocess
import sys

import numpy as np

from rlscratch.bench import nn as bench


def test_bench_nn_json_runs():
    out = subprocess.run([sys.executable, "-m", "rlscratch.bench", "nn", "--no-torch", "--cases", "cd",
                          "--rounds", "2", "--block", "0.001", "--warmup", "0.01", "--json"],
                         capture_output=True, text=True, check=True).stdout
    results = json.loads(out)["results"]
    assert [r["case"] for r in results] == ["c", "d"]
    assert all(r["median_ms"]["rlscratch"] > 0 for r in results)


def test_every_case_builds_and_steps():
    for case in bench.CASES:
        if case.needs_conv and not bench.conv_available():
            continue
        bench.rlscratch_step(case)()


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
