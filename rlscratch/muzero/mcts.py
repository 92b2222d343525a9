"""Monte-Carlo tree search inside a learned model, over a whole batch of roots at once.

Every tree lives in preallocated arrays indexed [root, node] or [root, node, action], the layout of
DeepMind's mctx: with B roots, S simulations and A actions, node 0 is the root, the node created by
simulation i is node i + 1 in *every* tree, and one extra index, ``UNEXPANDED = S + 1``, stands for
"no child here yet" (its statistics stay zero, so gathering through it needs no masks). There are
no per-node Python objects. One simulation is the same four steps for all B trees together:

1. **select**  -- walk from the root along each node's preferred action until an action whose child
   does not exist yet (one array lookup per level, for all trees at once);
2. **expand**  -- evaluate all B new leaves in ONE batched ``model.recurrent_inference`` call;
3. **backup**  -- add the discounted return to every node on each path, in one vectorised step;
4. **rescore** -- recompute every node's preferred action in one vectorised pass.

Step 4 is what makes step 1 cheap. A node's choice depends only on its own statistics and its
children's (plus, for MuZero, the tree-wide min-max bounds), and those change only for the nodes a
backup touched -- so recomputing all choices after each backup, as one array operation over
(roots x nodes x actions), gives exactly the choices a node-by-node descent would compute, while
the descent itself becomes pointer chasing.

The algorithm is the same for MuZero and Gumbel MuZero; what differs is *how a node chooses*, and
that is a ``Selection`` (as mctx passes a root and an interior action-selection function): how the
root explores (Dirichlet noise in the prior, or Gumbel noise in the scores), the score of every
action at every node (pUCT, or Gumbel's sequential halving at the root and its deterministic
interior rule), and the answer (the visit counts, or Gumbel's chosen action and improved policy).
``puct_*`` and ``gumbel_*`` below are those functions; the search is built with one or the other.

**One root.** With a single tree every numpy call costs more than the arithmetic it does, so a pUCT
search over one root runs the same algorithm on Python lists in rlscratch.muzero.fast (a test checks
that it leaves exactly the batched search's tree).

**MuZero's pUCT** (Schrittwieser et al. 2020, appendix B). At node s with visit count N(s), child
visit counts N(s, a), prior P(s, a) and values Q(s, a) = r(s, a) + gamma V(child):

    a* = argmax_a  Qn(s, a) + P(s, a) sqrt(N(s)) / (1 + N(s, a)) * (c1 + log((N(s) + c2 + 1) / c2))

with c1 = 1.25, c2 = 19652. Qn is Q normalised to [0, 1] by the smallest and largest Q seen anywhere
in this tree so far (values have no fixed scale in a learned model): Qn = (Q - min) / max(max - min,
delta), clipped to [0, 1], with delta = 0.01 as in EfficientZero so that a tree whose values are
all (nearly) equal does not divide by zero -- it then scores them all 0 and the prior decides.
An unvisited child is valued at its parent's current mean value. At the root, in training only,
the prior is mixed with Dirichlet noise: P <- (1 - eps) P + eps Dir(alpha). Ties are broken at
random (a tiny random offset per node and action, drawn once per search).

N(s) counts the node's own expansion as a visit (as in mctx), so a fresh node's first choice
follows its prior. Each node's value sum starts with the network's value estimate at expansion;
the backup of a simulation whose leaf is at depth d with network value v adds to the node at depth k

    G_k = sum_{j=k+1}^{d} gamma^{j-k-1} r_j + gamma^{d-k} v

-- the rewards along the path below it plus the discounted leaf value -- computed for the whole path
at once as a matrix product with the upper-triangular discount matrix M[k, j] = gamma^{j-k-1}.

**Gumbel MuZero** (Danihelka et al. 2022, as in EfficientZero V2), for few simulations:

* root: draw g(a) ~ Gumbel(0, 1) (training only); consider the m = min(16, A) actions with the largest
  g(a) + logits(a), and split the simulation budget by *sequential halving*: visit each considered
  action equally, keep the best half by g + logits + sigma(q_hat), repeat. The action played is the
  best remaining one, so no temperature is needed;
* sigma(q_hat) = (c_visit + max_b N(b)) c_scale q_hat, with q_hat the *completed* Q-values (visited
  actions: their Q; unvisited ones: a mix of the network value and the visited Qs) rescaled to
  [0, 1] at the node; c_visit = 50, c_scale = 0.1;
* interior nodes pick argmax_a pi'(a) - N(a) / (1 + sum_b N(b)) with pi' = softmax(logits + sigma(q_hat))
  (deterministic: the visit counts chase the improved policy);
* the policy target is pi' at the root -- defined for every action, however few were visited.

**Conventions** (SearchConfig; tests/test_mctx_fixtures.py checks the whole tree against DeepMind's
mctx on fixtures made by benchmarks/mctx_fixtures.py, tests/test_search_conventions.py each option
by hand). Implementations of the same papers differ in details; where this search's defaults differ
from mctx's, an option sets mctx's:

    convention                 this project's default               mctx (the option that sets it)
    pUCT: Q scaled to [0, 1]   by the tree-wide min-max of Q        by the node's own: min-max of its mean
                               (MuZero, EfficientZero)              value and visited children's Qs
                                                                    (q_normalization="node")
    pUCT: unvisited child      valued at the parent's mean (EZ V1)  scored 0, the low end (unvisited_q="lowest")
    pUCT: smallest range       0.01 (EfficientZero)                 1e-8 (value_delta=1e-8)
    pUCT: ties                 random offsets < 1e-9, per search    1e-7 U(0, 1) per selection (fixtures avoid ties)
    pUCT: action played        select_action(visits, temperature)   sampled from visits^(1/T) with a jax key
    Gumbel: completed Qs       scaled per node, 1e-8 (as mctx)      the same; q_normalization="tree": EZ V2's
    discount                   one constant (config.discount)       per edge, from the model (fixtures: constant)
    root noise                 drawn from a numpy Generator         from a jax key; run(..., noise=) takes it

``q_normalization="tree"`` with Gumbel MuZero is EfficientZero V2's rule (its ctree_v2): the
completed Qs of every node are normalised by the tree-wide min and max (``normalize_q``, clipped to
[0, 1], range floored at ``value_delta``) instead of their own. What the bounds take is
``tree_bounds``: "q", the mean Q(s, a) of every edge a backup updates (EZ V1, and this search's pUCT);
or "returns", EZ V2's: during the backup of a simulation with returns G_k, every r_k + gamma G_k on
the path, including gamma G_0 above the root. Not reproduced from EZ V2's ctree: a zero range there
leaves the value unnormalised (here it is divided by ``value_delta``), and its Gumbel search differs
elsewhere too: v_mix from the node's mean value and own visit count, an interior rule that divides
N(a) by 1 + N(s) with N(s) counting the node's expansion, and a log(N + 1) weight on sigma in the
final pi'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rlscratch.policy import sample_categorical

from .fast import simulate_one_root

# Reductions as direct ufunc calls: ndarray.max/min/sum first pass through a Python wrapper, which
# on the tiny arrays of a search costs about as much as the reduction itself.
_max, _min, _sum = np.maximum.reduce, np.minimum.reduce, np.add.reduce


class SearchModel(Protocol):
    """What the search needs from a model (rlscratch.muzero.model.MuZeroNet provides it)."""

    def initial_inference(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """obs (B, ...) -> state (B, D), policy logits (B, A), value (B,)."""
        ...

    def recurrent_inference(self, state: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """state (B, D), actions (B,) -> next state (B, D), reward (B,), policy logits (B, A), value (B,).

        (A model may also offer ``recurrent_inference_one(state (D,), action, next_state_out (D,))
        -> (reward, policy logits, value)`` for one-root searches: rlscratch.muzero.fast.)"""
        ...


@dataclass
class SearchConfig:
    num_simulations: int = 50
    discount: float = 0.997
    pb_c_init: float = 1.25          # c1
    pb_c_base: float = 19652.0       # c2
    dirichlet_alpha: float = 0.25
    exploration_fraction: float = 0.25
    value_delta: float = 0.01        # smallest range the min-max normalisation divides by
    gumbel: bool = False             # Gumbel MuZero root search instead of pUCT + Dirichlet
    max_considered_actions: int = 16
    gumbel_scale: float = 1.0
    value_scale: float = 0.1         # c_scale
    maxvisit_init: float = 50.0      # c_visit
    # conventions where searches differ (module docstring, "Conventions"); the defaults are this project's
    q_normalization: str = "auto"        # "tree" | "node"; "auto": pUCT "tree", Gumbel "node"
    unvisited_q: str = "parent_mean"     # pUCT's value of an unvisited child: "parent_mean" | "lowest"
    tree_bounds: str = "q"               # what "tree" bounds take: "q" (MuZero, EZ V1) | "returns" (EZ V2)


@dataclass
class SearchResult:
    visit_counts: np.ndarray   # (B, A) root child visits
    policy: np.ndarray         # (B, A) the policy target: visit distribution (MuZero) or pi' (Gumbel)
    root_value: np.ndarray     # (B,)  mean value of the root after the search
    q_values: np.ndarray       # (B, A) root Q(s, a) (the parent's mean value where unvisited)
    action: np.ndarray | None  # (B,)  Gumbel MuZero's chosen action; None for MuZero (see select_action)


# -- small pieces, each tested on its own ------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - _max(logits, axis=-1, keepdims=True))
    e /= _sum(e, axis=-1, keepdims=True)
    return e


def normalize_q(q: np.ndarray, low: np.ndarray, high: np.ndarray, delta: float) -> np.ndarray:
    """(q - low) / max(high - low, delta), clipped to [0, 1]; ``low``/``high`` broadcast against q.

    Before any Q has been seen (low = +inf, high = -inf) everything maps to 0; with a single value
    or all values equal (high = low) the range is delta, so q = low maps to 0."""
    span = np.maximum(high - low, delta)
    with np.errstate(invalid="ignore"):
        out = (q - low) / span
    out[~np.isfinite(out)] = 0.0
    return np.clip(out, 0.0, 1.0, out=out)


def sequence_of_considered_visits(max_considered: int, num_simulations: int) -> list[int]:
    """Sequential halving's schedule (mctx's ``get_sequence_of_considered_visits``): entry i is the
    visit count that the action chosen at simulation i must currently have.

    With m considered actions, each phase gives every remaining action max(1, n / (log2(m) m'))
    extra visits (m' actions remain), then halves m' (never below 2). E.g. m = 4, n = 16:
    0 0 0 0 | 1 1 1 1 | 2 2 | 3 3 | 4 4 | 5 5  -- all four actions twice, then the best two 4 more
    times each (final counts 2, 2, 6, 6).
    """
    if max_considered <= 1:
        return list(range(num_simulations))
    log2max = int(math.ceil(math.log2(max_considered)))
    sequence: list[int] = []
    visits = [0] * max_considered
    considered = max_considered
    while len(sequence) < num_simulations:
        extra = max(1, int(num_simulations / (log2max * considered)))
        for _ in range(extra):
            sequence.extend(visits[:considered])
            for i in range(considered):
                visits[i] += 1
        considered = max(2, considered // 2)
    return sequence[:num_simulations]


def mixed_value(raw_value: np.ndarray, q: np.ndarray, visits: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Gumbel MuZero's estimate of a node's value for completing unvisited Q-values:

        v_mix = (v_net + sum_b N(b) * sum_{a visited} pi(a) q(a) / sum_{a visited} pi(a)) / (1 + sum_b N(b))
    """
    total = _sum(visits, axis=-1)
    visited = visits > 0
    prior = np.maximum(prior, np.finfo(prior.dtype).tiny)
    mass = _sum(np.where(visited, prior, 0.0), axis=-1)
    weighted_q = _sum(np.where(visited, prior * q, 0.0), axis=-1) / np.where(mass > 0, mass, 1.0)
    return (raw_value + total * weighted_q) / (total + 1.0)


def completed_q_sigma(q: np.ndarray, visits: np.ndarray, raw_value: np.ndarray, prior: np.ndarray,
                      config: SearchConfig, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """sigma(q_hat): completed Q-values rescaled to [0, 1], times (c_visit + max N) c_scale.

    Rescaled per node by their own min and max (mctx), or -- ``bounds`` = (low, high), the tree-wide
    bounds broadcastable against q (EfficientZero V2) -- by ``normalize_q`` with ``value_delta``."""
    completed = np.where(visits > 0, q, mixed_value(raw_value, q, visits, prior)[..., None])
    if bounds is None:
        low = _min(completed, axis=-1, keepdims=True)
        high = _max(completed, axis=-1, keepdims=True)
        rescaled = (completed - low) / np.maximum(high - low, 1e-8)
    else:
        rescaled = normalize_q(completed, bounds[0], bounds[1], config.value_delta)
    return (config.maxvisit_init + _max(visits, axis=-1, keepdims=True)) * config.value_scale * rescaled


# -- the search -----------------------------------------------------------------------------------------
class MCTS:
    """Batched search. Arrays are allocated for a batch size on first use and reused after.

    ``run(model, obs, rng, explore)`` searches from a batch of observations; ``explore`` (training)
    turns on the root's exploration noise (Dirichlet for pUCT, Gumbel for Gumbel MuZero).

    Layout. Per tree: node arrays [root, node] (visits, value sum, reward on the edge into the node,
    ...) and edge arrays [root, node, action] (prior, logits, child index, and the child's visit
    count and Q copied onto the edge, so that rescoring reads them without gathering). Indices
    stored *inside* the arrays (children, preferred child, path) are global: node i of tree b is
    b * N + i, edge (i, a) is (b * N + i) * A + a, so one ``take`` on a flattened view follows them
    for every tree at once.
    """

    def __init__(self, config: SearchConfig, n_actions: int) -> None:
        self.config = config
        self.n_actions = n_actions
        self.selection = GUMBEL if config.gumbel else PUCT
        self.q_normalization = (self.selection.q_normalization if config.q_normalization == "auto"
                                else config.q_normalization)
        if self.q_normalization not in ("tree", "node"):
            raise ValueError(f"q_normalization must be 'tree', 'node' or 'auto' (the search's own), "
                             f"not {config.q_normalization!r}")
        if config.unvisited_q not in ("parent_mean", "lowest"):
            raise ValueError(f"unvisited_q must be 'parent_mean' or 'lowest', not {config.unvisited_q!r}")
        if config.tree_bounds not in ("q", "returns"):
            raise ValueError(f"tree_bounds must be 'q' or 'returns', not {config.tree_bounds!r}")
        self.batch = 0
        S = config.num_simulations
        self.num_nodes = S + 2   # the root, one node per simulation, and UNEXPANDED
        self.unexpanded = S + 1
        # upper-triangular discount matrix M[k, j] = gamma^{j-k-1} (j > k), for the backup
        depth = np.arange(S + 3)
        exponent = depth[None, :] - depth[:, None] - 1
        self.discount_matrix_t = np.where(exponent >= 0, config.discount ** np.maximum(exponent, 0), 0.0).T.copy()
        # sqrt(N) (c1 + log((N + c2 + 1) / c2)) for every integer visit count N the search can reach
        visits = np.arange(S + 3, dtype=np.float64)
        self.exploration_coef = np.sqrt(visits) * (
            config.pb_c_init + np.log((visits + config.pb_c_base + 1.0) / config.pb_c_base))
        self.exploration_coef_list = self.exploration_coef.tolist()
        m = min(config.max_considered_actions, n_actions)
        self.considered_visits = np.array(sequence_of_considered_visits(m, S) + [0], dtype=np.int64)

    def _allocate(self, batch: int, state_shape: tuple[int, ...], state_dtype: np.dtype) -> None:
        B, N, A = batch, self.num_nodes, self.n_actions
        self.batch = batch
        self.rows = np.arange(B)
        self.root_index = self.rows * N                      # global index of each tree's root
        self.trash = self.root_index + self.unexpanded       # ... and of its UNEXPANDED node
        self.trash_sum = int(self.trash.sum())
        self.edge_base = (self.root_index[:, None] + np.arange(N)) * A   # global index of edge (node, 0)
        # node arrays
        self.visits = np.zeros((B, N))                       # float: divided by every pass
        self.value_sum = np.zeros((B, N))
        self.reward = np.zeros((B, N))
        self.raw_value = np.zeros((B, N))                    # the network's value at expansion
        self.depth = np.zeros((B, N), dtype=np.int64)
        self.in_edge = np.zeros((B, N), dtype=np.int64)      # global edge leading to the node
        self.choice_action = np.zeros((B, N), dtype=np.int64)
        self.choice_child = np.zeros((B, N), dtype=np.int64)  # global; UNEXPANDED: "not there yet"
        self.states = np.zeros((B, N, *state_shape), dtype=state_dtype)
        # edge arrays
        self.logits = np.zeros((B, N, A))
        self.prior = np.zeros((B, N, A))
        self.children = np.zeros((B, N, A), dtype=np.int64)
        self.edge_visits = np.zeros((B, N, A))
        self.edge_q = np.zeros((B, N, A))
        self.tie_noise = np.zeros((B, N, A))
        # per search
        self.path = np.zeros((B, N + 1), dtype=np.int64)
        self.low = np.zeros(B)
        self.high = np.zeros(B)
        self.gumbel = np.zeros((B, A))
        # flat views for the global indices
        self.flat_visits, self.flat_value_sum = self.visits.reshape(-1), self.value_sum.reshape(-1)
        self.flat_reward, self.flat_in_edge = self.reward.reshape(-1), self.in_edge.reshape(-1)
        self.flat_choice_child, self.flat_choice_action = self.choice_child.reshape(-1), self.choice_action.reshape(-1)
        self.flat_states = self.states.reshape(B * N, *state_shape)
        self.flat_children = self.children.reshape(-1)
        self.flat_edge_visits, self.flat_edge_q = self.edge_visits.reshape(-1), self.edge_q.reshape(-1)

    # -- the algorithm -----------------------------------------------------------------------------
    def run(self, model: SearchModel, obs: np.ndarray, rng: np.random.Generator, explore: bool,
            noise: np.ndarray | None = None) -> SearchResult:
        state, logits, value = model.initial_inference(obs)
        return self.run_from_root(model, state, logits, value, rng, explore, noise)

    def run_from_root(self, model: SearchModel, state: np.ndarray, logits: np.ndarray, value: np.ndarray,
                      rng: np.random.Generator, explore: bool, noise: np.ndarray | None = None) -> SearchResult:
        """Search from roots whose initial inference is given (the tests hand-build them).

        ``noise`` (B, A), if given, is the root's exploration noise instead of a draw from ``rng``
        (whatever ``explore`` says): the Dirichlet sample that pUCT mixes into the prior with weight
        ``exploration_fraction``, or Gumbel MuZero's g already times ``gumbel_scale`` -- so a search
        can be handed the very noise another implementation drew (tests/test_mctx_fixtures.py)."""
        B = len(state)
        if B != self.batch or self.states.shape[2:] != state.shape[1:] or self.states.dtype != state.dtype:
            self._allocate(B, state.shape[1:], state.dtype)
        self._reset(state, logits, value, rng, explore, noise)
        if B == 1 and self.selection is PUCT:
            simulate_one_root(self, model)   # the same simulations on Python numbers (rlscratch.muzero.fast)
            return self._answer()
        for simulation in range(self.config.num_simulations):
            parent, leaf_depth = self._select()
            action = self.flat_choice_action.take(parent)
            next_state, reward, child_logits, child_value = model.recurrent_inference(
                self.flat_states.take(parent, axis=0), action)
            new = simulation + 1
            self._expand(new, parent, action, leaf_depth, next_state, reward, child_logits, child_value)
            self._backup(leaf_depth, child_value)
            self._rescore(new + 1)
        return self._answer()

    def _reset(self, state, logits, value, rng, explore, noise=None) -> None:
        """Every tree back to a lone root: the initial inference, the root's exploration noise."""
        for array in (self.visits, self.value_sum, self.reward, self.edge_visits, self.edge_q):
            array.fill(0.0)
        self.children[...] = self.trash[:, None, None]
        self.choice_child[...] = self.trash[:, None]   # UNEXPANDED's own entry: it leads nowhere else
        self.in_edge[...] = (self.trash * self.n_actions)[:, None]
        # UNEXPANDED soaks up the padding of paths of unequal length; a visit keeps its mean finite
        self.visits[:, self.unexpanded] = 1.0
        self.low.fill(np.inf)
        self.high.fill(-np.inf)
        self.states[:, 0] = state
        self.logits[:, 0] = logits
        self.prior[:, 0] = self.selection.root_prior(self, softmax(np.asarray(logits, dtype=np.float64)), rng,
                                                     explore, noise)
        self.raw_value[:, 0] = value
        self.value_sum[:, 0] = value
        self.visits[:, 0] = 1.0
        # a random offset far below any real difference between scores: ties go a random way
        self.tie_noise[...] = rng.random(self.tie_noise.shape)
        self.tie_noise *= 1e-9
        self.selection.root_noise(self, rng, explore, noise)
        self._rescore(1)

    def _select(self) -> tuple[np.ndarray, np.ndarray]:
        """Follow the preferred children down to an action whose child does not exist yet.
        Returns the (global) node to expand from and the depth of the node to create; the nodes
        passed are in ``self.path[:, :depth]`` (UNEXPANDED after a tree's own path has ended)."""
        path, choice = self.path, self.flat_choice_child
        node = path[:, 0] = self.root_index
        depth = 0
        while True:
            nxt = choice.take(node)   # a tree already stopped sits on UNEXPANDED, which points to itself
            # every tree has stopped when all sit on UNEXPANDED; as no index exceeds its own tree's
            # UNEXPANDED, that is when the sums agree (one reduction instead of a compare and an all)
            if int(_sum(nxt)) == self.trash_sum:
                break
            depth += 1
            path[:, depth] = node = nxt
        path[:, depth + 1:depth + 3] = self.trash[:, None]  # the backup reads two columns further
        leaf_depth = (path[:, :depth + 1] != self.trash[:, None]).sum(axis=1)
        return path[self.rows, leaf_depth - 1], leaf_depth

    def _expand(self, new, parent, action, leaf_depth, next_state, reward, logits, value) -> None:
        node = self.root_index + new
        edge = parent * self.n_actions + action
        self.flat_children[edge] = node
        self.in_edge[:, new] = edge
        self.depth[:, new] = leaf_depth
        self.states[:, new] = next_state
        self.reward[:, new] = reward
        self.raw_value[:, new] = value
        self.logits[:, new] = logits
        self.prior[:, new] = softmax(logits)
        self.path[self.rows, leaf_depth] = node

    def _backup(self, leaf_depth: np.ndarray, leaf_value: np.ndarray) -> None:
        """value_sum += G_k and visits += 1 for every node k on each path (see the module docstring).

        With the leaf value written in as if it were one more reward, x_{d+1} = v, the return at
        depth k is G_k = sum_{j>k} gamma^{j-k-1} x_j for every k at once: x @ M^T."""
        L = int(leaf_depth.max()) + 1                                  # path length, root to leaf
        path = self.path[:, :L]
        x = self.flat_reward.take(self.path[:, :L + 1])                # r_j (0 at the root and padding)
        x[self.rows, leaf_depth + 1] = leaf_value
        returns = x @ self.discount_matrix_t[:L + 1, :L]
        # each real node appears once per path; the padding all lands on UNEXPANDED, never read
        self.flat_value_sum[path] += returns
        self.flat_visits[path] += 1.0
        # copy the updated Q(s, a) = r + gamma V(child) and N(s, a) onto the edges of the path
        below = path[:, 1:]
        edges = self.flat_in_edge.take(below)
        q = self.flat_value_sum.take(below)
        q /= self.flat_visits.take(below)
        q *= self.config.discount
        q += x[:, 1:L]
        self.flat_edge_q[edges] = q
        self.flat_edge_visits[edges] += 1.0
        if self.q_normalization == "tree":
            if self.config.tree_bounds == "q":   # every Q(s, a) on the paths just updated
                seen, on_path = q, below != self.trash[:, None]
            else:   # EfficientZero V2: every sampled return r_k + gamma G_k on the paths, the root's too
                seen, on_path = x[:, :L] + self.config.discount * returns, path != self.trash[:, None]
            np.minimum(self.low, _min(np.where(on_path, seen, np.inf), axis=1), out=self.low)
            np.maximum(self.high, _max(np.where(on_path, seen, -np.inf), axis=1), out=self.high)

    def _edge_stats(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Visit counts and Q-values of the edges of nodes [:, :n]; an unvisited edge's Q is its
        parent's mean value."""
        visits = self.edge_visits[:, :n]
        parent_mean = self.value_sum[:, :n] / self.visits[:, :n]
        return visits, np.where(visits > 0, self.edge_q[:, :n], parent_mean[:, :, None])

    def _rescore(self, n: int) -> None:
        """Recompute the preferred action (and child) of every node [:, :n] of every tree."""
        visits, q = self._edge_stats(n)
        scores = self.selection.scores(self, n, visits, q)
        scores += self.tie_noise[:, :n]
        action = scores.argmax(axis=-1)
        self.choice_action[:, :n] = action
        self.choice_child[:, :n] = self.flat_children.take(self.edge_base[:, :n] + action)

    def _answer(self) -> SearchResult:
        visits, q = self._edge_stats(1)
        visits, q = visits[:, 0].copy(), q[:, 0]
        root_value = self.value_sum[:, 0] / self.visits[:, 0]
        return self.selection.answer(self, visits, q, root_value)


# -- MuZero's pUCT ----------------------------------------------------------------------------------------
def puct_root_prior(search: MCTS, prior: np.ndarray, rng: np.random.Generator, explore: bool,
                    noise: np.ndarray | None = None) -> np.ndarray:
    """P <- (1 - eps) P + eps Dir(alpha) at the root, in training only (or with the ``noise`` given)."""
    config = search.config
    if noise is None and explore and config.exploration_fraction > 0:
        noise = rng.dirichlet(np.full(search.n_actions, config.dirichlet_alpha), size=len(prior))
    if noise is not None:
        prior = (1.0 - config.exploration_fraction) * prior + config.exploration_fraction * noise
    return prior


def puct_scores(search: MCTS, n: int, visits: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Qn(s, a) + P(s, a) sqrt(N(s)) / (1 + N(s, a)) (c1 + log((N(s) + c2 + 1) / c2)) for every action
    of nodes [:, :n]; Qn is ``normalize_q`` inlined, with the tree-wide bounds (before any Q is
    seen, low = inf sends every score to -inf -> 0) or each node's own (``q_normalization="node"``:
    the min and max of its mean value and its visited children's Qs, as mctx's
    qtransform_by_parent_and_siblings). ``unvisited_q="lowest"`` scores unvisited children 0."""
    delta = search.config.value_delta
    if search.q_normalization == "node":
        parent_mean = search.value_sum[:, :n] / search.visits[:, :n]   # unvisited children hold it in q
        low = np.minimum(parent_mean, _min(q, axis=-1))[:, :, None]
        inverse_span = 1.0 / np.maximum(np.maximum(parent_mean, _max(q, axis=-1))[:, :, None] - low, delta)
    else:
        low = search.low[:, None, None]
        inverse_span = 1.0 / np.maximum(search.high - search.low, delta)[:, None, None]
    scores = q - low
    scores *= inverse_span
    np.maximum(scores, 0.0, out=scores)   # clip to [0, 1] (np.clip's wrapper costs more)
    np.minimum(scores, 1.0, out=scores)
    if search.config.unvisited_q == "lowest":
        scores *= visits > 0
    coef = search.exploration_coef.take(search.visits[:, :n].astype(np.intp))
    exploration = search.prior[:, :n] * coef[:, :, None]
    exploration /= visits + 1.0
    scores += exploration
    return scores


def puct_answer(search: MCTS, visits: np.ndarray, q: np.ndarray, root_value: np.ndarray) -> SearchResult:
    """The policy target is the root's visit distribution; the agent picks the action from the
    visit counts (``select_action``, with a temperature)."""
    policy = visits / visits.sum(axis=-1, keepdims=True)
    return SearchResult(visits, policy, root_value, q, None)


# -- Gumbel MuZero ----------------------------------------------------------------------------------------
def gumbel_root_noise(search: MCTS, rng: np.random.Generator, explore: bool, noise: np.ndarray | None = None,
                      ) -> None:
    """g(a) ~ Gumbel(0, 1) (times ``gumbel_scale``) per root and action, in training only (or the
    ``noise`` given, already scaled)."""
    if noise is not None:
        search.gumbel[...] = noise
    else:
        search.gumbel[...] = rng.gumbel(size=search.gumbel.shape) * search.config.gumbel_scale if explore else 0.0


def gumbel_bounds(search: MCTS, nodes: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """The tree-wide bounds shaped for completed_q_sigma over (B, n, A) (``nodes``) or (B, A), or
    None when each node rescales its own Qs."""
    if search.q_normalization != "tree":
        return None
    shape = (-1, 1, 1) if nodes else (-1, 1)
    return search.low.reshape(shape), search.high.reshape(shape)


def gumbel_scores(search: MCTS, n: int, visits: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Interior nodes: pi'(a) - N(a) / (1 + sum_b N(b)), pi' = softmax(logits + sigma(q_hat)).
    The root: sequential halving -- only actions with exactly the scheduled visit count compete,
    on g + logits + sigma(q_hat)."""
    sigma = completed_q_sigma(q, visits, search.raw_value[:, :n], search.prior[:, :n], search.config,
                              gumbel_bounds(search, nodes=True))
    improved = softmax(search.logits[:, :n] + sigma)
    scores = improved - visits / (1.0 + _sum(visits, axis=-1, keepdims=True))
    simulation = int(_sum(visits[0, 0]))  # every tree has spent the same number of simulations
    considered = search.considered_visits[min(simulation, len(search.considered_visits) - 1)]
    # (the root's sigma is row 0 of the nodes': the same per-node computation on the same numbers)
    scores[:, 0] = gumbel_root_scores(search, visits[:, 0], q[:, 0], considered, sigma[:, 0])
    return scores


def gumbel_root_scores(search: MCTS, visits: np.ndarray, q: np.ndarray, considered,
                       sigma: np.ndarray | None = None) -> np.ndarray:
    """g + logits + sigma(q_hat) of the root's actions whose visit count is ``considered``; -inf
    for the others. ``sigma``: the root's sigma(q_hat) if already computed."""
    if sigma is None:
        sigma = completed_q_sigma(q, visits, search.raw_value[:, 0], search.prior[:, 0], search.config,
                                  gumbel_bounds(search, nodes=False))
    logits = search.logits[:, 0] - _max(search.logits[:, 0], axis=-1, keepdims=True)
    score = search.gumbel + logits + sigma
    return np.where(visits == considered, score, -np.inf)


def gumbel_answer(search: MCTS, visits: np.ndarray, q: np.ndarray, root_value: np.ndarray) -> SearchResult:
    """Play the best of the most visited actions; train towards pi' = softmax(logits + sigma(q_hat))."""
    score = gumbel_root_scores(search, visits, q, visits.max(axis=-1, keepdims=True))
    action = (score + search.tie_noise[:, 0]).argmax(axis=-1)
    sigma = completed_q_sigma(q, visits, search.raw_value[:, 0], search.prior[:, 0], search.config,
                              gumbel_bounds(search, nodes=False))
    policy = softmax(search.logits[:, 0] + sigma)
    return SearchResult(visits, policy, root_value, q, action)


def _same_prior(search: MCTS, prior: np.ndarray, rng: np.random.Generator, explore: bool,
                noise: np.ndarray | None = None) -> np.ndarray:
    return prior


def _no_noise(search: MCTS, rng: np.random.Generator, explore: bool, noise: np.ndarray | None = None) -> None:
    pass


@dataclass(frozen=True)
class Selection:
    """How a search chooses (module docstring): the root's exploration (noise mixed into its prior,
    then noise for its scores; either may be handed in), the scores of every node's actions, and the
    answer. ``q_normalization``: the search's own way of scaling Q to [0, 1] ("tree": by the tree-wide
    min-max bounds, which the backup then keeps; "node": by each node's own), unless the config sets one."""

    root_prior: Callable[[MCTS, np.ndarray, np.random.Generator, bool, np.ndarray | None], np.ndarray]
    root_noise: Callable[[MCTS, np.random.Generator, bool, np.ndarray | None], None]
    scores: Callable[[MCTS, int, np.ndarray, np.ndarray], np.ndarray]
    answer: Callable[[MCTS, np.ndarray, np.ndarray, np.ndarray], SearchResult]
    q_normalization: str


PUCT = Selection(puct_root_prior, _no_noise, puct_scores, puct_answer, q_normalization="tree")
GUMBEL = Selection(_same_prior, gumbel_root_noise, gumbel_scores, gumbel_answer, q_normalization="node")


def select_action(visit_counts: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Sample a ~ N(a)^{1/T} / sum_b N(b)^{1/T} per row; T = 0 takes the most visited action (ties at
    random)."""
    if temperature == 0.0:
        noisy = visit_counts + rng.random(visit_counts.shape) * 1e-6
        return noisy.argmax(axis=-1)
    return sample_categorical(np.log(np.maximum(visit_counts, 1e-12)) / temperature, rng)   # rlscratch.policy
