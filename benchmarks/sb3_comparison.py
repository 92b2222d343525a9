"""Training time of rlscratch's DQN, A2C and PPO beside Stable-Baselines3's, side by side in one run,
and where rlscratch's time goes.

    python benchmarks/sb3_comparison.py --sb3-python /work/sb3venv/bin/python
    python benchmarks/sb3_comparison.py --sb3-python PY --cases dqn --rounds 3
    python benchmarks/sb3_comparison.py --profile-only          # rlscratch's time split only
    python benchmarks/sb3_comparison.py --sb3-python PY --cases a2c_pendulum --rounds 3 --pendulum-steps 100000
    python benchmarks/sb3_comparison.py --sb3-python PY --cases ppo_lunarlander_continuous --rounds 2

Cases (CartPole-v1, both libraries training from scratch):

  dqn  each library's tuned CartPole DQN: SB3 with rl-baselines3-zoo's hyperparams/dqn.yml (lr 2.3e-3,
       batch 64, buffer 100,000, learning_starts 1,000, bursts of 128 updates every 256 steps, a
       target copy every 10 steps, eps to 0.04 over 16% of the run, [256, 256] ReLU) against
       configs/dqn_cartpole.yaml as shipped. No evaluation on either side. Figure: seconds for
       ``--dqn-steps`` (50,000) steps. Target: rlscratch <= 0.4 x SB3.
  a2c  8 envs x n_steps 5, separate [64, 64] tanh policy and value networks with orthogonal init,
       RMSprop (lr 7e-4, alpha 0.99, eps 1e-5), gamma 0.99, lambda 1, vf_coef 0.5, ent_coef 0,
       max_grad_norm 0.5 (SB3's A2C defaults). Figure: env steps per second over ``--a2c-steps``
       steps. Target: rlscratch / SB3 >= 1.5.
  ppo  rl-baselines3-zoo's CartPole-v1 PPO (hyperparams/ppo.yml): 8 envs x n_steps 32, batch 256,
       20 epochs, gamma 0.98, lambda 0.8, ent_coef 0, lr lin_1e-3, clip_range lin_0.2 -- which is
       configs/ppo_cartpole.yaml. Figure: seconds for 100,000 steps. Target: rlscratch <= SB3 / 2.

Continuous actions (Pendulum-v1, a diagonal Gaussian policy with a state-independent log-std starting
at 0, separate [64, 64] tanh networks, observations and rewards normalised -- SB3's VecNormalize):

  ppo_pendulum  configs/ppo_pendulum.yaml's hyperparameters on both sides (SB3 without gSDE, which
       rlscratch does not have). Figure: seconds for ``--pendulum-steps`` (100,000) steps. Target:
       rlscratch <= SB3 / 2.
  a2c_pendulum  configs/a2c_pendulum.yaml's hyperparameters on both sides. Same figure and target.
  ppo_lunarlander_continuous  configs/ppo_lunarlander_continuous.yaml's hyperparameters on both sides
       (LunarLanderContinuous-v3, Box2D: both venvs need the box2d extra). Figure: seconds for
       ``--lunar-steps`` (163,840: ten rollouts of 16 envs x 1024 steps, so both sides collect and learn
       from exactly the same number of rollouts) -- the run to 1M steps is ~6x longer, and the ratio is one
       of per-run wall time at equal steps. Target: rlscratch <= SB3 / 2.

Method. SB3 runs in a worker subprocess of its own Python (a venv with torch and stable-baselines3:
never a dependency of rlscratch), driven over stdin/stdout; while one side trains, the other sits idle
blocked on its pipe. Rounds alternate between the sides, the order reversed every other round, so the
drift of a shared machine hits both alike; the figure of a side is its median over rounds, and ratios
are taken between those medians. rlscratch trains through its own loop (rlscratch.trainer.train: the
collector, the agent, logging off, a one-episode evaluation and a checkpoint at the end, all inside
the timed region); SB3 is timed around ``model.learn``. Both are pinned to one BLAS/torch thread
(``--threads``): the networks are tiny, and on a shared machine a second thread waiting for a busy
core turns every matrix product into a wait for the scheduler.

The profile pass (after the rounds) runs rlscratch once more with timers around the vector env's
step/reset, ``agent.act`` (the acting forward pass and sampling), ``agent.learn`` (the update: forward
and backward over the rollout, advantages, optimizer) and the rest of ``agent.observe`` (storing the
step), and reports each as a share of the training loop's time. For the continuous cases SB3 runs once
more too, with a timer around its DummyVecEnv's ``step_wait``/``reset`` (the same gymnasium envs and
wrappers stepping, plus SB3's Monitor), so the env's share can be read on both sides: where one env step
costs far more than both libraries' own work, no library can be much faster than the other.

This file runs under the SB3 venv's Python too (as the worker), so its top level imports only the
standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("dqn", "a2c", "ppo", "ppo_pendulum", "a2c_pendulum", "ppo_lunarlander_continuous")
# The continuous cases: configs/<name>.yaml, whose hyperparameters the SB3 side copies (sb3_continuous).
CONTINUOUS = ("ppo_pendulum", "a2c_pendulum", "ppo_lunarlander_continuous")


# -- Stable-Baselines3 (the worker side) ----------------------------------------------------------------
def sb3_continuous(case: str, seed: int, hyper: dict):
    """SB3's PPO or A2C on the config's env with the hyperparameters of rlscratch's config (``hyper``, read
    from it by the parent), VecNormalize for observations and rewards, no gSDE."""
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    # render_mode None, as rlscratch's training envs: SB3's make_vec_env asks for "rgb_array" by default, and
    # LunarLander then adds a Box2D body per engine puff that only render() ever ages and removes -- without
    # render() they pile up until the episode ends and slow every world step (with it, SB3's env time was 7.9x
    # rlscratch's for the same 163,840 steps)
    env = VecNormalize(make_vec_env(hyper["env_id"], n_envs=hyper["num_envs"], seed=seed,
                                    env_kwargs={"render_mode": None}), gamma=hyper["gamma"])
    policy_kwargs = dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh, ortho_init=True,
                         log_std_init=hyper["log_std_init"])
    common = dict(n_steps=hyper["n_steps"], gamma=hyper["gamma"], gae_lambda=hyper["gae_lambda"],
                  ent_coef=hyper["ent_coef"], vf_coef=hyper["vf_coef"], max_grad_norm=hyper["max_grad_norm"],
                  learning_rate=(lambda remaining: remaining * hyper["lr"]) if hyper["lr_linear"] else hyper["lr"],
                  normalize_advantage=hyper["normalize_advantage"], seed=seed,
                  device="cpu", verbose=0, policy_kwargs=policy_kwargs)
    if case.startswith("ppo"):
        model = PPO("MlpPolicy", env, batch_size=hyper["batch_size"], n_epochs=hyper["n_epochs"],
                    clip_range=hyper["clip_range"], **common)
    else:
        model = A2C("MlpPolicy", env, use_rms_prop=hyper["optim"] == "rmsprop", rms_prop_eps=hyper["eps"], **common)
    return model, env


def sb3_train(case: str, steps: int, seed: int, hyper: dict | None = None) -> float:
    """Build SB3's model for ``case`` and return the seconds ``model.learn(steps)`` takes."""
    return sb3_run(case, steps, seed, hyper)


