"""Benchmarks: ``python -m rlscratch.bench <name> [options]``.

Each benchmark is a module of this package with a ``main(argv) -> int`` function, registered by
name in ``BENCHMARKS`` (rlscratch/bench/__main__.py) so adding one is a single line there.
"""
