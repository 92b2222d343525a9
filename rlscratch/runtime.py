"""Process-wide runtime tuning for numpy training loops: BLAS threads and the memory allocator.

Nothing here changes a result, only how fast it comes; `python -m rlscratch.train` calls both at start-up.

BLAS threads. The networks here are small: a second BLAS thread gains little on their matrix products
and loses badly whenever the environments or other jobs want the cores, so ``pin_blas_threads()``
limits numpy's BLAS to one thread (``RLSCRATCH_BLAS_THREADS`` to change it).

Malloc. numpy gets every array from C's ``malloc``. glibc's malloc serves large requests (above a threshold
that starts at 128 KiB) with fresh pages from the kernel and hands them back on ``free``, so a layer
that makes a few megabyte-sized temporaries per step (a convolution's im2col matrix, a ReLU's output
on a feature map) pays one page fault per 4 KiB of them, every step. On the 2-core development VM
that was ~3000 faults and half the time of a training step of the small conv net in
``python -m rlscratch.bench nn`` (case e). PyTorch's CPU allocator has the same problem; its usual
cure is to preload jemalloc or tcmalloc.

``keep_freed_memory()`` asks glibc to serve requests up to 32 MiB from its heap and to keep up to
256 MiB of freed heap for reuse, so each step's temporaries recycle the previous step's pages. The
cost: the process does not give freed memory back to the system (up to that bound).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from rlscratch.errors import ConfigError

BLAS_THREADS_VARIABLE = "RLSCRATCH_BLAS_THREADS"


def pin_blas_threads(threads: int | None = None) -> int:
    """Limit the BLAS libraries numpy has loaded to ``threads`` threads (default: the environment
    variable RLSCRATCH_BLAS_THREADS, else 1) and return that number. Call it after numpy is imported:
    threadpoolctl limits the libraries already loaded."""
    from threadpoolctl import threadpool_limits

    if threads is None:
        value = os.environ.get(BLAS_THREADS_VARIABLE, "1")
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{BLAS_THREADS_VARIABLE}={value!r}: expected a positive whole number of threads, "
                             f"e.g. {BLAS_THREADS_VARIABLE}=2")
        threads = int(value)
    threadpool_limits(threads)
    return threads

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Tune glibc's malloc as described above (32 MiB is the largest mmap threshold glibc accepts).
    Returns True if applied; False, changing nothing, on other C libraries and systems."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; musl's is a stub that returns 0.
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