def sb3_profile(case: str, steps: int, seed: int, hyper: dict | None = None) -> dict[str, float]:
    """One more SB3 run with a timer around its vector env's stepping and resetting (DummyVecEnv.step_wait
    and reset: the gymnasium envs, their wrappers and SB3's Monitor, not VecNormalize's maths)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    env_seconds = [0.0]
    originals = {name: getattr(DummyVecEnv, name) for name in ("step_wait", "reset")}

    def timed(original):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                env_seconds[0] += time.perf_counter() - start
        return wrapper

    for name, original in originals.items():
        setattr(DummyVecEnv, name, timed(original))
    try:
        total = sb3_run(case, steps, seed, hyper)
    finally:
        for name, original in originals.items():
            setattr(DummyVecEnv, name, original)
    return {"env step/reset": env_seconds[0], "rest (SB3, torch)": total - env_seconds[0], "total": total}


def sb3_run(case: str, steps: int, seed: int, hyper: dict | None) -> float:
    import torch
    from stable_baselines3 import A2C, DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env

    if case in CONTINUOUS:
        model, env = sb3_continuous(case, seed, hyper or {})
    else:
        env = make_vec_env("CartPole-v1", n_envs=1 if case == "dqn" else 8, seed=seed)
    if case in CONTINUOUS:
        pass  # built above
    elif case == "dqn":
        model = DQN("MlpPolicy", env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                    learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256,
                    gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
                    policy_kwargs=dict(net_arch=[256, 256]), seed=seed, device="cpu", verbose=0)
    elif case == "a2c":
        model = A2C("MlpPolicy", env, learning_rate=7e-4, n_steps=5, gamma=0.99, gae_lambda=1.0, ent_coef=0.0,
                    vf_coef=0.5, max_grad_norm=0.5, use_rms_prop=True, rms_prop_eps=1e-5,
                    normalize_advantage=False, seed=seed, device="cpu", verbose=0,
                    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh,
                                       ortho_init=True))
    else:
        def linear(start: float):  # the zoo's lin_X: X * progress_remaining
            return lambda progress_remaining: progress_remaining * start

        model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                    ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu",
                    verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    env.close()
    return seconds


def serve(threads: int | None) -> int:
    """Worker loop (benchmarks/worker.py): SB3's versions first, then one training run per request."""
    import stable_baselines3
    import torch
    from worker import serve as serve_requests

    if threads is not None:
        torch.set_num_threads(threads)
    return serve_requests({"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
                           "threads": torch.get_num_threads()}, {"train": sb3_train, "profile": sb3_profile})


