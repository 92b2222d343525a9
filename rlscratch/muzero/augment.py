"""EfficientZero's observation augmentation for training (Ye et al. 2021, after SPR, Schwarzer et al. 2021).

EfficientZero draws a fresh random transformation of every training batch's observations -- the
representation's input o_t and, separately, the consistency target's o_{t+1..t+K} -- so the model
cannot rely on exact pixel positions or intensities. Two of its transformations (its ``shift`` and
``intensity``, in the order the config lists them; EZ V1 uses both):

    shift      pad each image by 1 cell on every side, repeating the edge (EZ: ReplicationPad2d), and
               crop a window of the original size at a random offset (i, j) in {0, 1, 2}^2: the board
               moves by at most one cell each way. out[h, w] = x[clip(h + i - 1), clip(w + j - 1)].
    intensity  multiply the whole image by 1 + 0.05 * clip(z, -2, 2), z ~ N(0, 1): a factor in [0.9, 1.1].

One draw per sample: EfficientZero transforms each sample's stacked frames as one image, so the K
target observations of one sample share their offset and factor (and the representation's input has
its own). The draws come from the agent's generator, which its checkpoint holds: a resumed run draws
exactly what an uninterrupted one would. Only training sees augmented observations; the search,
acting and reanalysis see the real ones.
"""

from __future__ import annotations

import numpy as np

from rlscratch.encoders import image_layout
from rlscratch.errors import ConfigError

AUGMENTATIONS = ("shift", "intensity")
SHIFT_PAD = 1          # cells (EfficientZero on 96x96 Atari frames: 4)
INTENSITY_SCALE = 0.05


def shift(images: np.ndarray, offsets: np.ndarray, pad: int = SHIFT_PAD) -> np.ndarray:
    """images (N, ..., H, W), offsets (N, 2) of ints in [0, 2 pad]: each sample edge-padded by ``pad``
    and cropped back to H x W at its (row, column) offset. Offset (pad, pad) leaves it unchanged."""
    h, w = images.shape[-2:]
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    out = np.empty_like(images)
    for i in range(2 * pad + 1):   # one slice per possible offset, for all samples that drew it
        for j in range(2 * pad + 1):
            rows = (offsets[:, 0] == i) & (offsets[:, 1] == j)
            out[rows] = padded[rows, ..., i:i + h, j:j + w]
    return out


def intensity(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """images (N, ...) times one factor (N,) per sample."""
    return images * factors.astype(images.dtype).reshape(-1, *[1] * (images.ndim - 1))


def intensity_factors(rng: np.random.Generator, n: int, scale: float = INTENSITY_SCALE) -> np.ndarray:
    """1 + scale * clip(z, -2, 2) for n standard normal draws z."""
    return 1.0 + scale * np.clip(rng.standard_normal(n), -2.0, 2.0)


def check_augmentation(kinds: list, network: str) -> tuple[str, ...]:
    """The config's ``augmentation`` list, validated (a one-line ConfigError naming the fix)."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"agent.augmentation: unknown {unknown[0]!r}; choose from {', '.join(AUGMENTATIONS)} "
                          f"(e.g. [shift, intensity]) or [] for none")
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"agent.augmentation: {list(kinds)} lists one augmentation twice; list each once")
    if kinds and network != "conv":
        raise ConfigError("agent.augmentation: shift and intensity augment image observations; this agent's "
                          "network is mlp -- use network: conv or augmentation: []")
    return kinds


class Augmentation:
    """The configured augmentations of stored observations (flattened in the env's layout, e.g.
    MinAtar's (H, W, C)), one draw per sample; see the module docstring."""

    def __init__(self, kinds: tuple[str, ...], obs_shape: tuple[int, ...], dtype=np.float32) -> None:
        self.kinds, self.obs_shape, self.dtype = tuple(kinds), tuple(obs_shape), dtype
        self.move, _ = image_layout(self.obs_shape, "auto")   # the axes permutation to (..., C, H, W)

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """obs (N, D) or (N, K, D) -> the same shape in ``dtype``, augmented; the K observations of one
        sample share its draws."""
        lead = obs.shape[:-1]
        n, k = len(obs), len(lead)
        x = np.asarray(obs, dtype=self.dtype).reshape(*lead, *self.obs_shape)
        x = x.transpose(*range(k), *(k + a for a in self.move))   # (..., C, H, W): height and width last
        for kind in self.kinds:
            if kind == "shift":
                x = shift(x, rng.integers(0, 2 * SHIFT_PAD + 1, size=(n, 2)))
            else:
                x = intensity(x, intensity_factors(rng, n))
        back = np.argsort((*range(k), *(k + a for a in self.move)))
        return np.ascontiguousarray(x.transpose(*back)).reshape(obs.shape)
