"""TD learning with a GRU encoder: value prediction when the observation is not the state.

    O_t, h_{t-1} --[Enc]-> h_t                 a GRU (rlscratch.nn.GRUCell); h = 0 at every episode start
    h_t --[Value]-> V_t                         an MLP head (the model: section)
    V_t => G_t                                  G_t held fixed (semi-gradient, as in agents/td.py)

When a single observation does not determine the future, V(O_t) cannot be right; the GRU's h_t
summarises the history O_0..O_t, and V(h_t) can. The random walk seen only through its moves
(configs/td_gru_random_walk_moves.yaml) is such a task with known true values: the position is the sum
of the moves so far. (CartPole without its velocities is another: a pole at angle 0.1 may be falling or
recovering.) ``encoder: mlp`` is the same agent without memory -- h_t = tanh(W O_t + b), the same width,
no h_{t-1} -- so td_gru_* and td_mlp_* configs differ in that alone.

Training: truncated backpropagation through time over chunks. Every ``chunk`` = T vector steps, the
agent unrolls the encoder over the T transitions of all N envs (xs: (T, N, obs)) from the state it
carried over from the previous chunk -- the state is a plain array, so the gradient stops there --
zeroing an env's state wherever an episode begins (Recurrent's ``resets``), and minimises

    L = 1/(T N) sum_{t,n} (V_t - G_t)^2

with the targets, computed without gradient from the same unroll,

    V'_t = Value(GRU(O_{t+1}, h_t))                          the value of the observation the step led to
    G_t  = r_{t+1} + gamma (1 - terminated_t) [(1 - lambda c_t) V'_t + lambda c_t G_{t+1}]

where c_t = 1 while the episode and the chunk both continue after step t, else 0. lambda = 0 is TD(0),
G_t = r + gamma V'_t; lambda > 0 is the lambda-return truncated at the chunk's end (the forward view;
agents/td.py uses the backward view with traces: here a whole chunk is at hand anyway, and the
lambda-return lets the reward at an episode's end reach early steps within one update). Using O_{t+1}
for V'_t treats every step alike: inside an episode it equals V_{t+1}; at the end of an episode it is the
value of the true final observation (what a truncation bootstraps from, and what a termination zeroes);
at the end of the chunk it bootstraps beyond it. The backward pass is the value head's, then BPTT
through the GRU (Recurrent.backward), all by hand; the loss's gradient is checked against finite
differences in tests/test_td.py.

The behaviour policy is fixed (uniform, or ``action_probs``), as in agents/td.py: this is prediction.
Metrics: the TD loss, the mean |G_t - V_t|, and the RMS error of the values predicted along each
terminated episode against its Monte-Carlo returns. ``rlscratch.agents.td.prediction_error`` scores the
agent on held-out episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.config import ModelConfig, bounded
from rlscratch.models import mlp
from rlscratch.optim_config import OptimConfig, finish_config, make_optimizer, optim_field

from .td import BehaviourPolicy, EpisodeRecorder


@dataclass
class RecurrentTDConfig:
    # With noisy targets a constant step size keeps the error jittering: the configs decay it to 0
    # (clock: updates -- one update per chunk of chunk x num_envs env steps).
    optim: OptimConfig = optim_field(name="adam", lr=1e-3, max_grad_norm=1.0)
    gamma: float = bounded(0.9, ge=0, le=1)
    lam: float = bounded(0.0, ge=0, le=1, help="lambda of the returns within a chunk; 0 is TD(0)")
    encoder: str = bounded("gru", choices=("gru", "mlp"), help="mlp: the memoryless ablation h_t = tanh(W O_t + b)")
    hidden_size: int = bounded(32, ge=1, help="width of h_t")
    chunk: int = bounded(16, ge=1, help="T: vector steps per update, and the length backpropagated through")
    action_probs: list[float] | None = None  # the fixed behaviour policy; None: uniform

    def __post_init__(self) -> None:
        finish_config(self)  # the agent's optimizer defaults; every schedule states its length


class Memoryless(nn.Module):
    """The ablation of the GRU encoder: h_t = tanh(O_t W^T + b) -- the same width, no h_{t-1}. It takes
    and returns what Recurrent does (h0 and resets are ignored: there is no state to carry or reset)."""

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator, dtype=np.float32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, n_hidden, rng, init="xavier", dtype=dtype), nn.Tanh())
        self.final_state = None

    def forward(self, xs: np.ndarray, h0: np.ndarray | None = None, resets: np.ndarray | None = None) -> np.ndarray:
        steps, batch = xs.shape[:2]
        return self.net.forward(xs.reshape(steps * batch, -1)).reshape(steps, batch, -1)

    def infer(self, xs: np.ndarray, h0: np.ndarray | None = None, resets: np.ndarray | None = None) -> np.ndarray:
        steps, batch = xs.shape[:2]
        return self.net.infer(xs.reshape(steps * batch, -1)).reshape(steps, batch, -1)

    def backward(self, dhs: np.ndarray) -> tuple[np.ndarray, None]:
        steps, batch, width = dhs.shape
        return self.net.backward(dhs.reshape(steps * batch, width)).reshape(steps, batch, -1), None


class RecurrentValueNet(nn.Module):
    """Encoder over a sequence, then the value head on every h_t: xs (T, N, obs) -> V (T, N).

    Backward: dL/dV (T, N) -> the head's backward on all T N states at once -> dL/dh_t (T, N, H) ->
    the encoder's backward (BPTT for the GRU). dL/dh0 is dropped: h0 came from the previous chunk."""

    def __init__(self, encoder: nn.Recurrent | Memoryless, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, xs: np.ndarray, h0: np.ndarray | None, resets: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(V (T, N), h (T, N, H)); the encoder's final_state is the state to carry to the next chunk."""
        hs = self.encoder.forward(xs, h0, resets)
        steps, batch, width = hs.shape
        return self.head.forward(hs.reshape(steps * batch, width)).reshape(steps, batch), hs

    def infer(self, xs: np.ndarray, h0: np.ndarray | None = None, resets: np.ndarray | None = None) -> np.ndarray:
        hs = self.encoder.infer(xs, h0, resets)
        steps, batch, width = hs.shape
        return self.head.infer(hs.reshape(steps * batch, width)).reshape(steps, batch)

    def backward(self, dvalues: np.ndarray) -> None:
        steps, batch = dvalues.shape
        dhs = self.head.backward(dvalues.reshape(steps * batch, 1))
        self.encoder.backward(dhs.reshape(steps, batch, -1))

    def next_values(self, xs: np.ndarray, hs: np.ndarray) -> np.ndarray:
        """Value(Enc(x_i, h_i)) for a batch of (observation, previous state) pairs, keeping nothing."""
        if isinstance(self.encoder, nn.Recurrent):
            h_next = self.encoder.cell.infer(xs, hs)
        else:
            h_next = self.encoder.net.infer(xs)
        return self.head.infer(h_next)[:, 0]


class Chunk:
    """The transitions gathered for the next update, time-major (T, N, ...), and the recurrent state
    they start from. Preallocated, and saved in checkpoints, so a resumed run continues mid-chunk."""

    def __init__(self, steps: int, num_envs: int, obs_dim: int, hidden: int, dtype) -> None:
        self.obs = np.zeros((steps, num_envs, obs_dim), dtype=dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.reward = np.zeros((steps, num_envs))
        self.terminated = np.zeros((steps, num_envs), dtype=bool)
        self.truncated = np.zeros((steps, num_envs), dtype=bool)
        self.starts = np.zeros((steps, num_envs), dtype=bool)  # obs[t] begins an episode: reset h first
        self.h0 = np.zeros((num_envs, hidden), dtype=dtype)  # the state before obs[0]
        self.next_starts = np.ones(num_envs, dtype=bool)  # does the next step's obs begin an episode?
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size == len(self.obs)

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated

    def add(self, step: Step) -> None:
        t, n = self.size, len(step.obs)
        self.obs[t] = step.obs.reshape(n, -1)
        self.next_obs[t] = step.next_obs.reshape(n, -1)
        self.reward[t] = step.reward
        self.terminated[t] = step.terminated
        self.truncated[t] = step.truncated
        self.starts[t] = self.next_starts
        self.next_starts = step.done.copy()
        self.size += 1

    _arrays = ("obs", "next_obs", "reward", "terminated", "truncated", "starts", "h0", "next_starts")

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**{name: getattr(self, name).copy() for name in self._arrays}, "size": np.array(self.size)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self._arrays:
            if state[name].shape != getattr(self, name).shape:
                raise ValueError(f"chunk array '{name}' has shape {state[name].shape}, "
                                 f"this agent's is {getattr(self, name).shape}")
            np.copyto(getattr(self, name), state[name])
        self.size = int(state["size"])


class RecurrentTD(Agent):
    """TD(0)/truncated-TD(lambda) prediction with a GRU (or, as the ablation, memoryless) encoder."""

    Config = RecurrentTDConfig

    def __init__(self, config: RecurrentTDConfig, spec: EnvSpec, model: ModelConfig,
                 rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.policy = BehaviourPolicy(spec.action_space, config.action_probs)
        self.eval_rng = rng.spawn(1)[0]
        if config.encoder == "gru":
            encoder = nn.Recurrent(nn.GRUCell(spec.obs_dim, config.hidden_size, rng))
        else:
            encoder = Memoryless(spec.obs_dim, config.hidden_size, rng)
        self.net = RecurrentValueNet(encoder, mlp(config.hidden_size, 1, model, rng, output_gain=1.0)).flatten()
        self.optimizer = make_optimizer(config.optim, self.net)  # lr schedules: clock updates
        self.chunk = Chunk(config.chunk, spec.num_envs, spec.obs_dim, config.hidden_size, self.net.dtype)
        self.recorder = EpisodeRecorder(spec.num_envs, config.gamma)

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        return self.policy.sample(len(obs), self.rng if explore else self.eval_rng)

    def observe(self, step: Step) -> dict[str, float]:
        self.chunk.add(step)
        return self.learn() if self.chunk.full else {}

    def td_targets(self, hs: np.ndarray) -> np.ndarray:
        """G (T, N) for the chunk, from the unroll's states hs (T, N, H); no gradient (see the docstring)."""
        c, gamma, lam = self.chunk, self.config.gamma, self.config.lam
        steps, batch, width = hs.shape
        v_next = self.net.next_values(c.next_obs.reshape(steps * batch, -1),
                                      hs.reshape(steps * batch, width)).reshape(steps, batch)
        carry_on = ~c.done  # the lambda-return continues into step t+1 only inside an episode...
        carry_on[-1] = False  # ...and inside the chunk
        targets = np.empty((steps, batch))
        future = np.zeros(batch)  # G_{t+1}
        for t in range(steps - 1, -1, -1):
            mix = lam * carry_on[t]
            future = c.reward[t] + gamma * (1.0 - c.terminated[t]) * ((1.0 - mix) * v_next[t] + mix * future)
            targets[t] = future
        return targets

    def compute_gradients(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Unroll the chunk, build its targets, backpropagate L: afterwards ``net.flat_grads`` = dL/dtheta.
        Returns (L, V, G)."""
        c = self.chunk
        values, hs = self.net.forward(c.obs, c.h0, c.starts)
        targets = self.td_targets(hs)
        loss, dvalues = nn.mse(values.ravel(), targets.ravel())
        self.net.zero_grad()
        self.net.backward(dvalues.reshape(values.shape))
        return loss, values, targets

    def learn(self) -> dict[str, float]:
        loss, values, targets = self.compute_gradients()
        max_norm = self.config.optim.max_grad_norm
        grad_norm = (nn.clip_grad_norm(self.net.flat_grads, max_norm) if max_norm
                     else float(np.linalg.norm(self.net.flat_grads)))
        self.optimizer.step()
        self.updates += 1
        c = self.chunk
        if self.net.encoder.final_state is not None:
            np.copyto(c.h0, self.net.encoder.final_state)  # truncated BPTT: carry the state, not its gradient
        c.size = 0

        metrics = {"loss/td": loss, "td/abs_error": float(np.abs(targets - values).mean()),
                   "train/grad_norm": grad_norm}
        errors = [e for t in range(len(values))
                  if (e := self.recorder.add(values[t], c.reward[t], c.terminated[t], c.truncated[t])) is not None]
        if errors:
            metrics["value/mc_rms_error"] = float(np.mean(errors))
        return metrics

    def predict_episode(self, observations: np.ndarray) -> np.ndarray:
        """V_t along one episode, from h = 0 at its first observation (observations: (T, *obs_shape))."""
        xs = observations.reshape(len(observations), 1, -1).astype(self.net.dtype)
        return self.net.infer(xs)[:, 0]

    def components(self) -> dict:
        return {"rng": self.rng, "eval_rng": self.eval_rng, "net": self.net, "optimizer": self.optimizer,
                "chunk": self.chunk}