class SB3Side:
    def __init__(self, python: str, threads: int | None) -> None:
        from worker import Worker

        env = {} if threads is None else {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.worker = Worker(python, [__file__, "--worker"] + ([] if threads is None else ["--threads", str(threads)]),
                             name="SB3 worker", env=env)
        self.info = self.worker.info

    def train(self, case: str, steps: int, seed: int) -> float:
        hyper = continuous_hyperparameters(case) if case in CONTINUOUS else None
        return self.worker.call("train", case=case, steps=steps, seed=seed, hyper=hyper)

    def profile(self, case: str, steps: int, seed: int) -> dict[str, float]:
        return self.worker.call("profile", case=case, steps=steps, seed=seed, hyper=continuous_hyperparameters(case))

    def close(self) -> None:
        self.worker.close(timeout=60)


# -- rlscratch (this process) ---------------------------------------------------------------------------
def continuous_hyperparameters(case: str) -> dict:
    """What the SB3 side needs from configs/<case>.yaml, so both train with the same numbers."""
    from rlscratch.agent import agent_config, resolve_agent
    from rlscratch.config import load_config

    config, _ = load_config(str(ROOT / "configs" / f"{case}.yaml"))
    agent = agent_config(resolve_agent(config.agent["name"]), config.agent)
    lr = agent.optim.lr
    # a number, or the zoo's lin_X (X -> 0 over the run, on the env-step clock; rlscratch_config sets its steps)
    linear = not isinstance(lr, float) and lr.kind == "linear" and lr.end == 0.0 and lr.clock == "env_steps"
    if not ((isinstance(lr, float) or linear) and config.env.wrappers == ["normalize_observation"]
            and agent.normalize_reward and not agent.squash_actions and config.model.hidden == [64, 64]):
        raise SystemExit(f"configs/{case}.yaml no longer matches what sb3_continuous builds; update one of them")
    hyper = {"env_id": config.env.id, "num_envs": config.env.num_envs, "n_steps": agent.n_steps, "gamma": agent.gamma,
             "gae_lambda": agent.gae_lambda, "ent_coef": float(agent.ent_coef), "vf_coef": agent.vf_coef,
             "max_grad_norm": agent.optim.max_grad_norm, "lr": lr if isinstance(lr, float) else lr.start,
             "lr_linear": linear, "eps": agent.optim.eps,
             "optim": agent.optim.name, "normalize_advantage": agent.normalize_advantage,
             "log_std_init": agent.log_std_init}
    if case.startswith("ppo"):
        hyper.update(batch_size=agent.batch_size, n_epochs=agent.n_epochs, clip_range=float(agent.clip_range))
    return hyper


def rlscratch_config(case: str, steps: int, seed: int, folder: Path):
    from rlscratch.config import load_config

    common = [f"train.total_steps={steps}", "train.eval_every=0", "train.eval_episodes=1", "env.eval_num_envs=1",
              "train.checkpoint_every=0", f"log.root={folder}", "log.tensorboard=false", "log.progress=false"]
    if case == "a2c":
        overrides = ["env.num_envs=8", "env.vectorization=sync", "agent.n_steps=5", "agent.gamma=0.99",
                     "agent.gae_lambda=1.0",
                     "agent.optim={name: rmsprop, lr: 7.0e-4, eps: 1.0e-5, alpha: 0.99, max_grad_norm: 0.5}",
                     "agent.ent_coef=0.0", "agent.vf_coef=0.5", "agent.normalize_advantage=false",
                     "agent.shared_network=false", "agent.orthogonal_init=true", "model.hidden=[64, 64]",
                     "model.activation=tanh"]
        name = "a2c_cartpole"
    elif case == "dqn":
        overrides, name = [], "dqn_cartpole"
    elif case in CONTINUOUS:
        overrides, name = [], case
        if continuous_hyperparameters(case)["lr_linear"]:
            overrides = [f"agent.optim.lr.steps={steps}"]
    else:
        # lin_ schedules run over the whole run, as in the zoo
        overrides = [f"agent.optim.lr.steps={steps}", f"agent.clip_range.steps={steps}"]
        name = "ppo_cartpole"
    config, _ = load_config(str(ROOT / "configs" / f"{name}.yaml"), common + overrides, seed)
    return config


def rlscratch_train(case: str, steps: int, seed: int, folder: Path) -> float:
    """Seconds of rlscratch's training loop (summary["seconds"]: from the first step to the end)."""
    import contextlib

    from rlscratch.trainer import new_run_dir, train

    config = rlscratch_config(case, steps, seed, folder)
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # the loop's own start/eval/done lines
        summary = train(config, new_run_dir(config, None))
    return summary["seconds"]


def rlscratch_profile(case: str, steps: int, seed: int, folder: Path) -> dict[str, float]:
    """One more rlscratch run with timers around its parts; seconds per part."""
    import gymnasium as gym
    from rlscratch.agents.a2c import A2C
    from rlscratch.agents.dqn import DQN
    from rlscratch.agents.ppo import PPO
    from rlscratch.envs.vector import LoopVectorEnv

    from rlscratch import trainer

    totals = {"env step/reset": 0.0, "act (forward + sample)": 0.0, "learn (update)": 0.0, "observe (store)": 0.0}
    evaluating = [False]

    def timed(cls, name: str, part: str):
        original = getattr(cls, name)

        def wrapper(*args, **kwargs):
            if evaluating[0]:
                return original(*args, **kwargs)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[part] += time.perf_counter() - start
        return original, wrapper

    patches = [(LoopVectorEnv, "step", "env step/reset"),
               (gym.vector.SyncVectorEnv, "reset", "env step/reset"),
               (A2C, "act", "act (forward + sample)"), (A2C, "observe", "observe (store)"),
               (A2C, "learn", "learn (update)"), (PPO, "learn", "learn (update)"),
               (PPO, "act", "act (forward + sample)"), (PPO, "observe", "observe (store)"),
               (DQN, "act", "act (forward + sample)"), (DQN, "observe", "observe (store)"),
               (DQN, "update", "learn (update)")]
    saved = []
    for cls, name, part in patches:
        original, wrapper = timed(cls, name, part)
        saved.append((cls, name, original))
        setattr(cls, name, wrapper)
    original_eval = trainer.Evaluator.run

    def evaluate(self, *args, **kwargs):
        evaluating[0] = True
        start = time.perf_counter()
        try:
            return original_eval(self, *args, **kwargs)
        finally:
            evaluating[0] = False
            totals["final evaluation"] = totals.get("final evaluation", 0.0) + time.perf_counter() - start

    trainer.Evaluator.run = evaluate
    try:
        totals["total"] = rlscratch_train(case, steps, seed, folder)
    finally:
        trainer.Evaluator.run = original_eval
        for cls, name, original in saved:
            setattr(cls, name, original)
    totals["observe (store)"] -= totals["learn (update)"]  # observe calls learn: keep only the storing
    totals["loop, collector, logging"] = totals["total"] - sum(v for k, v in totals.items() if k != "total")
    return totals


# -- the comparison ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="1", help="BLAS/torch threads for both sides: a number or 'default'")
    parser.add_argument("--sb3-python",
                        help="a Python with torch and stable-baselines3 (e.g. /work/sb3venv/bin/python)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list from: {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (default 3)")
    parser.add_argument("--a2c-steps", type=int, default=20_000, help="env steps per A2C round (default 20,000)")
    parser.add_argument("--dqn-steps", type=int, default=50_000, help="env steps per DQN round (default 50,000)")
    parser.add_argument("--ppo-steps", type=int, default=100_000, help="env steps per PPO round (default 100,000)")
    parser.add_argument("--pendulum-steps", type=int, default=100_000,
                        help="env steps per Pendulum round, both continuous cases (default 100,000)")
    parser.add_argument("--lunar-steps", type=int, default=163_840,
                        help="env steps per ppo_lunarlander_continuous round (default 163,840: 10 rollouts)")
    parser.add_argument("--profile-only", action="store_true", help="rlscratch's time split only, no SB3")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    threads = None if args.threads == "default" else int(args.threads)
    if args.worker:
        return serve(threads)

    import tempfile

    import numpy as np  # noqa: F401 -- loaded before threadpoolctl, which limits the libraries already loaded
    from threadpoolctl import threadpool_limits

    if threads is not None:
        threadpool_limits(threads)
    cases = args.cases.split(",")
    steps = {"dqn": args.dqn_steps, "a2c": args.a2c_steps, "ppo": args.ppo_steps,
             "ppo_pendulum": args.pendulum_steps, "a2c_pendulum": args.pendulum_steps,
             "ppo_lunarlander_continuous": args.lunar_steps}
    folder = Path(tempfile.mkdtemp(prefix="rlscratch-throughput-"))
    results: dict = {"threads": args.threads, "cases": {}}
    sb3 = None
    if not args.profile_only:
        if not args.sb3_python:
            parser.error("--sb3-python is required (or --profile-only)")
        sb3 = SB3Side(args.sb3_python, threads)
        results["sb3"] = sb3.info
        print(f"SB3 worker: torch {sb3.info['torch']}, stable-baselines3 {sb3.info['stable_baselines3']}, "
              f"{sb3.info['threads']} torch thread(s); rlscratch BLAS threads: {args.threads}", flush=True)
    try:
        for case in cases:
            n = steps[case]
            rlscratch_train(case, min(n, 2000), 100, folder)  # warm-up: imports, first allocations
            if sb3 is not None:
                sb3.train(case, min(n, 2000), 100)
                times: dict[str, list[float]] = {"rlscratch": [], "sb3": []}
                order = ["rlscratch", "sb3"]
                for round_ in range(args.rounds):
                    for side in order:
                        seconds = (rlscratch_train(case, n, round_, folder) if side == "rlscratch"
                                   else sb3.train(case, n, round_))
                        times[side].append(seconds)
                        print(f"  {case} round {round_}: {side:9s} {seconds:7.2f} s  ({n / seconds:7.0f} steps/s)",
                              flush=True)
                    order.reverse()
                medians = {side: statistics.median(t) for side, t in times.items()}
                speedup = medians["sb3"] / medians["rlscratch"]
                results["cases"][case] = {"steps": n, "seconds": times, "median_seconds": medians,
                                          "steps_per_second": {s: n / m for s, m in medians.items()},
                                          "speedup": speedup}
            profile = rlscratch_profile(case, n, 0, folder)
            results["cases"].setdefault(case, {"steps": n})["profile"] = profile
            if sb3 is not None and case in CONTINUOUS:
                results["cases"][case]["sb3_profile"] = sb3.profile(case, n, 0)
    finally:
        if sb3 is not None:
            sb3.close()

    print()
    for case in cases:
        r = results["cases"][case]
        if "speedup" in r:
            sps = r["steps_per_second"]
            target = {"dqn": ">= 2.5 (rlscratch time <= 0.4 x SB3's)", "a2c": ">= 1.5",
                      "ppo": ">= 2.0 (rlscratch time <= half of SB3's)",
                      "ppo_pendulum": ">= 2.0 (rlscratch time <= half of SB3's)",
                      "a2c_pendulum": ">= 2.0 (rlscratch time <= half of SB3's)",
                      "ppo_lunarlander_continuous": ">= 2.0 (rlscratch time <= half of SB3's)"}[case]
            median = r["median_seconds"]
            print(f"{case}: {r['steps']} steps, median over {args.rounds} rounds: "
                  f"rlscratch {median['rlscratch']:.2f} s ({sps['rlscratch']:.0f} steps/s), "
                  f"SB3 {median['sb3']:.2f} s ({sps['sb3']:.0f} steps/s); "
                  f"speed ratio rlscratch/SB3 = {r['speedup']:.2f} (target {target})")
        profile = r["profile"]
        total = profile["total"]
        print(f"  rlscratch time split ({case}, one profiled run, {total:.2f} s):")
        for part, seconds in profile.items():
            if part != "total":
                print(f"    {part:28s} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")
        if "sb3_profile" in r:
            sb3_split = r["sb3_profile"]
            print(f"  SB3 time split ({case}, one timed run, {sb3_split['total']:.2f} s):")
            for part, seconds in sb3_split.items():
                if part != "total":
                    print(f"    {part:28s} {seconds:7.2f} s  {100 * seconds / sb3_split['total']:5.1f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
