"""EfficientZero's self-supervised temporal consistency (Ye et al. 2021, section 4.1), SimSiam style.

MuZero's model is trained only through rewards, values and policies -- a few scalars per step, a
weak signal for learning what the hidden states should hold. EfficientZero adds one more: the state
the dynamics *predicts* for step k should look like the state the representation *computes* from
the real observation o_{t+k}. With a projector P and a predictor Q (two small MLPs):

    online   p_k = Q(P(s_k))                   s_k from unrolling the dynamics k times
    target   t_k = P(h(o_{t+k}))               under stop-gradient: a constant in the backward
    loss     l_k = -cos(p_k, t_k) = -<p_k, t_k> / (|p_k| |t_k|)        k = 1..K

(as SimSiam, Chen & He 2021: the asymmetric predictor plus the stop-gradient keep the two branches
from collapsing to a constant). EfficientZero V1 computes the target branch with the online network
itself under ``torch.no_grad``; so does this code (``target_projections``; with batch normalisation
in the conv network, the representation normalises each step's N target observations by their own
batch statistics, as EfficientZero's network in training mode does -- conv_model.py). In
rlscratch.muzero.loss each step's term gets the step weight 1/K, the sample's importance weight, a
0/1 mask (no observation past the episode's final row) and the coefficient ``consistency_coef``
(EfficientZero: 2).

**Backward of the cosine.** With u = p/|p| and v = t/|t|, cos = <u, v> and

    d cos / d p = (v - cos u) / |p|

(the component of v orthogonal to p, over |p|), so dl/dp = -(v - cos u) / |p|. A small eps in the
denominators (|p| + eps, |t| + eps) keeps a zero vector finite; the code differentiates exactly that.
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn

EPS = 1e-8


class ConsistencyHeads(nn.Module):
    """The projector P: state -> Linear -> ReLU -> Linear -> ReLU -> Linear (proj_dim)
    and the predictor Q: proj_dim -> Linear -> ReLU -> Linear (proj_dim).

    (EfficientZero puts a BatchNorm after each projector layer; rlscratch's MuZero states are min-max
    normalised already, and a batch statistic across the unroll's K calls would couple the samples.)"""

    def __init__(self, state_dim: int, hidden: int, proj_dim: int, rng: np.random.Generator,
                 init: str = "he") -> None:
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(state_dim, hidden, rng, init=init), nn.ReLU(),
                                       nn.Linear(hidden, hidden, rng, init=init), nn.ReLU(),
                                       nn.Linear(hidden, proj_dim, rng, init=init))
        self.predictor = nn.Sequential(nn.Linear(proj_dim, hidden, rng, init=init), nn.ReLU(),
                                       nn.Linear(hidden, proj_dim, rng, init=init))

    def online(self, state: np.ndarray) -> np.ndarray:
        """p = Q(P(s)), keeping what backward needs (a feature-map state is flattened first)."""
        self._saved.append(state.shape)
        return self.predictor.forward(self.projector.forward(state.reshape(len(state), -1)))

    def online_backward(self, dp: np.ndarray) -> np.ndarray:
        return self.projector.backward(self.predictor.backward(dp)).reshape(self._saved.pop())

    def target(self, state: np.ndarray) -> np.ndarray:
        """t = P(s), keeping nothing: the stop-gradient branch."""
        return self.projector.infer(state.reshape(len(state), -1))

    def forward(self, state: np.ndarray) -> np.ndarray:
        return self.online(state)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self.online_backward(dy)

    def infer(self, state: np.ndarray) -> np.ndarray:
        return self.predictor.infer(self.projector.infer(state))


def negative_cosine(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row l = -cos(p, t) and dl/dp (t is a constant: the stop-gradient)."""
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    p_len = np.sqrt((p64 * p64).sum(axis=1, keepdims=True))
    v = t64 / (np.sqrt((t64 * t64).sum(axis=1, keepdims=True)) + EPS)
    cos = (p64 * v).sum(axis=1, keepdims=True) / (p_len + EPS)
    # d/dp <p, v> / (|p| + eps) = (v - cos p / |p|) / (|p| + eps)
    return -cos[:, 0], -(v - cos * p64 / np.maximum(p_len, 1e-300)) / (p_len + EPS)


def target_projections(net, target_obs: np.ndarray) -> list:
    """[None, t_1, ..., t_K]: t_k = P(h(o_{t+k})) for target_obs (N, K, obs_dim), under stop-gradient.

    Without batch statistics each sample's target depends on it alone, so all N*K observations go
    through one call. With a batch norm (conv_model ``represent_target``) each step k is its own call
    on its N observations, as EfficientZero's unroll calls the representation once per step."""
    n, K = target_obs.shape[:2]
    if getattr(net, "block_norm", "none") == "batch":
        return [None] + [net.consistency.target(net.represent_target(target_obs[:, k])) for k in range(K)]
    flat = target_obs.reshape(n * K, *target_obs.shape[2:])
    t = net.consistency.target(net.infer_represent(flat))
    return [None] + list(t.reshape(n, K, -1).transpose(1, 0, 2))
