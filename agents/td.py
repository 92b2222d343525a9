"""TD(lambda): learning the value function V^pi of a fixed behaviour policy pi -- prediction, not control.

    O_t --[Value]-> V_t => V_{t-1} * gamma + r_t                       (the project's notes)

Precisely, with r_{t+1} the reward of the step from s_t to s_{t+1}:

    delta_t = r_{t+1} + gamma * (1 - terminated) * V(s_{t+1}) - V(s_t)       the TD error
    z_t     = gamma * lambda * z_{t-1} + grad_theta V(s_t)                   accumulating eligibility trace
    theta  <- theta + alpha * delta_t * z_t                                  z = 0 at the start of each episode

* Semi-gradient: V(s_{t+1}) is evaluated with ``infer`` and held fixed -- it is the target, not a
  prediction, so no gradient flows through it (the "nograd" of the notes). With lambda = 0 the trace is
  just grad V(s_t) and the update is a gradient step on 1/2 (r + gamma V(s') - V(s))^2 with the target
  frozen: TD(0), the update DQN is built on.
* Accumulating traces: z *adds* the new gradient to the decayed old one, so a state visited twice in
  quick succession gets more than 1 (replacing traces would reset it to 1). lambda = 1 with gamma = 1
  and updates deferred to the end of the episode is Monte-Carlo.
* Linear/tabular (``value: linear``): V(s) = w . x(s), so grad V(s) = x(s) and no backward pass is
  needed. With one-hot x this is the table of Sutton & Barto, section 12.2: every state keeps a trace
  e(s) <- gamma lambda e(s) + 1[s = s_t] and every V(s) moves by alpha delta_t e(s). w starts at 0.
* Neural (``value: mlp``): grad V(s_t) comes from the MLP's hand-written backward pass with upstream
  gradient dV = 1. We keep the *backward view* (traces) rather than the forward view (lambda-returns
  over a truncated window): it stays online -- one update per step, no buffer, no delay of n steps --
  and because every parameter lives in one flat vector (rlscratch.nn.module), the trace is one vector
  per env, and "decay and add the gradient" and "step along delta z" are whole-vector operations. For a
  non-linear V neither view is the exact lambda-return algorithm (the weights change while the episode
  runs), so we choose the cheaper one. The cost: one backward pass per env and step (per-sample
  gradients; a batched backward would sum them).
* The step is handed to an optimizer as the gradient -mean_i delta_i z_i (the mean over parallel envs),
  so ``optim: {name: sgd, lr: alpha}`` is exactly the rule above, and ``adam`` rescales it per
  parameter (a heuristic with traces, common in practice).
* Terminated vs truncated: a termination ends the MDP, so V(s_{t+1}) counts as 0; a truncation (a time
  limit) does not, so we bootstrap from the true final observation. After either, the trace is cleared:
  the next state begins a new episode and owes nothing to this one.

Metrics: the TD error; the RMS error of V over all states when the env supplies true values (the random
walk puts ``true_values`` and ``state_observations`` in the info of a terminal step); and the RMS error of
the values predicted along each terminated episode against its Monte-Carlo returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.config import ModelConfig, bounded
from rlscratch.errors import ConfigError
from rlscratch.models import mlp
from rlscratch.optim_config import OptimConfig, finish_config, make_optimizer, optim_field


# -- pieces shared with the recurrent agent (agents/td_gru.py) -----------------------------------------
class BehaviourPolicy:
    """The fixed policy whose values are predicted: uniform over the actions, or the given probabilities.
    An env with a single action (the random walk) always gets action 0."""

    def __init__(self, action_space: gym.Space, probs: list[float] | None) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(f"TD prediction needs a discrete action space, the env has {action_space}")
        n = int(action_space.n)
        if probs is None:
            self.probs = np.full(n, 1.0 / n)
        else:
            p = np.asarray(probs, dtype=np.float64)
            if p.shape != (n,) or np.any(p < 0) or p.sum() <= 0:
                raise ConfigError(f"agent.action_probs: expected {n} non-negative numbers (one per action), "
                                  f"got {list(probs)}")
            self.probs = p / p.sum()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if len(self.probs) == 1:
            return np.zeros(n, dtype=np.int64)
        return rng.choice(len(self.probs), size=n, p=self.probs).astype(np.int64)


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_{t+1} + gamma G_{t+1}, backwards from G = 0 after the last reward (a terminated episode)."""
    returns = np.empty(len(rewards), dtype=np.float64)
    future = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        future = float(rewards[t]) + gamma * future
        returns[t] = future
    return returns


