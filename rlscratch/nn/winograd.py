"""Winograd's minimal filtering F(m x m, 3 x 3) for 3x3 convolutions with stride 1 and padding 1.

One dimension first. The m outputs y_i = sum_k g_k d_{i+k} (i < m, k < 3) of a 3-tap filter g slid
over a = m + 2 inputs d can be computed with a products instead of 3m (Lavin & Gray 2016):

    y = A^T [ (G g) * (B^T d) ]          A^T (m, a),  G (a, 3),  B^T (a, a),  * elementwise

The matrices come from polynomial interpolation (Toom-Cook) at a - 1 chosen points p_j and the
point at infinity. With M(x) = prod_j (x - p_j) and M_j(x) = M(x) / (x - p_j):

    A^T[i, j] = p_j^i                 (the last column, infinity: 1 in the last row, 0 elsewhere)
    G[j, k]   = p_j^k / M_j(p_j)      (the last row: (0, 0, 1))
    B^T[j, :] = M_j's coefficients    (the last row: M's coefficients), lowest power first

In 2-D the transforms act on both axes of an a x a input tile d and a 3x3 kernel g,

    y_tile = A^T [ (G g G^T) * (B^T d B) ] A            (a^2 products for m^2 outputs instead of 9 m^2)

and the sum over input channels commutes with A^T [.] A, so for each of the a^2 positions xi of the
transformed tile the channel sum is one matrix product for all tiles and samples at once:

    U[xi] = (G g G^T)[xi]  (O, C)      V[xi] = (B^T d B)[xi]  (C, N)      M[xi] = U[xi] V[xi]  (O, N)

Whole maps. The output is cut into m x m tiles, tile t of an axis reading the padded input at
positions m t .. m t + a - 1 (neighbouring tiles overlap by 2). Applying B^T to every tile of an axis
is then ONE matrix, T_in (a * tiles, L), with B^T's columns placed at each tile's offset; the zero
padding and the overhang past the map multiply zeros, so their columns are simply left out. Likewise
the output transform of an axis is T_out (L, a * tiles), A^T placed at each tile's output rows (the
overhang rows cut off). For a map x (H, W, C, N):

    V = T_in_h x T_in_w^T      (over H, then over W)       y = T_out_h M T_out_w^T

and, every step being linear, backward is the same products transposed in reverse order:

    dM = T_out_h^T dY T_out_w        dU[xi] = dM[xi] V[xi]^T  (summed over tiles)     dL/dg = G^T dU G
    dV[xi] = U[xi]^T dM[xi]          dL/dx = T_in_h^T dV T_in_w

Every operation is a matrix product in the layout (H, W, C, N) -- no tile is ever copied.

Tile size. Larger tiles need fewer products per output (a^2 / m^2: 4 for m = 2, 2.25 for m = 4,
1.78 for m = 6) but their transforms have larger entries (B^T of F(6, 3) holds 5.25), so float32
roundoff grows. Measured against float64 (64 channels, 6x6 maps; the largest error relative to the
largest entry of y, dL/dx and dL/dW): 2-6e-7 for direct float32 convolution and for m = 2, 2-5e-6 for
m = 4, 5-9e-6 for m = 6 -- far below the noise of stochastic gradients. A 6x6 map is exactly one
tile of F(6 x 6, 3 x 3), so m = 6 is the default.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .init import get_initialiser
from .module import Module

# The interpolation points of each tile size (plus infinity): small integers and halves, which keep
# the transforms' entries small.
POINTS = {2: (0.0, 1.0, -1.0), 4: (0.0, 1.0, -1.0, 2.0, -2.0), 6: (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)}


def winograd_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A^T (m, a), G (a, 3), B^T (a, a) of F(m, 3), a = m + 2, in float64 (see the module docstring)."""
    points = POINTS[m]
    a = m + 2
    at, g, bt = np.zeros((m, a)), np.zeros((a, 3)), np.zeros((a, a))
    for j, p in enumerate(points):
        m_j = np.poly([q for q in points if q != p])[::-1]  # M_j's coefficients, lowest power first
        at[:, j] = p ** np.arange(m)
        g[j] = p ** np.arange(3) / np.polyval(m_j[::-1], p)
        bt[j, :a - 1] = m_j
    at[m - 1, a - 1] = g[a - 1, 2] = 1.0
    bt[a - 1] = np.poly(points)[::-1]
    return at, g, bt


