"""Replay buffers: a preallocated ring of transitions, n-step folding, and prioritized replay.

Memory layout. Every field is one numpy array sized at construction, indexed by slot; nothing is
allocated per transition, so a buffer's footprint is fixed the moment it is built (``nbytes``), and
the process stops growing once the ring is full. A slot holds

    obs, action, n-step return G, next_obs, discount

and the off-policy target of slot i is  G_i + discount_i * V(next_obs_i).  ``discount`` is gamma^m
for an m-step window, or 0 when the window ended in a termination, so an agent never needs to know
n, gamma or how the episode ended.

Why store next_obs as well as obs (twice the observation bytes): with several parallel envs, n-step
windows, and episodes whose final observation is never the next stored observation (the env was
reset), recovering next_obs from "the slot n*num_envs further on" needs per-slot episode bookkeeping
and breaks at the ring's seam. For vector observations the second copy is cheap -- CartPole stores
4 + 4 float32 values, and a slot costs 16 + 16 + 1 (uint8 action) + 4 + 4 = 41 bytes, so a million
transitions take 41 MB. (Image observations would want frames shared between slots instead.)
Prioritized replay adds its sum-tree: 16 bytes per slot, capacity rounded up to a power of two.

Checkpoints hold only the filled slots (all of them once the ring is full) and the n-step queue's
pending windows, so a resumed run continues with exactly the buffer it stopped with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch.returns import n_step_returns


@dataclass
class ReplaySamples:
    """A minibatch. ``weights`` are importance-sampling weights (prioritized replay), else None."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray  # n-step returns G
    next_obs: np.ndarray
    discounts: np.ndarray  # gamma^m, or 0 after a termination
    indices: np.ndarray  # slots, for priority updates
    weights: np.ndarray | None = None


