"""An agent written in the arrow notation: the notes' RL programs (TD, TD with a GRU, A2C, A2C with GAE,
DQN) run on Gymnasium environments through the ordinary trainer.

The program (``agent.program``: a file, or one shipped in rlscratch/notation/programs/) holds the whole
algorithm -- networks, targets, losses -- plus a few interaction lines (rlscratch/notation/interaction.py)
that say how the agent meets the world. This file only does what those lines say:

    reset() -> O_1 / step(a_t) -> O_{t+1}, r_t, d_t      the trainer's vector env does these
    sample(pi_t) -> a_t          a_t ~ pi_t (greedy in evaluation)
    epsilon_greedy(q_t) -> a_t   a random action with probability epsilon, else argmax_a q_t
    behave() -> a_t              a fixed uniform behaviour policy (TD prediction)

    on-policy (no replay lines), every n_steps vector steps (or at the end of each episode: n_steps 0):
        O = O_1 .. O_{T+1} (T, N, obs), a, r, d = the rollout      a truncated step: r_t += gamma V(final obs), d_t = 1
        loss = forward_backward_loss(O, targets=(a, r, d)); optimizer step   (the program's => and $ losses, clip_grad)

    replay (Add_B / Get_B lines), every train_freq env steps once learning_starts have passed, gradient_steps times:
        Add_B(...)  -> rlscratch.buffers.ReplayBuffer.add (n-step returns folded there: r_t = G, g_t = gamma^m or 0)
        Get_B()     -> a batch as sequences of length T = 1: O = (obs, next_obs), a, r, g
        loss = forward_backward_loss(O, targets=(a, r, g)); optimizer step
        copy(Q_k) -> T_k every target_update_interval updates (tau < 1: Polyak averaging)

The maths -- a `$` objective as a policy gradient, `=>` as semi-gradient regression, nograd targets, GAE
backwards in time -- is the compiler's (docs/notation.md), and ``python -m rlscratch.notation FILE``
prints each program's derived backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.buffers import ReplayBuffer
from rlscratch.config import ModelConfig, bounded
from rlscratch.errors import ConfigError
from rlscratch.notation import NotationError, compile_program
from rlscratch.notation.interaction import Rollout, read_program, split_agent_program
from rlscratch.optim_config import (
    OptimConfig,
    Schedule,
    ScheduleSpec,
    finish_config,
    make_optimizer,
    optim_field,
    schedule_field,
)


@dataclass
class NotationAgentConfig:
    program: str = bounded("a2c_gae.arrow", help="an agent program: a file, or a shipped one (a2c.arrow, ...)")
    optim: OptimConfig = optim_field(name="adam", lr=1e-3)
    value: str = bounded("V", help="on-policy: the state a truncated episode bootstraps from ('' for none)")
    n_steps: int = bounded(8, ge=0, help="on-policy: vector steps per update; 0: one whole episode (num_envs 1)")
    # replay programs (Add_B / Get_B)
    n_step: int = bounded(1, ge=1, help="rewards summed before bootstrapping (Get_B's r_t and g_t)")
    buffer_size: int = bounded(100_000, ge=1)
    batch_size: int = bounded(64, ge=1)
    learning_starts: int = bounded(1000, ge=0, help="env steps before the first update")
    train_freq: int = bounded(4, ge=1, help="env steps between training rounds")
    gradient_steps: int = bounded(1, ge=1, help="gradient updates per training round")
    target_update_interval: int = bounded(1000, ge=1, help="updates between copy(...) of the target parameters")
    tau: float = bounded(1.0, gt=0, le=1, help="1: hard copy; below 1: Polyak averaging")
    epsilon: ScheduleSpec = schedule_field(1.0, 0.05, 10_000, help="epsilon_greedy's probability of a random action")

    def __post_init__(self) -> None:
        finish_config(self)


class NotationAgent(Agent):
    Config = NotationAgentConfig
    counters = ("updates", "env_steps")

    def __init__(self, config: NotationAgentConfig, spec: EnvSpec, model: ModelConfig,
                 rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        c = config
        if model.notation is not None:
            raise ConfigError("model.notation: the notation agent's networks are written in agent.program; "
                              "drop model.notation")
        self.env_steps = 0
        self.n_actions = spec.n_actions
        try:
            path, text = read_program(c.program)
            self.program = p = split_agent_program(text)
            sizes = {p.obs: spec.obs_dim} | ({p.acted_on: self.n_actions} if p.acted_on else {})
            self.model = compile_program(p.network, rng, sizes=sizes, tied=p.targets)
            wanted = [f"{name}_t" for name in (p.acted_on, c.value if not p.replay else "") if name]
            if any(name not in self.model.outputs for name in wanted):
                self.model = compile_program(p.network, rng, sizes=sizes, tied=p.targets,
                                             outputs=list(dict.fromkeys(self.model.outputs + wanted)))
        except NotationError as err:
            raise ConfigError(f"agent.program: {c.program}: {err}") from None
        if self.model.inputs != [p.obs]:
            raise ConfigError(f"agent.program: {path}: acting reads only {p.obs}, but the outputs need "
                              f"{', '.join(self.model.inputs)}")
        if c.n_steps == 0 and spec.num_envs != 1 and not p.replay:
            raise ConfigError("agent.n_steps: 0 (whole episodes) needs env.num_envs: 1")
        self.model.input_grad = False  # observations are data
        self.gamma = p.constants.get("gamma")
        if self.gamma is None and (p.replay or c.value):
            raise ConfigError(f"agent.program: {path}: bind the discount, e.g. '0.99 -> gamma' (replay and "
                              "truncated episodes need it)")
        self.optimizer = make_optimizer(c.optim, self.model, lambda: self.env_steps)
        self.epsilon_schedule = Schedule(c.epsilon, "agent.epsilon")
        self.params = {name: spec_.module for name, spec_ in self.model.analysis.params.items()}
        self.copy_targets(1.0)  # the target network starts as the online one
        if p.replay:
            self.buffer = ReplayBuffer(c.buffer_size, (spec.obs_dim,), np.float32,
                                       action_dtype=np.min_scalar_type(self.n_actions - 1), num_envs=spec.num_envs,
                                       n_step=c.n_step, gamma=self.gamma)
        else:
            self.buffer = Rollout()

    # -- acting ------------------------------------------------------------------------------------
    def output(self, name: str, obs: np.ndarray) -> np.ndarray:
        """One output of the program (pi, q, V) on one step of observations: (N, K)."""
        x = obs.reshape(1, len(obs), -1).astype(self.model.dtype)  # a sequence of length 1
        return self.model.infer(x, only=[name + "_t"])[0]

    @property
    def epsilon(self) -> float:
        return self.epsilon_schedule(self.env_steps, self.updates)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        n, p = len(obs), self.program
        if p.act == "behave":  # uniform; one action (the random walk) draws nothing, like agents/td.py
            return np.zeros(n, np.int64) if self.n_actions == 1 else self.rng.integers(0, self.n_actions, n)
        if p.act == "epsilon_greedy" and explore:
            random_mask = self.rng.random(n) < self.epsilon
            random_actions = (self.rng.random(n) * self.n_actions).astype(np.int64)
            if random_mask.all():
                return random_actions
            greedy = self.output(p.acted_on, obs).argmax(axis=1)
            return np.where(random_mask, random_actions, greedy)
        values = self.output(p.acted_on, obs)
        if not explore or p.act == "epsilon_greedy":
            return values.argmax(axis=1)
        # a_t ~ pi_t: the first action whose cumulative probability passes a uniform draw
        u = self.rng.random(n)[:, None] * values.sum(axis=1, keepdims=True)
        return np.minimum((values.cumsum(axis=1) < u).sum(axis=1), self.n_actions - 1)

    # -- learning ------------------------------------------------------------------------------------
    def observe(self, step: Step) -> dict[str, float]:
        n = len(step.reward)
        self.env_steps += n
        if self.program.replay:
            return self.observe_replay(step, n)
        rewards = step.reward.astype(np.float64)
        cut = step.truncated & ~step.terminated
        if cut.any() and self.config.value:  # the time limit cut a future that still had value
            rewards[cut] += self.gamma * self.output(self.config.value, step.next_obs[cut])[:, 0]
        self.buffer.add(step.obs.reshape(n, -1), step.action, rewards, step.terminated | step.truncated)
        full = len(self.buffer) == self.config.n_steps if self.config.n_steps else bool(step.done.any())
        metrics = self.learn(step.next_obs.reshape(n, -1)) if full else {}
        return metrics | self.truth_metrics(step)  # measured after the update that ended the episode, as td.py

    def learn(self, next_obs: np.ndarray) -> dict[str, float]:
        """One gradient step on the rollout: the program's losses over t = 1..T."""
        p, data = self.program, self.buffer.arrays()
        obs = np.concatenate([data["obs"], next_obs[None]]).astype(self.model.dtype)  # O_1 .. O_{T+1}
        self.buffer.clear()
        return self.step_on(obs, {p.action: data["actions"], p.reward: data["rewards"].astype(self.model.dtype),
                                  p.done: data["dones"].astype(self.model.dtype)})

    def observe_replay(self, step: Step, n: int) -> dict[str, float]:
        c = self.config
        self.buffer.add(step.obs.reshape(n, -1), step.action, step.reward, step.next_obs.reshape(n, -1),
                        step.terminated, step.truncated)
        metrics = {"train/epsilon": self.epsilon}
        before = self.env_steps - n
        if self.env_steps >= c.learning_starts and self.env_steps // c.train_freq > before // c.train_freq:
            losses = []
            for _ in range(c.gradient_steps):
                batch = self.buffer.sample(c.batch_size, self.rng)
                obs = np.stack([batch.obs, batch.next_obs]).astype(self.model.dtype)  # O_1, O_2: T = 1
                p = self.program
                losses.append(self.step_on(obs, {p.action: batch.actions[None], p.reward: batch.rewards[None],
                                                 p.discount: batch.discounts[None]})["loss/program"])
                if self.updates % c.target_update_interval == 0:
                    self.copy_targets(c.tau)
            metrics["loss/program"] = float(np.mean(losses))
        return metrics

    def step_on(self, obs: np.ndarray, data: dict[str, np.ndarray]) -> dict[str, float]:
        lr = self.optimizer.lr
        self.model.zero_grad()
        loss = self.model.forward_backward_loss(obs, targets={name: data[name] for name in self.model.targets})
        self.optimizer.step()
        self.updates += 1
        return {"loss/program": loss, "train/lr": lr}

    def copy_targets(self, tau: float) -> None:
        """copy(Q_k) -> T_k: theta_T <- tau theta_Q + (1 - tau) theta_T."""
        for copy, source in self.program.targets.items():
            dst, src = self.params[copy].params, self.params[source].params
            for key in dst:
                dst[key] *= 1.0 - tau
                dst[key] += tau * src[key]

    def truth_metrics(self, step: Step) -> dict[str, float]:
        """The random walk reports its true values at an episode's end: the RMS error of V over all states."""
        if "true_values" not in step.info or not self.config.value:
            return {}
        i = int(np.flatnonzero(step.info["_true_values"])[0])
        values = self.output(self.config.value, step.info["state_observations"][i])[:, 0]
        return {"value/rms_error": float(np.sqrt(np.mean((values - step.info["true_values"][i]) ** 2)))}

    def components(self) -> dict:
        return {"rng": self.rng, "model": self.model, "optimizer": self.optimizer, "buffer": self.buffer}
