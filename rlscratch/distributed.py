"""MuZero with its self-play and reanalysis on Ray actors, the learner in this process.

``train.distributed: {self_play_workers: N, reanalyze_workers: M, address: ..., weight_sync_interval:
K, replay_ratio: R}`` in a MuZero config. One *round* is the loop's unit of work:

    dispatch   every self-play actor plays ``chunk_steps`` vector steps of its own envs, searching
               with the weights last broadcast; every reanalyze worker re-searches its share of the
               rows chosen for this round (with the same weights)
    learn      meanwhile, the learner here takes the gradient updates it owes for the data it holds
               (R per env step after warm-up) -- every K updates it puts its parameters into Ray's
               object store, and the next round's actors and workers read them from there
    collect    the actors' rows (in actor order) go into the learner's replay, each actor's envs in
               streams of their own; the reanalysed rows' values and policies are overwritten
    log / evaluate / checkpoint as due, exactly as the single-process loop (rlscratch.trainer)

**Replay-ratio throttle** (as EfficientZero's): acting never outruns learning. A round is dispatched
only once the learner has taken every update owed for the data collected before the previous round,
so the env steps acted (those in flight included) never exceed ``warmup + updates / R + 2 * round``
(one round being learned from, one being played). A learner slower than its actors makes them wait;
actors slower than the learner make it wait.

**Determinism and resume.** The rounds are in lockstep, so which weights each actor uses, the order
rows reach the replay, and every random draw are fixed by the seed: a run is reproducible whatever
the machines' speeds. A checkpoint is written between rounds (no actor busy) and holds the learner
(network, optimizer, replay, counters, generator), the last broadcast weights, and each actor's
state -- its search generator and its envs' replay log (rlscratch.collector) -- so a resumed run
ends with exactly the parameters of an uninterrupted one (tests/test_distributed.py).

Each round is also written as one JSON line to RUN_DIR/distributed.jsonl (what was acted, the
updates at dispatch, the weights' version and digest each actor used, its CPU and wall seconds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlscratch.agent import Agent, EnvSpec, agent_config, resolve_agent
from rlscratch.config import RunConfig, bounded, from_dict
from rlscratch.errors import CheckpointError, ConfigError
from rlscratch.lifecycle import DivergenceError, RunSession
from rlscratch.state import from_json_array, json_array, rng_state, set_rng_state, sub_state
from rlscratch.trainer import EnvLoop, Evaluator, crossed


@dataclass
class DistributedConfig:
    self_play_workers: int = bounded(1, ge=1, help="Ray actors playing games (each runs env.num_envs envs)")
    reanalyze_workers: int = bounded(0, ge=0, help="Ray actors re-searching stored rows (agent.reanalyze_fraction "
                                                   "of each batch); 0: the learner reanalyses inline")
    address: str | None = bounded(None, help="a Ray cluster (auto, HOST:PORT); null: start Ray here")
    cpus: int | None = bounded(None, ge=1, help="CPUs of a Ray started here (default: enough for every worker)")
    weight_sync_interval: int = bounded(10, ge=1, help="learner updates between weight broadcasts")
    replay_ratio: float | None = bounded(None, gt=0, help="gradient updates per env step; null: agent.train_ratio")
    chunk_steps: int = bounded(8, ge=1, help="vector steps each actor plays per round")


def digest(params: np.ndarray) -> str:
    """A short fingerprint of a parameter vector (the round log says which weights each actor used)."""
    return hashlib.sha1(np.ascontiguousarray(params).tobytes()).hexdigest()[:12]


def _acting_agent(config: RunConfig, spec: EnvSpec, rng: np.random.Generator) -> Agent:
    """A MuZero agent for searching only: its network receives the learner's weights; its replay and
    optimizer stay unused (the replay is made tiny)."""
    agent_cls = resolve_agent(config.agent["name"])
    cfg = dataclasses.replace(agent_config(agent_cls, config.agent), replay_capacity=2 * spec.num_envs)
    return agent_cls(cfg, spec, config.model, rng)


def _set_weights(agent: Agent, weights: np.ndarray) -> None:
    np.copyto(agent.net.flat_params, weights)  # in place: the search's fast-inference views stay valid


# -- the Ray actors (plain classes: ray.remote wraps them; the tests may also call them directly) ----
class SelfPlayActor:
    """Plays ``env.num_envs`` envs with the agent's search (root noise, visit-count temperature)."""

    def __init__(self, config: RunConfig, seed_sequence: np.random.SeedSequence) -> None:
        from rlscratch.collector import Collector
        from rlscratch.envs.factory import env_seeds, make_obs_normalizer, make_vec_env, spaces_of
        from rlscratch.muzero.mcts import MCTS

        agent_seed, env_seed = seed_sequence.spawn(2)
        self.envs = make_vec_env(config.env)
        observation_space, action_space = spaces_of(self.envs)
        spec = EnvSpec(observation_space, action_space, self.envs.num_envs)
        self.agent = _acting_agent(config, spec, np.random.default_rng(agent_seed))
        self.search = MCTS(self.agent.search_config, spec.n_actions)
        self.collector = Collector(self.envs, env_seeds(env_seed, self.envs.num_envs),
                                   make_obs_normalizer(config.env, observation_space))
        self.version = -1

    def play(self, steps: int, weights: np.ndarray, version: int, env_steps: int) -> dict:
        """``steps`` vector steps with these weights; the rows for the replay, stacked (steps, envs, ...).
        ``env_steps``: the run's count so far (the temperature schedule's clock)."""
        from rlscratch.muzero.mcts import select_action

        started, cpu = time.perf_counter(), time.process_time()
        agent = self.agent
        if version != self.version:
            _set_weights(agent, weights)
            self.version = version
        agent.env_steps = env_steps
        rows: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "root_value", "policy", "next_obs",
                                                 "terminated", "truncated", "final_value")}
        episodes = []
        for _ in range(steps):
            obs = np.asarray(self.collector.obs, dtype=np.float32).reshape(self.collector.num_envs, -1)
            result = self.search.run(agent.net, obs, agent.rng, True)
            action = result.action if result.action is not None else \
                select_action(result.visit_counts, agent.temperature(), agent.rng)
            step, finished = self.collector.step(action)
            next_obs = np.asarray(step.next_obs, dtype=np.float32).reshape(len(obs), -1)
            truncated = np.asarray(step.truncated) & ~np.asarray(step.terminated)
            final_value = np.zeros(len(obs), dtype=np.float32)
            if truncated.any():  # a truncated episode's value goes on past its final observation
                final_value = agent.net.initial_inference(next_obs)[2].astype(np.float32)
            for key, value in (("obs", obs), ("action", action), ("reward", step.reward),
                               ("root_value", result.root_value), ("policy", result.policy), ("next_obs", next_obs),
                               ("terminated", step.terminated), ("truncated", step.truncated),
                               ("final_value", final_value)):
                rows[key].append(np.asarray(value))
            episodes += [(e.episode_return, e.length) for e in finished]
        out: dict[str, Any] = {k: np.stack(v) for k, v in rows.items()}
        out.update(episodes=episodes, version=self.version, digest=digest(agent.net.flat_params),
                   cpu_seconds=time.process_time() - cpu, wall_seconds=time.perf_counter() - started)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"collector/{k}": v for k, v in self.collector.state_dict().items()}
        state["rng"] = rng_state(self.agent.rng)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.collector.load_state_dict(sub_state(state, "collector"))
        set_rng_state(self.agent.rng, state["rng"])

    def ping(self) -> int:
        return os.getpid()


