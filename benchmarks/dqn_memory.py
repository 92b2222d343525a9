"""DQN's memory: the replay buffer's preallocated bytes, and resident memory once it is full.

    python benchmarks/dqn_memory.py                    # both parts below
    python benchmarks/dqn_memory.py --steps 40000 --buffer 10000

1. A 1,000,000-transition CartPole buffer (uniform and prioritized, each in a fresh process): its
   preallocated bytes, then the process's resident set size (RSS) as it is filled with
   CartPole-shaped transitions (1,000 parallel "envs" per insertion) and overwritten once more --
   RSS must rise by about the buffer's bytes while filling (the pages get written) and then stay
   flat.
2. A real training run (configs/dqn_cartpole.yaml, a smaller buffer so that it fills early): RSS
   sampled every few thousand env steps; after the buffer is full it should not grow.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MB = 1e6


def rss() -> int:
    """Resident set size of this process, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def buffer_report(kind: str, capacity: int) -> str:
    """Build, fill and overwrite one buffer (run in a fresh process, so that memory freed by an
    earlier measurement cannot be reused by this one); returns the report."""
    from rlscratch.buffers import PrioritizedReplayBuffer, ReplayBuffer
    from rlscratch.runtime import keep_freed_memory

    keep_freed_memory()  # the allocator settings python -m rlscratch.train runs with
    cls = PrioritizedReplayBuffer if kind == "prioritized" else ReplayBuffer
    n_envs = min(1000, capacity)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n_envs, 4)).astype(np.float32)
    step = (obs, rng.integers(0, 2, n_envs).astype(np.uint8), np.ones(n_envs), obs,
            rng.random(n_envs) < 0.01, np.zeros(n_envs, bool))
    before = rss()
    buffer = cls(capacity, obs_shape=(4,), obs_dtype=np.float32, action_dtype=np.uint8, num_envs=n_envs, n_step=1)
    built = rss()
    points = []
    for i in range(2 * capacity // n_envs):
        buffer.add(*step)
        if (i + 1) % max(1, capacity // n_envs // 4) == 0:
            buffer.sample(256, rng)
            points.append((len(buffer), buffer.pos, rss()))
    lines = [f"{cls.__name__}({capacity:,}), CartPole transitions: {buffer.nbytes / MB:.1f} MB preallocated "
             f"({buffer.nbytes / capacity:.1f} bytes per transition); RSS {before / MB:.0f} MB before, "
             f"{built / MB:.0f} MB after construction (pages not yet written are not resident)"]
    full_rss = points[len(points) // 2 - 1][2]
    for k, (size, pos, value) in enumerate(points):
        label = "filling" if k < len(points) // 2 else "overwriting"
        lines.append(f"    {label:<12} size {size:>9,}  next slot {pos:>9,}  RSS {value / MB:7.1f} MB")
    lines.append(f"    RSS growth while filling: {(full_rss - before) / MB:+.1f} MB; "
                 f"after the buffer filled: {(points[-1][2] - full_rss) / MB:+.1f} MB\n")
    return "\n".join(lines)


def buffer_part(capacity: int) -> None:
    for kind in ("uniform", "prioritized"):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            print(pool.submit(buffer_report, kind, capacity).result())


def training_part(steps: int, buffer_size: int) -> None:
    from rlscratch.agents.dqn import DQN

    import rlscratch.trainer as trainer
    from rlscratch.config import load_config

    samples: list[tuple[int, int, int]] = []
    observe = DQN.observe

    def observe_and_measure(self, step):
        metrics = observe(self, step)
        if self.env_steps % 5000 == 0:
            samples.append((self.env_steps, len(self.buffer), rss()))
        return metrics

    DQN.observe = observe_and_measure
    with tempfile.TemporaryDirectory() as root:
        config, _ = load_config(str(CONFIGS / "dqn_cartpole.yaml"), [
            f"train.total_steps={steps}", "train.eval_every=0", f"agent.buffer_size={buffer_size}",
            f"log.root={root}", "log.progress=false"])
        summary = trainer.train(config, Path(root) / "run")
    print(f"\ntraining run: configs/dqn_cartpole.yaml, buffer_size {buffer_size:,}, {steps:,} env steps, "
          f"{summary['updates']:,} updates")
    full_rss = None
    for env_steps, size, value in samples:
        if full_rss is None and size == buffer_size:
            full_rss = value
        print(f"    step {env_steps:>8,}  buffer {size:>8,}  RSS {value / MB:7.1f} MB")
    if full_rss is not None:
        print(f"    RSS growth from the first sample with a full buffer to the end: "
              f"{(samples[-1][2] - full_rss) / MB:+.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=1_000_000, help="part 1's buffer size (0: skip part 1)")
    parser.add_argument("--steps", type=int, default=40_000, help="part 2's env steps (0: skip part 2)")
    parser.add_argument("--buffer", type=int, default=10_000, help="part 2's buffer size")
    args = parser.parse_args()
    if args.capacity:
        buffer_part(args.capacity)
    if args.steps:
        from rlscratch.runtime import keep_freed_memory

        keep_freed_memory()
        training_part(args.steps, args.buffer)


if __name__ == "__main__":
    main()
