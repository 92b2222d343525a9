"""Distributed MuZero's self-play throughput with 1 and 2 actors (learner paused), the learner's own
consumption, and where the learner becomes the limit as actors are added (the figures of issue 16).

    python benchmarks/distributed_scaling.py                     # muzero_cartpole, 4 envs per actor
    python benchmarks/distributed_scaling.py --seconds 20 --repeats 3 --set agent.num_simulations=25

Ray is started here on loopback with one CPU per actor. Phases, side by side in one invocation (the
machine is shared: compare only ratios from one run):

* ``acting``: N self-play actors (rlscratch.distributed.SelfPlayActor) play rounds of ``--chunk``
  vector steps each, all at once, with fixed weights and no learner -- env steps/s over all actors,
  and each actor's CPU seconds per env step (its own process time: what an idle core would take).
  N = 1, 2, 1, 2, ... (``--repeats`` pairs, interleaved so that a change of load hits both);
* ``learner``: the learner's gradient updates (MuZero.train_step on a replay filled by the actors)
  in this process: updates/s and CPU seconds per update; at replay ratio R it consumes updates/s / R
  env steps per second.

The projection: with a per-actor rate ``a`` (env steps/s on a core of its own) and the learner's
consumption ``L``, the learner is the limit from N = L / a actors on. The load average (1 min) is
printed at each measurement: on a machine with fewer idle cores than actors + 1 the 2-actor figure
measures the machine, not the code -- Ray runs its workers at nice 19 and in the driver's session
(one scheduling autogroup under Linux's sched_autogroup), so on a saturated machine two actors share
the CPU slice one had. The code's own figure is then each actor's CPU time per env step: "CPU-bound
2/1" is the ratio two actors would reach on two idle cores (2 x the 1-actor CPU time per step over
the 2-actor one: whatever the second actor costs the first shows there).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlscratch.envs.factory import make_vec_env, spaces_of  # noqa: E402

from rlscratch.agent import EnvSpec, agent_config, resolve_agent  # noqa: E402
from rlscratch.config import load_config  # noqa: E402
from rlscratch.distributed import SelfPlayActor  # noqa: E402


def cpu_stat() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def measure_acting(ray, actors: list, weights_ref, chunk: int, seconds: float) -> dict:
    """Rounds of ``chunk`` steps on every actor at once until ``seconds`` have passed."""
    ray.get([a.play.remote(chunk, weights_ref, 0, 0) for a in actors])  # warm: weights set, trees allocated
    load_before, (busy0, total0) = os.getloadavg()[0], cpu_stat()
    begin, steps, cpu, rounds = time.perf_counter(), 0, [0.0] * len(actors), 0
    while time.perf_counter() - begin < seconds:
        results = ray.get([a.play.remote(chunk, weights_ref, 0, 0) for a in actors])
        for i, r in enumerate(results):
            cpu[i] += r["cpu_seconds"]
            steps += r["obs"].shape[0] * r["obs"].shape[1]
        rounds += 1
    wall = time.perf_counter() - begin
    busy1, total1 = cpu_stat()
    per_actor_steps = steps / len(actors)
    return {"actors": len(actors), "steps_per_s": steps / wall, "wall": wall, "rounds": rounds,
            "cpu_ms_per_step": [1000 * c / per_actor_steps for c in cpu], "load1": (load_before, os.getloadavg()[0]),
            "machine_busy": (busy1 - busy0) / max(total1 - total0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="muzero_cartpole")
    parser.add_argument("--set", action="append", default=["env.num_envs=4"], metavar="KEY=VALUE")
    parser.add_argument("--chunk", type=int, default=8, help="vector steps per actor per round")
    parser.add_argument("--seconds", type=float, default=15.0, help="per acting measurement")
    parser.add_argument("--repeats", type=int, default=2, help="(1 actor, 2 actors) pairs")
    parser.add_argument("--updates", type=int, default=300, help="learner updates timed")
    parser.add_argument("--replay-ratio", type=float, default=1.0, help="updates per env step, for the projection")
    args = parser.parse_args(argv)
    config, _ = load_config(args.config, args.set)
    print(f"{args.config} {args.set}, chunk {args.chunk}; {os.cpu_count()} cores; load {os.getloadavg()}", flush=True)

    from rlscratch.ray_cluster import start_ray

    start_ray(None, 3)
    import ray

    remote = ray.remote(num_cpus=1)(SelfPlayActor)
    seeds = np.random.SeedSequence(config.seed).spawn(2)
    actors = [remote.remote(config, s) for s in seeds]
    probe = make_vec_env(config.env)
    spec = EnvSpec(*spaces_of(probe), 2 * config.env.num_envs)
    probe.close()
    agent_cls = resolve_agent(config.agent["name"])
    learner = agent_cls(agent_config(agent_cls, config.agent), spec, config.model, np.random.default_rng(0))
    weights_ref = ray.put(learner.net.flat_params.copy())

    rows = []
    for _ in range(args.repeats):
        for n in (1, 2):
            r = measure_acting(ray, actors[:n], weights_ref, args.chunk, args.seconds)
            rows.append(r)
            print(f"  {n} actor(s): {r['steps_per_s']:.1f} env steps/s over {r['wall']:.1f} s ({r['rounds']} rounds); "
                  f"CPU ms/step per actor {[round(c, 2) for c in r['cpu_ms_per_step']]}; load1 "
                  f"{r['load1'][0]:.2f}->{r['load1'][1]:.2f}; machine busy {100 * r['machine_busy']:.0f}%", flush=True)

    # the learner: fill its replay from both actors, then time updates (actors idle)
    E = config.env.num_envs
    while learner.replay.steps_held < 2000:
        for i, rows_i in enumerate(ray.get([a.play.remote(args.chunk, weights_ref, 0, 0) for a in actors])):
            for t in range(args.chunk):
                learner.replay.add(rows_i["obs"][t], rows_i["action"][t], rows_i["reward"][t], rows_i["root_value"][t],
                                   rows_i["policy"][t], rows_i["next_obs"][t], rows_i["terminated"][t],
                                   rows_i["truncated"][t], rows_i["final_value"][t], envs=np.arange(i * E, (i + 1) * E))
    for a in actors:
        ray.kill(a)
    learner.train_step()
    load_before, cpu, begin = os.getloadavg()[0], time.process_time(), time.perf_counter()
    for _ in range(args.updates):
        learner.train_step()
    wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
    ray.shutdown()
    ups = args.updates / wall
    print(f"  learner: {ups:.1f} updates/s ({1000 * cpu / args.updates:.1f} CPU ms/update, "
          f"{1000 * wall / args.updates:.1f} wall ms/update); load1 {load_before:.2f}->{os.getloadavg()[0]:.2f}")

    one = [r for r in rows if r["actors"] == 1]
    two = [r for r in rows if r["actors"] == 2]
    ratios = [b["steps_per_s"] / a["steps_per_s"] for a, b in zip(one, two)]
    cpu_rate = 1000 / np.mean([c for r in rows for c in r["cpu_ms_per_step"]])  # env steps per CPU-second
    consumption = (1000 * args.updates / (1000 * cpu)) / args.replay_ratio   # env steps/s on a core of its own
    cpu_bound = [2 * np.mean(a["cpu_ms_per_step"]) / np.mean(b["cpu_ms_per_step"]) for a, b in zip(one, two)]
    print(f"\n2 actors / 1 actor: {', '.join(f'{x:.2f}x' for x in ratios)} wall-clock; CPU-bound "
          f"{', '.join(f'{x:.2f}x' for x in cpu_bound)} (target >= 1.7x)")
    print(f"per actor, CPU-bound: {cpu_rate:.0f} env steps per CPU-second; learner at replay ratio "
          f"{args.replay_ratio:g}: {consumption:.0f} env steps per CPU-second")
    print(f"projection: the learner is the limit from {consumption / cpu_rate:.2f} actors on (each on a core of its "
          f"own); beyond that more actors only wait on the throttle")
    print(f"load at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
