"""keep_freed_memory: big numpy temporaries recycle pages instead of faulting in fresh ones."""

import resource
import sys

import numpy as np
import pytest

from rlscratch.nn.memory import keep_freed_memory


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