class EpisodeRecorder:
    """Per env, the values predicted along the current episode and its rewards. When an episode
    terminates, each prediction V(s_t) is compared with the return that actually followed, G_t.
    (A truncated episode's return is cut short, so it is not scored; nor is this saved in checkpoints:
    it only feeds a metric.)"""

    def __init__(self, num_envs: int, gamma: float) -> None:
        self.gamma = gamma
        self.values: list[list[float]] = [[] for _ in range(num_envs)]
        self.rewards: list[list[float]] = [[] for _ in range(num_envs)]

    def add(self, values: np.ndarray, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
            ) -> float | None:
        """Record one vector step; the RMS error over the episodes it terminated, or None."""
        errors = []
        for i in range(len(values)):
            self.values[i].append(float(values[i]))
            self.rewards[i].append(float(rewards[i]))
            if terminated[i]:
                errors.append(np.asarray(self.values[i]) - discounted_returns(np.asarray(self.rewards[i]), self.gamma))
            if terminated[i] or truncated[i]:
                self.values[i], self.rewards[i] = [], []
        if not errors:
            return None
        return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))


def prediction_error(agent: Agent, env: gym.Env, episodes: int, seed: int, against: str = "returns") -> float:
    """RMS error of ``agent.predict_episode`` over ``episodes`` held-out episodes of ``env`` (reset with
    seeds seed, seed + 1, ...), played by the agent's behaviour policy with a generator of its own (the
    agent's generators are not touched). ``against="returns"`` compares V(s_t) with the Monte-Carlo return
    G_t (truncated episodes are skipped: their returns are incomplete); ``"true_values"`` with the exact
    v(s_t) the env reports as ``info["true_value"]`` (the random walk does)."""
    if against not in ("returns", "true_values"):
        raise ValueError(f"against must be 'returns' or 'true_values', got {against!r}")
    rng = np.random.default_rng(seed)
    errors = []
    for k in range(episodes):
        obs, info = env.reset(seed=seed + k)
        observations, rewards, true_values = [obs], [], [info.get("true_value")]
        while True:
            obs, reward, terminated, truncated, info = env.step(int(agent.policy.sample(1, rng)[0]))
            rewards.append(reward)
            if terminated or truncated:
                break
            observations.append(obs)
            true_values.append(info.get("true_value"))
        if against == "true_values":
            if None in true_values:
                raise ValueError("the env does not report info['true_value']; use against='returns'")
            target = np.asarray(true_values, dtype=np.float64)
        elif terminated:
            target = discounted_returns(np.asarray(rewards), agent.config.gamma)
        else:
            continue
        errors.append(agent.predict_episode(np.asarray(observations)) - target)
    if not errors:
        raise ValueError("every held-out episode was truncated: no Monte-Carlo return to compare with")
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))


# -- TD(lambda) -----------------------------------------------------------------------------------------
@dataclass
class TDConfig:
    optim: OptimConfig = optim_field(name="sgd", lr=0.1)  # sgd with lr alpha: the rule above, exactly
    gamma: float = bounded(1.0, ge=0, le=1)
    lam: float = bounded(0.0, ge=0, le=1, help="lambda of the eligibility traces; 0 is TD(0)")
    value: str = bounded("linear", choices=("linear", "mlp"),
                         help="linear: V = w.x (a table on one-hot observations); mlp: the model: section")
    action_probs: list[float] | None = None  # the fixed behaviour policy; None: uniform

    def __post_init__(self) -> None:
        finish_config(self)  # the agent's optimizer defaults; every schedule states its length


class EligibilityTraces:
    """z (num_envs, P): one accumulating trace over the whole flat parameter vector per parallel env."""

    def __init__(self, num_envs: int, size: int, dtype: np.dtype) -> None:
        self.z = np.zeros((num_envs, size), dtype=dtype)

    def decay_and_add(self, decay: float, grads: np.ndarray) -> np.ndarray:
        """z <- decay * z + grad V(s_t)   (decay = gamma * lambda)."""
        self.z *= decay
        self.z += grads
        return self.z

    def clear(self, envs: np.ndarray) -> None:
        self.z[envs] = 0.0

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"z": self.z.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state["z"].shape != self.z.shape:
            raise ValueError(f"traces of shape {state['z'].shape} cannot load into {self.z.shape}")
        np.copyto(self.z, state["z"])


