"""MNIST as a one-step contextual bandit (Riquelme et al. 2018; Zhou et al. 2020, "Neural UCB").

Each episode is one round:

    context x = an MNIST image,   action a in {0..9},   reward r = 1 if a == label else 0,   done.

The agent never sees the label: only whether its guess was right. ``info["label"]`` and
``info["regret"] = 1 - r`` (the optimal arm always pays 1, so the regret of a round is 1 - r) are
there for logging -- the collector sums ``info["regret"]`` into charts/cumulative_regret, which is the
number of mistakes so far.

Order. ``order="shuffle"`` plays the split in a fresh seeded permutation on every pass;
``order="sequential"`` plays images 0, 1, 2, ... (evaluation: exactly the 10,000 test images once).
``reset(seed=...)`` restarts the order (for shuffle, a new permutation seed drawn from the seeded
generator); a plain ``reset()`` moves on to the next image. The whole position in the data is three
integers, which ``get_state``/``set_state`` hand to the collector for exact resume -- the permutation
itself is rebuilt from its seed, never stored.

MNIST is loaded once per process and per folder (``_DATASETS``), as uint8, so many training copies
and the evaluation envs share one ~55 MB array; each observation is scaled to float32 in [0, 1] as
it is returned (``rlscratch.data.scale_images``'s convention: x / 255).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlscratch.data import find_mnist, load_mnist

N_CLASSES = 10
ORDERS = ("shuffle", "sequential")

# (folder, split) -> (uint8 images (N, 28, 28), int64 labels (N,)), shared by every env of the process.
_DATASETS: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def mnist_split(split: str, data_path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The split's images and labels, loaded (and MD5-verified) the first time it is asked for."""
    folder = str(find_mnist(data_path).resolve())
    key = (folder, split)
    if key not in _DATASETS:
        images, labels = load_mnist(split, folder)  # type: ignore[arg-type]
        images.setflags(write=False)  # shared by every env: nobody may write into it
        labels = labels.astype(np.int64)
        labels.setflags(write=False)
        _DATASETS[key] = (images, labels)
    return _DATASETS[key]


class MNISTBandit(gym.Env):
    """One image per episode; guess its digit. See the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, split: str = "train", order: str = "shuffle", data_path: str | None = None,
                 flat: bool = True, render_mode: str | None = None) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.images, self.labels = mnist_split(split, data_path)
        self.split, self.order, self.flat, self.render_mode = split, order, flat, render_mode
        shape = (28 * 28,) if flat else (1, 28, 28)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(N_CLASSES)
        # Position in the data: pass number and cursor within the pass's order (see get_state).
        self._order_seed: int | None = None
        self._epoch = 0
        self._cursor = 0
        self._permutation: np.ndarray | None = None  # cache of the current pass's order

    # -- where we are in the data ------------------------------------------------------------------
    @property
    def index(self) -> int:
        """Position in the split of the current image (for analysis; agents see only the pixels)."""
        return self._index()

    def _index(self) -> int:
        if self.order == "sequential":
            return self._cursor
        if self._permutation is None:
            # One generator per (seed, pass): any pass can be rebuilt without replaying the others.
            self._permutation = np.random.default_rng([self._order_seed, self._epoch]).permutation(len(self.labels))
        return int(self._permutation[self._cursor])

    def _observation(self) -> np.ndarray:
        # A new array on every call: callers may keep (or modify) what they are given.
        image = self.images[self._index()].astype(np.float32)
        image /= np.float32(255.0)
        return image.reshape(self.observation_space.shape)

    def get_state(self) -> dict[str, int]:
        """The position in the data as three integers (tiny: captured before every reset)."""
        return {"order_seed": self._order_seed, "epoch": self._epoch, "cursor": self._cursor}

    def set_state(self, state: dict[str, int]) -> None:
        self._order_seed, self._epoch, self._cursor = state["order_seed"], state["epoch"], state["cursor"]
        self._permutation = None

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._order_seed is None:
            # A (re)seeded start: a new order, from its first image.
            self._order_seed = int(self.np_random.integers(2**63))
            self._epoch, self._cursor = 0, 0
            self._permutation = None
        else:
            self._cursor += 1
            if self._cursor == len(self.labels):  # pass complete: the next one in a new order
                self._epoch, self._cursor = self._epoch + 1, 0
                self._permutation = None
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {N_CLASSES}), got {action!r}")
        label = int(self.labels[self._index()])
        reward = 1.0 if int(action) == label else 0.0
        # The round is over (terminated: nothing follows it). The final observation is the same
        # image; no agent should use it, since nothing is bootstrapped past a termination.
        return self._observation(), reward, True, False, {"label": label, "regret": 1.0 - reward}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return np.repeat(self.images[self._index()][:, :, None], 3, axis=2)
