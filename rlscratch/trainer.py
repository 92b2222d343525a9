"""The training loop every env-interacting agent shares, with evaluation, logging and checkpoints.

    obs -> agent.act -> envs.step -> agent.observe -> (log | evaluate | checkpoint) -> repeat

One pass of that arrow is the loop's unit of work: a stop request (Ctrl-C, SIGTERM) is honoured
only between units, so a checkpoint never holds half an update burst or half a rollout. The run's
life around the loop -- the lock on its directory, resume, checkpoints, signals, closing -- is
rlscratch.lifecycle's. Agents that learn from a dataset instead of an environment (supervised
MNIST) implement ``Agent.train_offline(session)`` and get the same ``RunSession``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlscratch.agent import Agent, EnvSpec, agent_config, resolve_agent
from rlscratch.checkpoint import LOOP_META, CheckpointManager, read_checkpoint
from rlscratch.collector import Collector
from rlscratch.config import RunConfig, run_name
from rlscratch.envs.factory import env_seeds, make_obs_normalizer, make_vec_env, spaces_of
from rlscratch.envs.wrappers import ObservationNormalizer, env_reward
from rlscratch.errors import CheckpointError, ConfigError
from rlscratch.lifecycle import DivergenceError, RunSession
from rlscratch.logger import MetricAverager
from rlscratch.state import sub_state


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

    def run(self, agent: Agent, episodes: int, stop: Callable[[], bool] = lambda: False) -> EvalResult | None:
        """``episodes`` greedy episodes; None as soon as ``stop()`` says so (a Ctrl-C during evaluation)."""
        n = self.envs.num_envs
        quota = np.array([len(range(i, episodes, n)) for i in range(n)])
        played = np.zeros(n, dtype=np.int64)
        returns: list[list[float]] = [[] for _ in range(n)]
        running = np.zeros(n)
        obs, _ = self.envs.reset(seed=self.seeds)
        while np.any(played < quota):
            if stop():
                return None
            actions = agent.act(self._view(obs), explore=False)
            obs, reward, terminated, truncated, info = self.envs.step(actions)
            running += env_reward(reward, info)  # the env's own return, not a reward wrapper's
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
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--run-dir {path} is a file; choose another --run-dir")
        # A directory without config.yaml is a start that was killed before it got going: reuse it.
        if path.exists() and (path / "config.yaml").exists():
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


@contextmanager
def signals_ignored():
    """Async env workers are started with SIGINT/SIGTERM ignored (they inherit it), so a Ctrl-C in
    the terminal -- sent to the whole process group -- stops the trainer cleanly instead of killing
    the workers under it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (and only it gets the signals)
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- the loop -------------------------------------------------------------------------------------
def train(config: RunConfig, run_dir: Path, resume: bool = False, stop_at: int | None = None) -> dict:
    """Train as ``config`` says, writing into ``run_dir``. ``resume`` continues from the latest
    checkpoint there (or starts the run over if it has none yet). ``stop_at`` stops at that step as
    a Ctrl-C would: checkpoint and return. Returns a summary dict."""
    agent_seed, env_seed, eval_seed = np.random.SeedSequence(config.seed).spawn(3)
    agent_cls = resolve_agent(config.agent["name"])
    agent_cfg = agent_config(agent_cls, config.agent)
    with RunSession(config, agent_cfg, run_dir, resume) as session:
        if session.finished:
            session.check_config()
            meta = session.resumed.meta
            print(f"{run_dir} already finished ({meta['env_steps']} of train.total_steps "
                  f"{config.train.total_steps}); nothing to do -- to train longer: {session.resume_hint()} "
                  "--set train.total_steps=N", flush=True)
            return {"interrupted": False, "already_finished": True, "env_steps": meta["env_steps"],
                    "run_dir": str(run_dir)}
        try:
            if hasattr(agent_cls, "train_offline"):
                agent = agent_cls(agent_cfg, None, config.model, np.random.default_rng(agent_seed))
                return agent.train_offline(session)
            loop_cls = EnvLoop
            if config.train.distributed is not None:  # MuZero's self-play and reanalysis on Ray actors
                from rlscratch.distributed import DistributedLoop as loop_cls
            return loop_cls(session, agent_cls, agent_cfg, (agent_seed, env_seed, eval_seed)).run(stop_at)
        except DivergenceError as err:
            raise session.diverged(err) from None