class ReanalyzeWorker:
    """Re-runs the search (no root noise) for stored observations with the broadcast weights."""

    def __init__(self, config: RunConfig, spec: EnvSpec) -> None:
        from rlscratch.muzero.mcts import MCTS

        self.agent = _acting_agent(config, spec, np.random.default_rng(0))
        self.search = MCTS(self.agent.search_config, spec.n_actions)
        self.version = -1

    def reanalyze(self, obs: np.ndarray, weights: np.ndarray, version: int, seed: int) -> tuple[np.ndarray, ...]:
        if version != self.version:
            _set_weights(self.agent, weights)
            self.version = version
        result = self.search.run(self.agent.net, obs, np.random.default_rng(seed), False)
        return result.root_value, result.policy


class _Tally:
    """What the single-process loop's collector tells its log and summary: episodes finished."""

    def __init__(self) -> None:
        self.episodes = 0
        self.info_totals: dict[str, float] = {}


# -- the learner's loop ---------------------------------------------------------------------------------
class DistributedLoop(EnvLoop):
    """The trainer's env loop with a round of the actors as its unit of work (``_step``); evaluation,
    logging, the two ways out and the run's life around it are the single-process loop's own."""

    def __init__(self, session: RunSession, agent_cls: type[Agent], agent_cfg: Any,
                 seeds: tuple[np.random.SeedSequence, ...]) -> None:
        from rlscratch.envs.factory import make_obs_normalizer, make_vec_env, spaces_of

        agent_seed, env_seed, eval_seed = seeds
        self.session, self.config = session, session.config
        self.train_cfg = config = session.config.train
        self.dist = from_dict(DistributedConfig, config.distributed, "train.distributed")
        if not hasattr(agent_cfg, "reanalyze_fraction"):
            raise ConfigError(f"train.distributed runs MuZero agents (muzero, gumbel_muzero), not "
                              f"{self.config.agent['name']!r}; remove train.distributed")
        if self.dist.reanalyze_workers and agent_cfg.reanalyze_fraction == 0:
            raise ConfigError("train.distributed.reanalyze_workers needs agent.reanalyze_fraction > 0 "
                              "(the share of each batch they re-search); set it, or reanalyze_workers: 0")
        self.ratio = self.dist.replay_ratio or agent_cfg.train_ratio
        self.envs, self.evaluator, self.actors, self.workers = None, None, [], []
        self._own_ray = False
        try:
            probe = make_vec_env(self.config.env)
            observation_space, action_space = spaces_of(probe)
            probe.close()
            if make_obs_normalizer(self.config.env, observation_space) is not None:
                raise ConfigError("train.distributed: each actor would normalise observations with statistics of "
                                  "its own; remove normalize_observation from env.wrappers")
            n = self.dist.self_play_workers
            self.envs_per_actor = self.config.env.num_envs
            spec = EnvSpec(observation_space, action_space, n * self.envs_per_actor)
            # the learner reanalyses inline only when no workers do it
            learner_cfg = agent_cfg if not self.dist.reanalyze_workers else \
                dataclasses.replace(agent_cfg, reanalyze_fraction=0.0)
            self.agent = agent_cls(learner_cfg, spec, self.config.model, np.random.default_rng(agent_seed))
            self.reanalyze_fraction = agent_cfg.reanalyze_fraction
            self.collector = _Tally()
            self.evaluator = Evaluator(self.config, eval_seed, None)
            self._start_ray(n + self.dist.reanalyze_workers)
            import ray

            actor_cls = ray.remote(num_cpus=1)(SelfPlayActor)
            worker_cls = ray.remote(num_cpus=1)(ReanalyzeWorker)
            self.actors = [actor_cls.remote(self.config, s) for s in env_seed.spawn(n)]
            self.workers = [worker_cls.remote(self.config, spec) for _ in range(self.dist.reanalyze_workers)]
            ray.get([a.ping.remote() for a in self.actors])  # started (or failed) before the clock runs
            self.env_steps = self._restore()
        except BaseException:
            self.close()
            raise
        self._start_bookkeeping()
        self.rounds_log = (session.run_dir / "distributed.jsonl").open("a")

    def _start_ray(self, workers: int) -> None:
        import ray

        from rlscratch.ray_cluster import start_ray

        if ray.is_initialized():  # a caller's Ray (a test's, a notebook's): use it, leave it running
            return
        start_ray(self.dist.address, self.dist.cpus or max(os.cpu_count() or 1, workers))
        self._own_ray = True

    def _restore(self) -> int:
        import ray

        self.weights, self.version = self.agent.net.flat_params.copy(), 0
        resumed = self.session.resumed
        if resumed is not None:
            try:
                self.agent.load_state_dict(sub_state(resumed.arrays, "agent"))
                dist = sub_state(resumed.arrays, "distributed")
                self.weights, self.version = dist["weights"].copy(), int(dist["version"])
                self.collector.episodes = int(from_json_array(dist["episodes"]))
                ray.get([actor.load_state_dict.remote(sub_state(resumed.arrays, f"actor{i}"))
                         for i, actor in enumerate(self.actors)])
            except (KeyError, ValueError) as err:
                raise CheckpointError(f"{resumed.path} does not match this distributed config: {err}") from None
        self.weights_ref = ray.put(self.weights)
        self.session.check_config()
        steps = resumed.meta["env_steps"] if resumed else 0
        self.eval_pending = bool(resumed.meta.get("eval_pending")) if resumed else False
        self.best_return = resumed.meta.get("best_return") if resumed else None
        self.logger = self.session.start(self.train_cfg.total_steps, steps,
                                         f", env {self.config.env.id} x{self.envs_per_actor} on each of "
                                         f"{len(self.actors)} self-play actors, {len(self.workers)} reanalyze "
                                         f"workers, {self.train_cfg.total_steps} steps")
        self.window = (self.session.start_time, steps, self.agent.updates)
        return steps

    # -- one round --------------------------------------------------------------------------------
    def _broadcast(self) -> None:
        import ray

        self.weights, self.version = self.agent.net.flat_params.copy(), self.agent.updates
        self.weights_ref = ray.put(self.weights)

    def _learn(self) -> dict[str, float]:
        """The updates owed for the data held (the throttle: ``replay_ratio`` per env step after warm-up)."""
        agent, metrics = self.agent, {}
        while agent.train_credit >= 1.0:
            agent.train_credit -= 1.0
            metrics.update(agent.train_step())
            self.session.guard(self.env_steps, metrics)
            if agent.updates % self.dist.weight_sync_interval == 0:
                self._broadcast()
        return metrics

    def _dispatch_reanalysis(self) -> list:
        """Rows for the workers: ``reanalyze_fraction`` of the batches the learner is about to sample."""
        agent, c = self.agent, self.agent.config
        windows = int(round(self.reanalyze_fraction * c.batch_size * int(agent.train_credit)))
        if not self.workers or windows == 0 or agent.replay.steps_held == 0:
            return []
        sample = agent.replay.sample(windows, agent.rng, 1.0)  # (beta shapes only the weights, unused here)
        envs, slots = agent.replay.reanalyze_rows(sample.env, sample.start, windows, c.unroll_steps, c.td_steps,
                                                  agent.rng, stored_values=agent.target is None)
        jobs = []
        for part, worker in zip(np.array_split(np.arange(len(envs)), len(self.workers)), self.workers):
            if len(part):
                obs = agent.replay.obs[envs[part], slots[part]]
                seed = int(agent.rng.integers(2**63))
                jobs.append((envs[part], slots[part],
                             worker.reanalyze.remote(obs, self.weights_ref, self.version, seed)))
        return jobs

    def _step(self) -> None:
        import ray

        agent, session, cfg = self.agent, self.session, self.train_cfg
        chunk = self.dist.chunk_steps
        round_steps = chunk * self.envs_per_actor * len(self.actors)
        record = {"env_steps": self.env_steps, "acted": self.env_steps + round_steps, "updates": agent.updates,
                  "owed": agent.train_credit, "version": self.version, "broadcast_digest": digest(self.weights)}
        plays = [actor.play.remote(chunk, self.weights_ref, self.version, self.env_steps) for actor in self.actors]
        jobs = self._dispatch_reanalysis()
        metrics = self._learn()  # while the actors play
        results = ray.get(plays)
        reanalyzed = 0
        for envs, slots, job in jobs:  # before the new rows: a full ring may overwrite these slots
            values, policies = ray.get(job)
            agent.replay.refresh(envs, slots, values, policies)
            reanalyzed += len(envs)
        if jobs:
            metrics["train/reanalyzed_rows"] = float(reanalyzed)
        E = self.envs_per_actor
        for t in range(chunk):
            for i, rows in enumerate(results):
                if cfg.divergence_guard:
                    for quantity in ("next_obs", "reward"):
                        if not np.isfinite(rows[quantity][t]).all():
                            raise DivergenceError(f"a non-finite {quantity} from self-play actor {i} "
                                                  f"at step {self.env_steps}")
                agent.replay.add(rows["obs"][t], rows["action"][t], rows["reward"][t], rows["root_value"][t],
                                 rows["policy"][t], rows["next_obs"][t], rows["terminated"][t], rows["truncated"][t],
                                 rows["final_value"][t], envs=np.arange(i * E, (i + 1) * E))
        before, self.env_steps = self.env_steps, self.env_steps + round_steps
        agent.env_steps = self.env_steps
        # updates owed: replay_ratio per env step once warm-up is over (as MuZero.observe counts them)
        counted = max(0, self.env_steps - max(before, agent.config.warmup_steps))
        agent.train_credit += counted * self.ratio
        for rows in results:
            for episode_return, length in rows["episodes"]:
                self.collector.episodes += 1
                self.recent_returns.append(episode_return)
                self.logger.scalars({"charts/episodic_return": episode_return, "charts/episodic_length": length},
                                    self.env_steps)
        metrics["perf/actor_cpu_seconds"] = float(sum(r["cpu_seconds"] for r in results))
        metrics["dist/weights_version"] = float(self.version)
        self.averager.add(metrics)
        record.update(versions=[r["version"] for r in results], digests=[r["digest"] for r in results],
                      cpu_seconds=[r["cpu_seconds"] for r in results],
                      wall_seconds=[r["wall_seconds"] for r in results],
                      updates_after=agent.updates, reanalyzed=reanalyzed)
        self.rounds_log.write(json.dumps(record) + "\n")
        if crossed(before, self.env_steps, cfg.log_every):
            session.guard_modules(self.env_steps, agent.components())
            self._log()
        if crossed(before, self.env_steps, cfg.eval_every) and self.env_steps < cfg.total_steps:
            self.last_eval = self._evaluate()
        if crossed(before, self.env_steps, cfg.checkpoint_every) or session.checkpoint_due():
            self._save()

    def _save(self, finished: bool = False, best: bool = False):
        import ray

        arrays = {f"agent/{k}": v for k, v in self.agent.state_dict().items()}
        arrays.update({"distributed/weights": self.weights, "distributed/version": np.array(self.version),
                       "distributed/episodes": json_array(self.collector.episodes)})
        for i, state in enumerate(ray.get([actor.state_dict.remote() for actor in self.actors])):
            arrays.update({f"actor{i}/{k}": v for k, v in state.items()})
        stopped = self.solved.mean if finished and self.solved is not None else None
        path = self.session.save(self.env_steps, arrays, self.agent.components(), finished=finished, best=best,
                                 eval_pending=self.eval_pending, best_return=self.best_return,
                                 stopped_at_return=stopped)
        if not best:
            self.saved_at = self.env_steps
        self.rounds_log.flush()
        return path

    def close(self) -> None:
        if getattr(self, "rounds_log", None) is not None:
            self.rounds_log.close()
            self.rounds_log = None
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None
        if self.actors or self.workers:
            import ray

            for handle in [*self.actors, *self.workers]:
                ray.kill(handle)
            self.actors, self.workers = [], []
        if self._own_ray:
            import ray

            ray.shutdown()
            self._own_ray = False