class TD(Agent):
    """TD(lambda) value prediction with accumulating traces; linear (tabular on one-hot) or an MLP."""

    Config = TDConfig

    def __init__(self, config: TDConfig, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.policy = BehaviourPolicy(spec.action_space, config.action_probs)
        self.eval_rng = rng.spawn(1)[0]  # evaluation episodes draw actions without disturbing training's stream
        if config.value == "linear":
            if model.notation is not None:
                raise ConfigError("model.notation: value: linear has no network to write; set agent.value: mlp")
            self.value = nn.Sequential(nn.Linear(spec.obs_dim, 1, rng, bias=False)).flatten()
            self.value.flat_params = 0.0  # V = 0 everywhere, as in Sutton & Barto's experiments
        else:
            self.value = mlp(spec.obs_dim, 1, model, rng, output_gain=1.0)
        self.optimizer = make_optimizer(config.optim, self.value)  # lr schedules: clock updates
        self.traces = EligibilityTraces(spec.num_envs, self.value.num_params(), self.value.dtype)
        self.recorder = EpisodeRecorder(spec.num_envs, config.gamma)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        return self.policy.sample(len(obs), self.rng if explore else self.eval_rng)

    def values(self, obs: np.ndarray) -> np.ndarray:
        """V(s) for a batch of observations (no caches kept)."""
        return self.value.infer(obs.reshape(len(obs), -1))[:, 0]

    def value_gradients(self, x: np.ndarray) -> np.ndarray:
        """grad_theta V(s_i) for each row x_i of the batch, as rows (N, P) of the flat parameter vector."""
        if self.config.value == "linear":
            return x  # V = w . x  =>  dV/dw = x  (and the flat vector is w itself)
        grads = np.empty((len(x), self.value.num_params()), dtype=self.value.dtype)
        for i in range(len(x)):  # one backward per sample: a batched backward would sum the gradients
            self.value.zero_grad()
            self.value.forward(x[i:i + 1])
            self.value.backward(np.ones((1, 1), dtype=self.value.dtype))
            grads[i] = self.value.flat_grads
        return grads

    def observe(self, step: Step) -> dict[str, float]:
        cfg = self.config
        n = len(step.obs)
        x = step.obs.reshape(n, -1).astype(self.value.dtype)
        # V(s_t) and V(s_{t+1}) in one pass; V(s_{t+1}) is the target: held fixed, no gradient through it
        both = self.values(np.concatenate([x, step.next_obs.reshape(n, -1)]))
        v, v_next = both[:n], both[n:]
        delta = step.reward + cfg.gamma * (1.0 - step.terminated) * v_next - v
        z = self.traces.decay_and_add(cfg.gamma * cfg.lam, self.value_gradients(x))
        # theta <- theta + alpha * mean_i delta_i z_i, handed to the optimizer as a gradient to descend
        self.value.flat_grads = (delta @ z) * (-1.0 / n)
        self.optimizer.step()
        if step.done.any():
            self.traces.clear(step.done)  # a new episode starts with z = 0
        self.updates += 1

        metrics = {"td/error": float(delta.sum()) / n, "td/abs_error": float(np.abs(delta).sum()) / n}
        mc_error = self.recorder.add(v, step.reward, step.terminated, step.truncated)
        if mc_error is not None:
            metrics["value/mc_rms_error"] = mc_error
        if "true_values" in step.info:  # measured after the update that ended the episode, as in the book
            i = int(np.flatnonzero(step.info["_true_values"])[0])
            metrics["value/rms_error"] = self.rms_error(step.info["state_observations"][i],
                                                        step.info["true_values"][i])
        return metrics

    def rms_error(self, observations: np.ndarray, true_values: np.ndarray) -> float:
        """sqrt(mean_s (V(s) - v_pi(s))^2) over the given states (the random walk's 19, say)."""
        return float(np.sqrt(np.mean((self.values(observations) - true_values) ** 2)))

    def predict_episode(self, observations: np.ndarray) -> np.ndarray:
        """V(s_t) along one episode's observations (T, *obs_shape) -- the same as values(): no memory."""
        return self.values(observations)

    def components(self) -> dict:
        return {"rng": self.rng, "eval_rng": self.eval_rng, "value": self.value, "optimizer": self.optimizer,
                "traces": self.traces}


# -- command line: held-out prediction error of a trained run ---------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """python -m rlscratch.agents.td RUN_DIR [--episodes N] [--against returns|true_values] [--seed S]"""
    import argparse
    from pathlib import Path

    from rlscratch.envs.factory import make_env

    from rlscratch.trainer import load_trained_agent

    parser = argparse.ArgumentParser(prog="python -m rlscratch.agents.td",
                                     description="RMS value-prediction error of a trained td/td_gru run on "
                                                 "held-out episodes (its latest checkpoint)")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--against", choices=("returns", "true_values"), default="returns")
    parser.add_argument("--seed", type=int, default=1_000_000, help="first reset seed of the held-out episodes")
    args = parser.parse_args(argv)
    config, agent, normalizer = load_trained_agent(args.run_dir)
    if normalizer is not None:
        raise SystemExit("this run normalises observations; held-out evaluation does not support that yet")
    env = make_env(config.env, evaluation=True)
    error = prediction_error(agent, env, args.episodes, args.seed, args.against)
    print(f"{args.run_dir}: RMS error against {args.against.replace('_', ' ')} over {args.episodes} held-out "
          f"episodes: {error:.4f}")


if __name__ == "__main__":
    main()