@cache
def axis_transforms(size: int, m: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(T_in (a * tiles, size), T_out (size, a * tiles)) for one axis of ``size`` pixels, rows of T_in
    and columns of T_out ordered (transformed position, tile). Cached: read-only arrays."""
    at, _, bt = winograd_matrices(m)
    a, tiles = m + 2, -(-size // m)
    t_in = np.zeros((a, tiles, m * tiles + 2))  # columns: the padded axis, 1 pixel of padding first
    t_out = np.zeros((m * tiles, a, tiles))
    for t in range(tiles):
        t_in[:, t, m * t:m * t + a] = bt
        t_out[m * t:m * t + m, :, t] = at
    t_in = t_in.reshape(a * tiles, -1)[:, 1:size + 1].astype(dtype)  # padding and overhang read zeros
    t_out = t_out.reshape(m * tiles, -1)[:size].astype(dtype)  # overhanging outputs cut off
    t_in.flags.writeable = t_out.flags.writeable = False
    return t_in, t_out


def along_axes(x: np.ndarray, t_h: np.ndarray, t_w: np.ndarray) -> np.ndarray:
    """t_h x t_w^T for x (H, W, ...): t_h (H', H) applied over axis 0 and t_w (W', W) over axis 1,
    returning (H', W', ...). Two matrix products, the second batched over the H' rows."""
    h, w, *rest = x.shape
    y = (t_h @ x.reshape(h, -1)).reshape(t_h.shape[0], w, -1)
    return np.matmul(t_w, y).reshape(t_h.shape[0], t_w.shape[0], *rest)


class WinogradConv3x3(Module):
    """A 3x3 convolution with stride 1 and padding 1 -- the same parameters W (O, C, 3, 3), b (O,)
    and function as ``Conv2d(C, O, 3, padding=1)`` -- computed with Winograd's F(m x m, 3 x 3) (the
    module docstring has the maths), which needs a^2 / (9 m^2) of the direct method's multiplications.

    The work happens in the layout (H, W, C, N), where every step is a matrix product:
    forward/backward/infer convert (N, C, H, W) at the edges, and ResidualBlock calls the *_hwcn
    methods directly so that its two convolutions share one conversion.
    """

    def __init__(self, in_channels: int, out_channels: int, rng: np.random.Generator, init: str = "he",
                 bias: bool = True, dtype=np.float32, tile: int = 6) -> None:
        super().__init__()
        if tile not in POINTS:
            raise ValueError(f"WinogradConv3x3 tile must be one of {sorted(POINTS)}, got {tile}")
        self.tile = tile
        self.add_param("W", get_initialiser(init)((out_channels, in_channels, 3, 3), rng, dtype=dtype))
        if bias:
            self.add_param("b", np.zeros(out_channels, dtype=dtype))

    def _transforms(self, h: int, w: int, dtype) -> tuple[np.ndarray, ...]:
        """T_in and T_out of both axes, in the input's dtype."""
        name = np.dtype(dtype).name
        return (*axis_transforms(h, self.tile, name), *axis_transforms(w, self.tile, name))

    def _weights(self) -> np.ndarray:
        """U (a, 1, a, 1, O, C): G g G^T for every kernel, with unit axes for the tiles."""
        weight = self.params["W"]
        o, c = weight.shape[:2]
        _, g, _ = winograd_matrices(self.tile)
        a = self.tile + 2
        kg = np.kron(g, g).astype(weight.dtype)  # (a^2, 9): a flattened 3x3 kernel -> its transform
        return (kg @ weight.reshape(o * c, 9).T).reshape(a, 1, a, 1, o, c)

    def _conv(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(V (a, tiles_h, a, tiles_w, C, N), y (H, W, O, N)) for x (H, W, C, N)."""
        h, w, c, n = x.shape
        in_h, out_h, in_w, out_w = self._transforms(h, w, x.dtype)
        a = self.tile + 2
        v = along_axes(x, in_h, in_w).reshape(a, in_h.shape[0] // a, a, in_w.shape[0] // a, c, n)
        products = np.matmul(self._weights(), v)  # a^2 * tiles products (O, C) @ (C, N)
        y = along_axes(products.reshape(in_h.shape[0], in_w.shape[0], -1, n), out_h, out_w)
        if "b" in self.params:
            y += self.params["b"][:, None]
        return v, y

    def infer_hwcn(self, x: np.ndarray) -> np.ndarray:
        return self._conv(x)[1]

    def forward_hwcn(self, x: np.ndarray) -> np.ndarray:
        v, y = self._conv(x)
        self._saved.append(v)
        return y

    def backward_hwcn(self, dy: np.ndarray) -> np.ndarray | None:
        """dL/dx (H, W, C, N) from dL/dy (H, W, O, N); None with ``input_grad = False``."""
        v = self._saved.pop()
        h, w, o, n = dy.shape
        in_h, out_h, in_w, out_w = self._transforms(h, w, dy.dtype)
        if "b" in self.grads:
            self.grads["b"] += dy.sum(axis=(0, 1, 3))
        dm = along_axes(dy, out_h.T, out_w.T).reshape(*v.shape[:4], o, n)
        du = np.matmul(dm, v.swapaxes(-1, -2)).sum(axis=(1, 3))  # (a, a, O, C), summed over tiles
        _, g, _ = winograd_matrices(self.tile)
        kg = np.kron(g, g).astype(du.dtype)
        self.grads["W"] += (kg.T @ du.reshape(kg.shape[0], -1)).T.reshape(self.params["W"].shape)
        if not self.input_grad:
            return None
        dv = np.matmul(self._weights().swapaxes(-1, -2), dm)  # (a, tiles, a, tiles, C, N)
        return along_axes(dv.reshape(in_h.shape[0], in_w.shape[0], -1, n), in_h.T, in_w.T)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.infer_hwcn(to_hwcn(x, self.params["W"].dtype)).transpose(3, 2, 0, 1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.forward_hwcn(to_hwcn(x, self.params["W"].dtype)).transpose(3, 2, 0, 1))

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        dx = self.backward_hwcn(to_hwcn(dy))
        return None if dx is None else np.ascontiguousarray(dx.transpose(3, 2, 0, 1))


def to_hwcn(x: np.ndarray, dtype=None) -> np.ndarray:
    """(N, C, H, W) -> a contiguous (H, W, C, N) copy (cast to ``dtype`` in the same pass)."""
    return np.ascontiguousarray(x.transpose(2, 3, 1, 0), dtype=dtype)
