"""rlscratch.runtime: big numpy temporaries recycle pages instead of faulting in fresh ones; BLAS is pinned to
the threads asked for."""

import os
import resource
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from rlscratch.errors import ConfigError
from rlscratch.runtime import keep_freed_memory, pin_blas_threads


def faults_while_churning(n_bytes: int, reps: int = 20) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        a = np.ones(n_bytes // 4, dtype=np.float32)  # written, so every page is touched
        b = a * 2.0
        del a, b
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / reps


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_temporaries_stop_page_faulting():
    if not keep_freed_memory():
        pytest.skip("not glibc")
    faults_while_churning(3 << 20)  # the first round may still grow the heap
    assert faults_while_churning(3 << 20) < 50  # ~1500 faults per round when malloc returns the pages


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_blas_threads_follow_the_environment_variable(monkeypatch):
    if not blas_threads():
        pytest.skip("numpy's BLAS is not visible to threadpoolctl")
    with threadpool_limits(None):  # restores the limits on exit
        monkeypatch.delenv("RLSCRATCH_BLAS_THREADS", raising=False)
        assert pin_blas_threads() == 1 and blas_threads() == {1}
        monkeypatch.setenv("RLSCRATCH_BLAS_THREADS", "2")
        assert pin_blas_threads() == 2 and blas_threads() == {2}
        monkeypatch.setenv("RLSCRATCH_BLAS_THREADS", "two")
        with pytest.raises(ConfigError, match="RLSCRATCH_BLAS_THREADS='two': expected a positive whole number"):
            pin_blas_threads()


def test_train_rejects_a_bad_thread_count_in_one_line():
    env = {**os.environ, "RLSCRATCH_BLAS_THREADS": "0"}
    result = subprocess.run([sys.executable, "-m", "rlscratch.train", "--config", "dqn_cartpole"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: RLSCRATCH_BLAS_THREADS='0': expected a positive whole number of threads, e.g. RLSCRATCH_BLAS_THREADS=2"]
