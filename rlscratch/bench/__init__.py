"""Benchmarks: ``python -m rlscratch.bench <name> [options]``, a thin entry point.

The benchmarks themselves live in the checkout's benchmarks/ folder (``benchmarks/bench_<name>.py``,
each with a ``main(argv) -> int``), registered by name in ``BENCHMARKS`` (rlscratch/bench/__main__.py)
so adding one is a single line there.
"""
