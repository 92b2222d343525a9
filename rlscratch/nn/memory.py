"""The process's memory allocator, tuned for numpy training loops.

numpy gets every array from C's ``malloc``. glibc's malloc serves large requests (above a threshold
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
import sys

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
