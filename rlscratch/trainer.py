"""The training loop every env-interacting agent shares, with evaluation, logging and checkpoints.

    obs -> agent.act -> envs.step -> agent.observe -> (log | evaluate | checkpoint) -> repeat

Agents that learn from a dataset instead of an environment (supervised MNIST) implement
``Agent.train_offline(run)`` and are handed the same run directory, logger and checkpoints.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import rlscratch
from rlscratch.agent import Agent, EnvSpec, agent_config, resolve_agent
from rlscratch.checkpoint import LOOP_META, CheckpointManager, read_checkpoint
from rlscratch.collector import Collector
from rlscratch.config import RunConfig, run_name, to_dict
from rlscratch.envs.factory import env_seeds, make_obs_normalizer, make_vec_env, spaces_of
from rlscratch.envs.wrappers import ObservationNormalizer
from rlscratch.errors import CheckpointError, ConfigError
from rlscratch.logger import Logger, MetricAverager, flatten_dict
from rlscratch.state import sub_state


@dataclass
class Run:
    """Everything a training session writes to: handed to offline agents as well."""

    config: RunConfig
    agent_config: Any
    run_dir: Path
    logger: Logger
    checkpoints: CheckpointManager
    resume: bool


@dataclass
class EvalResult:
    returns: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "episodes": int(self.returns.size),
                "returns": [float(r) for r in self.returns]}


class Evaluator:
    """Greedy episodes in separate envs. Each evaluation starts from the same seeds, so successive
    evaluations are comparable and never disturb the training envs' random streams. With n envs and
    K episodes, env i plays episodes i, i+n, i+2n, ... (< K): fixed slots, so short episodes are not
    over-counted by finishing first."""

    def __init__(self, config: RunConfig, seed_sequence: np.random.SeedSequence,
                 normalizer: ObservationNormalizer | None) -> None:
        self.envs = make_vec_env(config.env, evaluation=True)
        self.seeds = env_seeds(seed_sequence, self.envs.num_envs)
        self.normalizer = normalizer

    def _view(self, obs: np.ndarray) -> np.ndarray:
        return obs if self.normalizer is None else self.normalizer.normalize(obs)

    def run(self, agent: Agent, episodes: int) -> EvalResult:
        n = self.envs.num_envs
        quota = np.array([len(range(i, episodes, n)) for i in range(n)])
        played = np.zeros(n, dtype=np.int64)
        returns: list[list[float]] = [[] for _ in range(n)]
        running = np.zeros(n)
        obs, _ = self.envs.reset(seed=self.seeds)
        while np.any(played < quota):
            actions = agent.act(self._view(obs), explore=False)
            obs, reward, terminated, truncated, _ = self.envs.step(actions)
            running += reward
            done = terminated | truncated
            if done.any():
                for i in np.flatnonzero(done):
                    if played[i] < quota[i]:
                        returns[i].append(float(running[i]))
                    played[i] += 1
                running[done] = 0.0
                reset_obs, _ = self.envs.reset(options={"reset_mask": done})
                obs = np.where(done.reshape((-1,) + (1,) * (obs.ndim - 1)), reset_obs, obs)
        # slot order: episode k was played by env k % n as its (k // n)-th episode
        ordered = [returns[k % n][k // n] for k in range(episodes)]
        return EvalResult(np.array(ordered))

    def close(self) -> None:
        self.envs.close()


def crossed(before: int, after: int, every: int) -> bool:
    """Did the step counter pass a multiple of ``every`` (with several envs it moves in strides)?"""
    return every > 0 and after // every > before // every


# -- run directories ------------------------------------------------------------------------------
def new_run_dir(config: RunConfig, run_dir: str | None) -> Path:
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and any(path.iterdir()):
            raise ConfigError(f"run directory {path} already exists and is not empty; "
                              f"continue it with --resume {path}, or choose another --run-dir")
    else:
        # mkdir without exist_ok claims the name atomically: two runs started in the same second
        # (a seed sweep) get different directories.
        stamp = time.strftime("%Y%m%d-%H%M%S")
        suffix = 1
        while True:
            path = Path(config.log.root) / (run_name(config, stamp) + (f"-{suffix}" if suffix > 1 else ""))
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                suffix += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolved_config(config: RunConfig, agent_cfg: Any) -> dict:
    """The complete config, defaults filled in, as written to RUN_DIR/config.yaml."""
    data = to_dict(config)
    data["agent"] = {"name": config.agent["name"], **dataclasses.asdict(agent_cfg)}
    return data


def write_config(run_dir: Path, data: dict) -> None:
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(run_dir / "config.yaml")


def build_agent(config: RunConfig, spec: EnvSpec | None, seed_sequence: np.random.SeedSequence) -> Agent:
    agent_cls = resolve_agent(config.agent["name"])
    agent_cfg = agent_config(agent_cls, config.agent)
    return agent_cls(agent_cfg, spec, config.model, np.random.default_rng(seed_sequence))


def _check_meta(meta: dict, config: RunConfig, path: Path) -> None:
    for key, expected in (("agent", config.agent["name"]), ("env_id", config.env.id),
                          ("num_envs", config.env.num_envs)):
        if meta.get(key) != expected:
            raise CheckpointError(f"{path} was written with {key}={meta.get(key)!r}, but this config has {expected!r}; "
                                  "resume with the run's own config (RUN_DIR/config.yaml)")


# -- the loop -------------------------------------------------------------------------------------
def train(config: RunConfig, run_dir: Path, resume: bool = False, stop_at: int | None = None) -> dict:
    """Train as ``config`` says, writing into ``run_dir``. ``resume`` continues from the latest
    checkpoint there. ``stop_at`` simulates an interruption: checkpoint at that step and return
    (a Ctrl-C does the same). Returns a summary dict."""
    agent_seed, env_seed, eval_seed = np.random.SeedSequence(config.seed).spawn(3)
    agent_cls = resolve_agent(config.agent["name"])
    agent_cfg = agent_config(agent_cls, config.agent)
    checkpoints = CheckpointManager(run_dir / "checkpoints", config.train.keep_checkpoints)
    if resume and checkpoints.latest() is None:
        raise CheckpointError(f"no checkpoint in {checkpoints.folder}; nothing to resume (start a new run instead)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, resolved_config(config, agent_cfg))

    if hasattr(agent_cls, "train_offline"):
        logger = Logger(run_dir, config.log.tensorboard, progress=False)
        try:
            agent = agent_cls(agent_cfg, None, config.model, np.random.default_rng(agent_seed))
            return agent.train_offline(Run(config, agent_cfg, run_dir, logger, checkpoints, resume))
        finally:
            logger.close()

    envs = make_vec_env(config.env)
    observation_space, action_space = spaces_of(envs)
    spec = EnvSpec(observation_space, action_space, envs.num_envs)
    agent = agent_cls(agent_cfg, spec, config.model, np.random.default_rng(agent_seed))
    collector = Collector(envs, env_seeds(env_seed, envs.num_envs), make_obs_normalizer(config.env, observation_space))
    env_steps, elapsed_before = 0, 0.0
    if resume:
        path = checkpoints.latest()
        arrays, meta = read_checkpoint(path, LOOP_META)
        _check_meta(meta, config, path)
        try:
            agent.load_state_dict(sub_state(arrays, "agent"))
            collector.load_state_dict(sub_state(arrays, "collector"))
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path} does not match this agent/config: {err}") from None
        env_steps, elapsed_before = meta["env_steps"], meta.get("elapsed", 0.0)
    evaluator = Evaluator(config, eval_seed, collector.normalizer)

    logger = Logger(run_dir, config.log.tensorboard, config.train.total_steps, env_steps, config.log.progress)
    averager = MetricAverager()
    recent_returns: deque[float] = deque(maxlen=20)
    start_time = time.perf_counter()
    window_start, window_steps, window_updates = start_time, env_steps, agent.updates
    last_eval: EvalResult | None = None
    logger.line(f"{'resuming' if resume else 'starting'} {config.name}: agent {config.agent['name']}, "
                f"env {config.env.id} x{envs.num_envs}, {config.train.total_steps} steps, seed {config.seed}, "
                f"run dir {run_dir}")

    def save_checkpoint() -> Path:
        meta = {"rlscratch": rlscratch.__version__, "config_name": config.name, "agent": config.agent["name"],
                "env_id": config.env.id, "num_envs": config.env.num_envs, "env_steps": env_steps,
                "elapsed": elapsed_before + time.perf_counter() - start_time}
        arrays = {**{f"agent/{k}": v for k, v in agent.state_dict().items()},
                  **{f"collector/{k}": v for k, v in collector.state_dict().items()}}
        return checkpoints.save(env_steps, arrays, meta)

    def evaluate() -> EvalResult:
        result = evaluator.run(agent, config.train.eval_episodes)
        logger.scalars({"eval/mean_return": result.mean, "eval/std_return": result.std}, env_steps)
        logger.line(f"step {env_steps}: eval return {result.mean:.2f} ± {result.std:.2f} "
                    f"over {config.train.eval_episodes} episodes")
        return result

    interrupted = False
    try:
        while env_steps < config.train.total_steps:
            if stop_at is not None and env_steps >= stop_at:
                interrupted = True
                break
            actions = agent.act(collector.obs)
            step, finished = collector.step(actions)
            averager.add(agent.observe(step))
            before, env_steps = env_steps, env_steps + collector.num_envs

            for episode in finished:
                recent_returns.append(episode.episode_return)
                logger.scalars({"charts/episodic_return": episode.episode_return,
                                "charts/episodic_length": episode.length}, env_steps)
            if crossed(before, env_steps, config.train.log_every):
                now = time.perf_counter()
                metrics = averager.pop_means()
                metrics["perf/sps"] = (env_steps - window_steps) / max(now - window_start, 1e-9)
                metrics["perf/ups"] = (agent.updates - window_updates) / max(now - window_start, 1e-9)
                if "regret" in step.info:
                    metrics["charts/cumulative_regret"] = collector.cumulative_regret
                logger.scalars(metrics, env_steps)
                window_start, window_steps, window_updates = now, env_steps, agent.updates
                postfix = {"sps": int(metrics["perf/sps"])}
                if recent_returns:
                    postfix["return"] = float(np.mean(recent_returns))
                logger.progress(env_steps, **postfix)
            if crossed(before, env_steps, config.train.eval_every) and env_steps < config.train.total_steps:
                last_eval = evaluate()
            if crossed(before, env_steps, config.train.checkpoint_every):
                save_checkpoint()
    except KeyboardInterrupt:
        interrupted = True

    if interrupted:
        path = save_checkpoint()
        logger.line(f"interrupted at step {env_steps}; checkpoint {path}; continue with: "
                    f"python -m rlscratch.train --resume {run_dir}")
        logger.close()
        evaluator.close()
        envs.close()
        return {"interrupted": True, "env_steps": env_steps, "run_dir": str(run_dir), "agent": agent}

    logger.progress(env_steps)
    last_eval = evaluate()
    save_checkpoint()
    elapsed = elapsed_before + time.perf_counter() - start_time
    summary = {"env_steps": env_steps, "episodes": collector.episodes, "updates": agent.updates,
               "seconds": elapsed, "eval_mean": last_eval.mean, "eval_std": last_eval.std,
               "run_dir": str(run_dir), "interrupted": False, "agent": agent}
    if "regret" in step.info:
        summary["cumulative_regret"] = collector.cumulative_regret
    logger.hparams(flatten_dict({"agent": dataclasses.asdict(agent_cfg), "seed": config.seed}),
                   {"eval_mean_return": last_eval.mean})
    logger.line(f"done: {env_steps} env steps in {elapsed:.1f} s ({env_steps / max(elapsed, 1e-9):.0f} steps/s, "
                f"{agent.updates} updates); final eval {last_eval.mean:.2f} ± {last_eval.std:.2f} over "
                f"{config.train.eval_episodes} episodes; run dir {run_dir}")
    logger.close()
    evaluator.close()
    envs.close()
    return summary


def load_run_config(run_dir: Path, overrides: list[str] = ()) -> tuple[RunConfig, dict]:
    """The resolved config a run directory was started with, plus any --set overrides."""
    from rlscratch.config import load_saved_config

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not an rlscratch run directory (no config.yaml)")
    return load_saved_config(path, overrides)


def load_trained_agent(run_dir: Path, checkpoint: Path | None = None,
                       ) -> tuple[RunConfig, Agent, ObservationNormalizer | None]:
    """Rebuild a run's agent from its config and a checkpoint (the latest unless one is named),
    with its observation normaliser if it used one -- for evaluation, videos and analysis."""
    config, _ = load_run_config(run_dir)
    path = checkpoint or CheckpointManager(run_dir / "checkpoints").latest()
    if path is None:
        raise CheckpointError(f"no checkpoint in {run_dir / 'checkpoints'}; train first or pass --checkpoint")
    arrays, meta = read_checkpoint(Path(path), LOOP_META)
    _check_meta(meta, config, Path(path))
    envs = make_vec_env(config.env, evaluation=True)
    observation_space, action_space = spaces_of(envs)
    envs.close()
    agent_seed, _, _ = np.random.SeedSequence(config.seed).spawn(3)
    agent = build_agent(config, EnvSpec(observation_space, action_space, config.env.num_envs), agent_seed)
    normalizer = make_obs_normalizer(config.env, observation_space)
    try:
        agent.load_state_dict(sub_state(arrays, "agent"))
        if normalizer is not None:
            normalizer.load_state_dict(sub_state(sub_state(arrays, "collector"), "normalizer"))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path} does not match this run's config: {err}") from None
    return config, agent, normalizer