class EnvLoop:
    """The env loop of one session: build, restore, then ``run`` unit after unit."""

    def __init__(self, session: RunSession, agent_cls: type[Agent], agent_cfg: Any,
                 seeds: tuple[np.random.SeedSequence, ...]) -> None:
        agent_seed, env_seed, eval_seed = seeds
        self.session = session
        self.config = config = session.config
        self.train_cfg = config.train
        with signals_ignored():
            self.envs = make_vec_env(config.env)
        self.evaluator: Evaluator | None = None
        try:
            observation_space, action_space = spaces_of(self.envs)
            spec = EnvSpec(observation_space, action_space, self.envs.num_envs)
            self.agent = agent_cls(agent_cfg, spec, config.model, np.random.default_rng(agent_seed))
            self.collector = Collector(self.envs, env_seeds(env_seed, self.envs.num_envs),
                                       make_obs_normalizer(config.env, observation_space))
            with signals_ignored():  # (the normaliser is restored in place below)
                self.evaluator = Evaluator(config, eval_seed, self.collector.normalizer)
            self.env_steps = self._restore()
        except BaseException:
            self.close()
            raise
        self._start_bookkeeping()

    def _start_bookkeeping(self) -> None:
        """What the loop tracks between units of work, from the step it goes on from."""
        self.averager = MetricAverager()
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.saved_at = self.env_steps if self.session.resumed else -1
        self.last_eval: EvalResult | None = None
        self.solved: EvalResult | None = None  # the evaluation that reached train.stop_at_return

    def _restore(self) -> int:
        """Load the latest checkpoint (if resuming), check the config, open the logger; the step to go on from."""
        resumed = self.session.resumed
        if resumed is not None:
            try:
                self.agent.load_state_dict(sub_state(resumed.arrays, "agent"))
                self.collector.load_state_dict(sub_state(resumed.arrays, "collector"))
            except (KeyError, ValueError) as err:
                raise CheckpointError(f"{resumed.path} does not match this agent/config: {err}") from None
        self.session.check_config()
        steps = resumed.meta["env_steps"] if resumed else 0
        self.eval_pending = bool(resumed.meta.get("eval_pending")) if resumed else False
        # The best evaluation's mean return so far (checkpoints/best.npz holds its parameters).
        self.best_return: float | None = resumed.meta.get("best_return") if resumed else None
        self.logger = self.session.start(self.train_cfg.total_steps, steps,
                                         f", env {self.config.env.id} x{self.envs.num_envs}, "
                                         f"{self.train_cfg.total_steps} steps")
        self.window = (self.session.start_time, steps, self.agent.updates)
        return steps

    # -- the units of work ----------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> dict:
        try:
            if self.eval_pending and self.env_steps < self.train_cfg.total_steps:
                # The one an interrupt cut short (the final one: below). Once done, the checkpoint on disk
                # (same step, eval pending, the agent's generators before it) no longer describes this run,
                # so a new one is written -- before the result is logged: a kill during that write must
                # not leave this step's evaluation in TensorBoard for the next resume to log again.
                self.last_eval = self._evaluate(checkpoint_before_logging=True)
            while self.env_steps < self.train_cfg.total_steps and self.solved is None:
                if self.session.should_stop() or (stop_at is not None and self.env_steps >= stop_at):
                    return self._interrupted()
                self._step()
            return self._finish(self.solved)
        finally:
            self.close()

    def _step(self) -> None:
        """One unit: act, step the envs, let the agent learn (its update burst, a rollout's
        learning phase), then log, evaluate and checkpoint as due."""
        agent, collector, session, cfg = self.agent, self.collector, self.session, self.train_cfg
        actions = agent.act(collector.obs)
        step, finished = collector.step(actions)
        before, self.env_steps = self.env_steps, self.env_steps + collector.num_envs
        if cfg.divergence_guard:
            for quantity, value in (("observation from the env", step.next_obs), ("reward", step.reward)):
                if not np.isfinite(value).all():
                    raise DivergenceError(f"a non-finite {quantity} at step {self.env_steps}")
        metrics = agent.observe(step)
        session.guard(self.env_steps, metrics)
        self.averager.add(metrics)
        for episode in finished:
            self.recent_returns.append(episode.episode_return)
            self.logger.scalars({"charts/episodic_return": episode.episode_return,
                                 "charts/episodic_length": episode.length}, self.env_steps)
        if crossed(before, self.env_steps, cfg.log_every):
            session.guard_modules(self.env_steps, agent.components())
            self._log()
        if crossed(before, self.env_steps, cfg.eval_every) and self.env_steps < cfg.total_steps:
            self.last_eval = self._evaluate()
        if crossed(before, self.env_steps, cfg.checkpoint_every) or session.checkpoint_due():
            self._save()

    def _log(self) -> None:
        now = time.perf_counter()
        start, steps, updates = self.window
        metrics = self.averager.pop_means()
        metrics["perf/sps"] = (self.env_steps - steps) / max(now - start, 1e-9)
        metrics["perf/ups"] = (self.agent.updates - updates) / max(now - start, 1e-9)
        # Env-specific running totals (a bandit's regret) arrive through `info`; see Collector.
        metrics.update({f"charts/cumulative_{k}": v for k, v in self.collector.info_totals.items()})
        self.logger.scalars(metrics, self.env_steps)
        self.window = (now, self.env_steps, self.agent.updates)
        postfix: dict[str, float] = {"sps": int(metrics["perf/sps"])}
        if self.recent_returns:
            postfix["return"] = float(np.mean(self.recent_returns))
        self.logger.progress(self.env_steps, **postfix)

    def _evaluate(self, checkpoint_before_logging: bool = False) -> EvalResult | None:
        """Greedy episodes; None if a stop was requested meanwhile. An interrupted evaluation is undone
        (the agent's random generators -- an evaluation may draw from them -- are put back) and marked
        pending in the checkpoint: the resumed run evaluates at the same step, with the same draws.
        ``checkpoint_before_logging``: write a resume checkpoint after the evaluation, before its result
        is logged (the pending evaluation of a resumed run)."""
        assert self.evaluator is not None
        generators = [obj for obj in self.agent.components().values() if isinstance(obj, np.random.Generator)]
        states = [g.bit_generator.state for g in generators]
        result = self.evaluator.run(self.agent, self.train_cfg.eval_episodes, self.session.should_stop)
        self.eval_pending = result is None
        if result is None:
            for generator, state in zip(generators, states):
                generator.bit_generator.state = state
            return None
        if not checkpoint_before_logging:
            self._log_evaluation(result)
        if self.best_return is None or result.mean > self.best_return:
            self.best_return = result.mean
            self._save(best=True)
        target = self.train_cfg.stop_at_return
        if target is not None and result.mean >= target:
            self.solved = result
        if checkpoint_before_logging:
            self._save()
            self._log_evaluation(result)
        return result

    def _log_evaluation(self, result: EvalResult) -> None:
        self.logger.scalars({"eval/mean_return": result.mean, "eval/std_return": result.std}, self.env_steps)
        self.logger.line(f"step {self.env_steps}: eval return {result.mean:.2f} ± {result.std:.2f} "
                         f"over {self.train_cfg.eval_episodes} episodes")

    def _save(self, finished: bool = False, best: bool = False) -> Path:
        """A checkpoint of the run at this step; ``best``: as checkpoints/best.npz (no resume point)."""
        arrays = {**{f"agent/{k}": v for k, v in self.agent.state_dict().items()},
                  **{f"collector/{k}": v for k, v in self.collector.state_dict().items()}}
        stopped = self.solved.mean if finished and self.solved is not None else None
        path = self.session.save(self.env_steps, arrays, self.agent.components(), finished=finished, best=best,
                                 eval_pending=self.eval_pending, best_return=self.best_return,
                                 stopped_at_return=stopped)
        if not best:
            self.saved_at = self.env_steps
        return path

    # -- the two ways out -----------------------------------------------------------------------
    def _interrupted(self) -> dict:
        if self.saved_at != self.env_steps:
            self._save()
        path = self.session.checkpoints.latest()
        signum = self.session.signals.signum
        cause = f" by {signal.Signals(signum).name}" if signum else ""
        self.logger.line(f"interrupted{cause} at step {self.env_steps}; checkpoint {path}; continue with: "
                         f"{self.session.resume_hint()}")
        return {"interrupted": True, "signal": signum, "env_steps": self.env_steps,
                "run_dir": str(self.session.run_dir), "agent": self.agent}

    def _finish(self, solved: EvalResult | None = None) -> dict:
        """The end: a final evaluation (unless ``solved``, the one that reached train.stop_at_return,
        just ran), the final checkpoint, the summary."""
        self.logger.progress(self.env_steps)
        last_eval = solved or self._evaluate()
        if last_eval is None:  # stopped during the final evaluation: save, evaluate on resume
            return self._interrupted()
        self._save(finished=True)
        if solved is not None:
            self.logger.line(f"stopped early at step {self.env_steps} of {self.train_cfg.total_steps}: eval return "
                             f"{solved.mean:.2f} reached train.stop_at_return {self.train_cfg.stop_at_return:g}")
        elapsed = self.session.elapsed()
        summary = {"env_steps": self.env_steps, "episodes": self.collector.episodes, "updates": self.agent.updates,
                   "seconds": elapsed, "eval_mean": last_eval.mean, "eval_std": last_eval.std,
                   "run_dir": str(self.session.run_dir), "interrupted": False, "agent": self.agent,
                   "stopped_early": solved is not None, "best_return": self.best_return}
        summary.update({f"cumulative_{k}": v for k, v in self.collector.info_totals.items()})
        self.logger.hparams_end({"eval_mean_return": last_eval.mean}, self.env_steps)
        self.logger.line(f"done: {self.env_steps} env steps in {elapsed:.1f} s "
                         f"({self.env_steps / max(elapsed, 1e-9):.0f} steps/s, {self.agent.updates} updates); "
                         f"final eval {last_eval.mean:.2f} ± {last_eval.std:.2f} over "
                         f"{self.train_cfg.eval_episodes} episodes; run dir {self.session.run_dir}")
        return summary

    def close(self) -> None:
        """Close the evaluation and training envs."""
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None
        if self.envs is not None:
            self.envs.close()
            self.envs = None