class NStepQueue:
    """Turns vector-env steps into n-step transitions as soon as their windows close.

    It keeps the last n steps of all envs (they step together) in a ring of n rows, and after each
    new step emits, for every env, the transitions whose windows close at that step
    (rlscratch.returns.n_step_returns):

    * the one that started n-1 steps ago, its window now full, unless an episode end already
      closed it;
    * when this step ends the env's episode: every pending transition of that episode, each with the
      rewards up to the end -- discount 0 after a termination, gamma^m after a truncation (bootstrap
      from the final observation).

    Most steps have no episode end anywhere in the window, and then exactly the oldest step's full
    window closes in every env: G = sum_k gamma^k r_k is one product with the powers of gamma, and
    the discount is gamma^n. Only windows holding an episode end take the general computation.
    With n = 1 every step is its own transition: G = r, discount = gamma (0 if terminated).
    """

    def __init__(self, n: int, gamma: float, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 action_shape: tuple[int, ...] = (), action_dtype: np.dtype = np.int64) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n, self.gamma, self.num_envs = n, float(gamma), num_envs
        self.obs = np.zeros((n, num_envs, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros((n, num_envs, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros((n, num_envs), dtype=np.float64)
        self.terminated = np.zeros((n, num_envs), dtype=bool)
        self.truncated = np.zeros((n, num_envs), dtype=bool)
        self.steps = 0  # steps pushed so far; step t lives in row t % n until step t + n replaces it
        self._names = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")
        # powers[o, row] = gamma^((row - o) mod n): the weight of each row's reward when row o is the oldest
        offsets = (np.arange(n)[None, :] - np.arange(n)[:, None]) % n
        self._powers = self.gamma ** offsets
        self._full_discount = np.full(num_envs, self.gamma ** n)

    def push(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
             terminated: np.ndarray, truncated: np.ndarray) -> tuple[np.ndarray, ...]:
        """One vector step in; the transitions it completes out, as (obs, actions, G, next_obs,
        discount). The arrays may be views of the queue, valid until the next push."""
        if self.n == 1:  # n_step_returns with n = 1, without the copies
            discounts = np.where(terminated, 0.0, self.gamma)
            return obs, actions, np.asarray(rewards, dtype=np.float64), next_obs, discounts
        row = self.steps % self.n
        for name, value in zip(self._names, (obs, next_obs, actions, rewards, terminated, truncated)):
            getattr(self, name)[row] = value
        self.steps += 1
        L = min(self.steps, self.n)
        oldest = self.steps % self.n if L == self.n else 0

        if L == self.n and not (self.terminated.any() or self.truncated.any()):
            return (self.obs[oldest], self.actions[oldest], self._powers[oldest] @ self.rewards,
                    self.next_obs[row], self._full_discount)

        order = (oldest + np.arange(L)) % self.n  # the held rows, oldest first
        terminated, truncated = self.terminated[order], self.truncated[order]
        returns, discounts, last = n_step_returns(self.rewards[order], terminated, truncated, self.gamma, self.n)
        done = terminated | truncated
        # A window is still open if no episode ended between its start and the previous step...
        open_before = np.ones((L, self.num_envs), dtype=bool)
        if L > 1:
            open_before[:-1] = ~np.logical_or.accumulate(done[L - 2::-1], axis=0)[::-1]
        # ...and closes now if its episode ends here or it has just reached n steps.
        full = np.zeros((L, 1), dtype=bool)
        full[0] = L == self.n
        starts, envs = np.nonzero(open_before & (done[L - 1] | full))
        return (self.obs[order[starts], envs], self.actions[order[starts], envs], returns[starts, envs],
                self.next_obs[order[last[starts, envs]], envs], discounts[starts, envs])

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: getattr(self, name).copy() for name in self._names}
        state["steps"] = np.array(self.steps)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self._names:
            _copy_into(getattr(self, name), state[name], f"n-step queue '{name}'", rows=self.n)
        self.steps = int(state["steps"])


class ReplayBuffer:
    """A ring of ``capacity`` transitions with uniform sampling.

    ``add`` takes one step of every parallel env at once (arrays with a leading num_envs axis), folds
    it into n-step transitions (``NStepQueue``) and writes those into the next slots, overwriting the
    oldest once the ring is full.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | type = np.float32,
                 action_shape: tuple[int, ...] = (), action_dtype: np.dtype | type = np.int64, num_envs: int = 1,
                 n_step: int = 1, gamma: float = 0.99) -> None:
        if capacity < num_envs * n_step:
            raise ValueError(f"capacity {capacity} is below one flush of the n-step queues ({num_envs * n_step})")
        self.capacity = capacity
        # np.zeros, not zeros_like: large zero arrays come from calloc, so untouched pages cost no RAM yet
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((capacity, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        self.pos = 0  # the next slot to write
        self.size = 0  # slots filled
        self.queue = NStepQueue(n_step, gamma, num_envs, tuple(obs_shape), np.dtype(obs_dtype), tuple(action_shape),
                                np.dtype(action_dtype))
        self._fields = ("obs", "actions", "rewards", "next_obs", "discounts")

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes preallocated for the ring (the n-step queue and any sum-tree excluded)."""
        return sum(getattr(self, name).nbytes for name in self._fields)

    @property
    def bytes_per_transition(self) -> float:
        return self.nbytes / self.capacity

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
        """Add one vector-env step; returns the slots written (the transitions it completed)."""
        return self._store(*self.queue.push(obs, actions, rewards, next_obs, terminated, truncated))

    def _store(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
               discounts: np.ndarray) -> np.ndarray:
        k = len(rewards)
        if self.pos + k <= self.capacity:
            where: slice | np.ndarray = slice(self.pos, self.pos + k)  # the common case: a plain slice copy
            slots = np.arange(self.pos, self.pos + k)
        else:
            where = slots = (self.pos + np.arange(k)) % self.capacity
        self.obs[where] = obs
        self.actions[where] = actions
        self.rewards[where] = rewards
        self.next_obs[where] = next_obs
        self.discounts[where] = discounts
        self.pos = (self.pos + k) % self.capacity
        self.size = min(self.size + k, self.capacity)
        return slots

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplaySamples:
        """``batch_size`` slots drawn uniformly, with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self._gather(rng.integers(0, self.size, batch_size))

    def _gather(self, slots: np.ndarray) -> ReplaySamples:
        return ReplaySamples(self.obs[slots], self.actions[slots], self.rewards[slots], self.next_obs[slots],
                             self.discounts[slots], slots)

    # -- checkpoints: the filled slots only, plus the pending n-step windows ----------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: getattr(self, name)[:self.size].copy() for name in self._fields}
        state.update(capacity=np.array(self.capacity), pos=np.array(self.pos), size=np.array(self.size))
        state.update({f"queue/{k}": v for k, v in self.queue.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        size, capacity = int(state["size"]), int(state["capacity"])
        if capacity != self.capacity:  # the ring's order (pos) only means something at the same capacity
            raise ValueError(f"the saved replay buffer has {capacity} slots, this one {self.capacity} "
                             "(keep the run's buffer_size when resuming)")
        for name in self._fields:
            _copy_into(getattr(self, name), state[name], f"replay buffer '{name}'", rows=size)
        self.pos, self.size = int(state["pos"]), size
        self.queue.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("queue/")})


def _copy_into(target: np.ndarray, value: np.ndarray, what: str, rows: int) -> None:
    if value.shape != (rows, *target.shape[1:]) or value.dtype != target.dtype:
        raise ValueError(f"{what}: saved {value.dtype}{list(value.shape)}, expected "
                         f"{target.dtype}{[rows, *target.shape[1:]]}")
    target[:rows] = value


class SumTree:
    """Priorities p_0..p_{N-1} in a binary tree stored in one array, for sampling i with probability
    p_i / sum_j p_j in O(log N).

    Layout: node 1 is the root, node k's children are 2k and 2k+1, and the leaves are nodes P..2P-1
    with P the smallest power of two >= N (the padding leaves stay 0, so they are never drawn). Every
    internal node holds the sum of its two children, so the root holds the total.

    Sampling draws a prefix sum u in [0, total) and walks down from the root: go left if u < the left
    child's sum, else subtract that sum and go right. It ends at the leaf i with
    p_0 + ... + p_{i-1} <= u < p_0 + ... + p_i. The walk is vectorised over a whole batch of u (all
    leaves sit at the same depth), so a batch costs log2(P) numpy operations, not B * log2(P) steps.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.depth = (capacity - 1).bit_length()
        self.first_leaf = 1 << self.depth  # P
        self.nodes = np.zeros(2 * self.first_leaf, dtype=np.float64)  # nodes[0] is unused

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    @property
    def priorities(self) -> np.ndarray:
        """The leaves, as a view."""
        return self.nodes[self.first_leaf:self.first_leaf + self.capacity]

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self.nodes[np.asarray(indices) + self.first_leaf]

    def update(self, indices: np.ndarray, priorities: np.ndarray | float) -> None:
        """Set p_i for each index, then recompute the sums on their paths to the root. Sums are
        recomputed from the children rather than adjusted by differences, so they never drift and a
        repeated index is harmless."""
        priorities = np.asarray(priorities, dtype=np.float64)
        if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
            raise ValueError("priorities must be finite and non-negative")
        nodes = np.asarray(indices, dtype=np.int64) + self.first_leaf
        self.nodes[nodes] = priorities
        for _ in range(self.depth):
            nodes >>= 1
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]

    def rebuild(self) -> None:
        """Recompute every internal node from the leaves (after loading them)."""
        width = self.first_leaf
        while width > 1:
            self.nodes[width // 2:width] = self.nodes[width:2 * width].reshape(-1, 2).sum(axis=1)
            width //= 2

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each u, the index i with p_0 + ... + p_{i-1} <= u < p_0 + ... + p_i.

        u is clipped into [0, total]; u >= total gives the last leaf with a positive priority. A leaf
        with priority 0 is never returned: the walk only enters subtrees with a positive sum, which
        also absorbs roundoff in the subtractions."""
        if self.total <= 0.0:
            raise ValueError("cannot sample: every priority is zero")
        u = np.clip(np.asarray(prefix_sums, dtype=np.float64), 0.0, self.total)
        node = np.ones(u.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * node
            left_sum = self.nodes[left]
            go_right = (u >= left_sum) & (self.nodes[left + 1] > 0.0)
            u = np.where(go_right, u - left_sum, u)
            node = left + go_right
        return node - self.first_leaf

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Stratified proportional sampling (Schaul et al. 2016): [0, total) is cut into batch_size
        equal segments and one u is drawn uniformly in each, which lowers the variance of the batch's
        composition against batch_size independent draws while keeping P(i) = p_i / total."""
        total = self.total
        u = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        return self.find(u)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"priorities": self.priorities.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        saved = state["priorities"]
        if saved.ndim != 1 or len(saved) > self.capacity:
            raise ValueError(f"sum tree: saved {list(saved.shape)} priorities, capacity {self.capacity}")
        self.nodes[:] = 0.0
        self.nodes[self.first_leaf:self.first_leaf + len(saved)] = saved
        self.rebuild()


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016).

    A transition is drawn with probability P(i) = p_i^alpha / sum_k p_k^alpha, where p_i = |delta_i| + eps
    is its last TD error (new transitions get the largest p seen so far, so each is replayed at least
    about once). Sampling that way biases the expected update, which the importance-sampling weights

        w_i = (N * P(i))^(-beta) / max_j w_j        (max over the batch)

    undo as beta is annealed towards 1 (the agent owns the schedule). Dividing by the largest weight
    keeps every weight <= 1, so they only ever scale updates down.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | type = np.float32,
                 action_shape: tuple[int, ...] = (), action_dtype: np.dtype | type = np.int64, num_envs: int = 1,
                 n_step: int = 1, gamma: float = 0.99, alpha: float = 0.6, eps: float = 1e-6) -> None:
        super().__init__(capacity, obs_shape, obs_dtype, action_shape, action_dtype, num_envs, n_step, gamma)
        self.alpha, self.eps = float(alpha), float(eps)
        self.tree = SumTree(capacity)
        self.max_priority = 1.0  # the largest p = |delta| + eps so far (before the power alpha)

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.tree.nodes.nbytes

    def _store(self, *transition: np.ndarray) -> np.ndarray:
        slots = super()._store(*transition)
        if len(slots):
            self.tree.update(slots, self.max_priority ** self.alpha)
        return slots

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 0.4) -> ReplaySamples:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        slots = self.tree.sample(batch_size, rng)
        probabilities = self.tree.get(slots) / self.tree.total
        weights = (self.size * probabilities) ** -beta
        batch = self._gather(slots)
        batch.weights = (weights / weights.max()).astype(np.float32)
        return batch

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        """p_i = |delta_i| + eps for the replayed slots."""
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.eps
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.update(slots, priorities ** self.alpha)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state["priorities"] = self.tree.priorities[:self.size].copy()
        state["max_priority"] = np.array(self.max_priority)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        self.tree.load_state_dict({"priorities": state["priorities"]})
        self.max_priority = float(state["max_priority"])
