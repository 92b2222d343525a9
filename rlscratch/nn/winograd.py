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
overhang rows cut off). For each channel's map x (H, W) of each sample:

    V = T_in_h x T_in_w^T      (over W, then over H)       y = T_out_h M T_out_w^T

and, every step being linear, backward is the same products transposed in reverse order:

    dM = T_out_h^T dY T_out_w        dU[xi] = dM[xi] V[xi]^T  (summed over tiles)     dL/dg = G^T dU G
    dV[xi] = U[xi]^T dM[xi]          dL/dx = T_in_h^T dV T_in_w

Every operation is a matrix product -- no tile is ever copied, no array transposed by copying.

Tile size. Larger tiles need fewer products per output (a^2 / m^2: 4 for m = 2, 2.25 for m = 4,
1.78 for m = 6) but their transforms have larger entries (B^T of F(6, 3) holds 5.25), so float32
roundoff grows. Measured against float64 (64 channels, 6x6 maps; the largest error relative to the
largest entry of y, dL/dx and dL/dW; 16 samples): 2-6e-7 for direct float32 convolution and for
m = 2, 2-5e-6 for m = 4, 4-10e-6 for m = 6 -- far below the noise of stochastic gradients. A 6x6 map is exactly one
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


@cache
def winograd_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A^T (m, a), G (a, 3), B^T (a, a) of F(m, 3), a = m + 2, in float64 (see the module docstring).
    Cached: read-only arrays."""
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
    for matrix in (at, g, bt):
        matrix.flags.writeable = False
    return at, g, bt


@cache
def kernel_transform(m: int, dtype: str) -> np.ndarray:
    """kron(G, G) (a^2, 9): a 3x3 kernel flattened row by row -> its a x a transform G g G^T, flattened.
    Cached: read-only."""
    _, g, _ = winograd_matrices(m)
    kg = np.kron(g, g).astype(dtype)
    kg.flags.writeable = False
    return kg


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


def transform_last_axis(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply t (L', L) along x's LAST axis and put the result axis FIRST: (..., L) -> (L', ...).

    One matrix product, t X^T with X = x as a (-1, L) matrix: BLAS reads X transposed as it packs
    its operands, so the axis moves to the front without any transposing copy."""
    return (t @ x.reshape(-1, x.shape[-1]).T).reshape(t.shape[0], *x.shape[:-1])