def load_run_config(run_dir: Path, overrides: list[str] = ()) -> tuple[RunConfig, dict]:
    """The resolved config a run directory was started with, plus any --set overrides."""
    from rlscratch.config import load_saved_config

    path = run_dir / "config.yaml"
    if not path.is_file():
        hint = (" -- it was stopped during start-up; start it again with --config CONFIG --run-dir "
                f"{run_dir}") if (run_dir / "run_id").is_file() else ""
        raise CheckpointError(f"{run_dir} is not an rlscratch run directory (no config.yaml){hint}")
    return load_saved_config(path, overrides)


def load_trained_agent(run_dir: Path, checkpoint: Path | None = None, best: bool = False,
                       ) -> tuple[RunConfig, Agent, ObservationNormalizer | None]:
    """Rebuild a run's agent from its config and a checkpoint (the latest unless one is named, or
    ``best``: checkpoints/best.npz, the best evaluation's), with its observation normaliser if it used
    one -- for evaluation, videos and analysis."""
    config, _ = load_run_config(run_dir)
    manager = CheckpointManager(run_dir / "checkpoints")
    if best:
        if checkpoint is not None:
            raise ConfigError("give either a checkpoint or best, not both")
        if not manager.best_path.is_file():
            raise CheckpointError(f"no best checkpoint in {run_dir / 'checkpoints'} (best.npz is written at each "
                                  "evaluation that beats the ones before); evaluate the latest checkpoint instead")
        checkpoint = manager.best_path
    path = checkpoint or manager.latest()
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