def transform_first_axis(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply t (L', L) along x's FIRST axis and put the result axis LAST: (L, ...) -> (..., L').

    One matrix product, X^T t^T with X = x as an (L, -1) matrix (the inverse move of the above)."""
    return (x.reshape(x.shape[0], -1).T @ t.T).reshape(*x.shape[1:], t.shape[0])


class WinogradConv3x3(Module):
    """A 3x3 convolution with stride 1 and padding 1 -- the same parameters W (O, C, 3, 3), b (O,)
    and function as ``Conv2d(C, O, 3, padding=1)`` -- computed with Winograd's F(m x m, 3 x 3) (the
    module docstring has the maths), which needs a^2 / (9 m^2) of the direct method's multiplications.

    Layouts. The a^2 products M[xi] = V[xi] U[xi]^T want each V[xi] as one contiguous (N, C) matrix,
    i.e. V in the layout (a_h, a_w, N, C) (a_h = a * tiles_h, a_w = a * tiles_w), while x arrives and y
    leaves as (N, C, H, W). The transforms do the reordering for free: applying T_in_w along W moves
    the transformed axis first, (N, C, H, W) -> (a_w, N, C, H), and T_in_h along H then gives
    (a_h, a_w, N, C); on the way out T_out_h and T_out_w, applied along the first axis, move it last:
    (a_h, a_w, N, O) -> (a_w, N, O, H) -> (N, O, H, W). Each step is one matrix product (see
    transform_last_axis), and backward uses the same two functions with the transposed matrices.
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
        self._u_t_cache: tuple[bytes, np.ndarray] | None = None   # (W's bytes, its U^T): see infer

    def _transforms(self, h: int, w: int) -> tuple[np.ndarray, ...]:
        """T_in and T_out of both axes, in the weights' dtype."""
        name = self.params["W"].dtype.char   # (dtype.name is a slow Python property; char is not)
        return (*axis_transforms(h, self.tile, name), *axis_transforms(w, self.tile, name))

    def _weights_t(self) -> np.ndarray:
        """U^T (a, 1, a, 1, C, O): (G g G^T)[xi] for every kernel, transposed to (C, O) for V[xi] U[xi]^T,
        with unit axes that broadcast over the tiles."""
        weight = self.params["W"]
        o, c = weight.shape[:2]
        a = self.tile + 2
        kg = kernel_transform(self.tile, weight.dtype.char)
        return (kg @ weight.transpose(2, 3, 1, 0).reshape(9, c * o)).reshape(a, 1, a, 1, c, o)

    def _conv(self, x: np.ndarray, u_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(V (a, tiles_h, a, tiles_w, N, C), y (N, O, H, W)) for x (N, C, H, W) and U^T."""
        x = np.asarray(x, dtype=self.params["W"].dtype)
        n, c, h, w = x.shape
        in_h, out_h, in_w, out_w = self._transforms(h, w)
        a = self.tile + 2
        v = transform_last_axis(transform_last_axis(x, in_w), in_h)  # (a_h, a_w, N, C)
        v = v.reshape(a, v.shape[0] // a, a, v.shape[1] // a, n, c)
        products = np.matmul(v, u_t)  # a^2 * tiles products (N, C) @ (C, O)
        products = products.reshape(in_h.shape[0], in_w.shape[0], n, -1)  # (a_h, a_w, N, O)
        y = transform_first_axis(transform_first_axis(products, out_h), out_w)  # (N, O, H, W)
        if "b" in self.params:
            y += self.params["b"][:, None, None]
        return v, y

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._conv(x, self._inference_weights_t())[1]

    def _inference_weights_t(self) -> np.ndarray:
        """``_weights_t()``, reused while W holds the same bytes: a search calls ``infer`` a few dozen
        times between two optimizer steps, and the same W gives the same U^T (so the same bits)."""
        weight = self.params["W"]
        key = weight.tobytes()
        cached = self._u_t_cache
        if cached is None or cached[0] != key:
            cached = self._u_t_cache = (key, self._weights_t())
        return cached[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        u_t = self._weights_t()
        v, y = self._conv(x, u_t)
        self._saved.append((v, u_t))
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        v, u_t = self._saved.pop()
        n, o, h, w = dy.shape
        in_h, out_h, in_w, out_w = self._transforms(h, w)
        if "b" in self.grads:
            self.grads["b"] += dy.sum(axis=0).reshape(o, -1).sum(axis=1)  # batch first: contiguous adds
        dm = transform_last_axis(transform_last_axis(dy, out_w.T), out_h.T).reshape(*v.shape[:4], n, o)
        du_t = np.matmul(v.swapaxes(-1, -2), dm).sum(axis=(1, 3))  # (a, a, C, O): dU^T, summed over tiles
        kg = kernel_transform(self.tile, du_t.dtype.char)
        d_weight = (kg.T @ du_t.reshape(kg.shape[0], -1)).reshape(3, 3, *du_t.shape[2:])  # (3, 3, C, O)
        self.grads["W"] += d_weight.transpose(3, 2, 0, 1)
        if not self.input_grad:
            return None
        dv = np.matmul(dm, u_t.swapaxes(-1, -2))  # (a, tiles, a, tiles, N, C)
        dv = dv.reshape(in_h.shape[0], in_w.shape[0], n, -1)
        return transform_first_axis(transform_first_axis(dv, in_h.T), in_w.T)  # (N, C, H, W)
