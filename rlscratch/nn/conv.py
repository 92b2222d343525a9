"""Convolution and max-pooling on NCHW images (batch, channels, height, width).

Both layers look at the input through *windows*: the kh x kw patch under each output pixel. numpy's
``as_strided`` builds a view whose extra axes walk those patches without copying anything, so the
convolution becomes "gather every patch into a matrix (im2col), then one matrix product", and its
backward is the product's two gradients followed by "add each patch's gradient back where the patch
came from (col2im)". The only Python loop is over the kh*kw kernel offsets, never over pixels.

Output size, for a side of length L, kernel k, stride s and zero padding p:

    L_out = floor((L + 2p - k) / s) + 1
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .activations import relu
from .init import get_initialiser
from .module import Module
from .winograd import WinogradConv3x3


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _out_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """A read-only view (N, C, kh, kw, H_out, W_out) of x (N, C, H, W): element [n, c, i, j, a, b] is
    x[n, c, a*sh + i, b*sw + j], kernel offset (i, j) of the window under output pixel (a, b).

    No data moves: the view steps through x's memory with x's own strides, the offset axes by one
    pixel and the output axes by one stride."""
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    s_n, s_c, s_h, s_w = x.strides
    shape = (n, c, kh, kw, _out_size(h, kh, sh), _out_size(w, kw, sw))
    return as_strided(x, shape, (s_n, s_c, s_h, s_w, s_h * sh, s_w * sw), writeable=False)


# Internal layouts of Conv2d, as permutations of (N, C, H, W). For the whole-batch patch matrix:
# channels first (its rows), then the column axes in memory order. "fold": (C, N, H, W), each map's
# rows contiguous; "batch-last": (C, H, W, N), the batch innermost. "per-sample": (N, C, H, W) itself,
# one patch matrix per sample.
FOLD, BATCH_LAST, PER_SAMPLE = (1, 0, 2, 3), (1, 2, 3, 0), (0, 1, 2, 3)
# Layers whose patch matrix has at most this many rows (C*kh*kw) use the per-sample layout; of the
# others, maps narrower than BATCH_LAST_BELOW_WIDTH use batch-last (see Conv2d, "Layout").
PER_SAMPLE_MAX_ROWS = 64
BATCH_LAST_BELOW_WIDTH = 16


class Conv2d(Module):
    """2-D convolution (strictly: cross-correlation, as in every DL library) with zero padding.

    Shapes: x (N, C, H, W), weight W (O, C, kh, kw), bias b (O,), y (N, O, H_out, W_out).

    Forward:   y[n, o, a, b] = b[o] + sum_{c,i,j} W[o, c, i, j] * xp[n, c, a*s + i, b*s + j]
               with xp = x zero-padded by p on each side. As one matrix product for the whole batch:
                   X = im2col(xp)            (C*kh*kw, N*P)  one column per output pixel of every sample,
                                                             P = H_out*W_out
                   Y = W_mat X + b           (O, N*P)        W_mat = W reshaped to (O, C*kh*kw)
               and y is Y with its columns unfolded to (N, H_out, W_out) and the batch axis moved first.
    Backward:  dL/dW_mat += dY X^T           (O, C*kh*kw)    -- Linear's rule, summed over pixels and batch
               dL/db     += sum of dY's rows (O,)
               dX         = W_mat^T dY       (C*kh*kw, N*P)  -- gradient of every patch entry
               dL/dxp     = col2im(dX): each patch entry's gradient is added back to the input pixel it
                            was read from (pixels shared by overlapping patches receive several
                            contributions); dL/dx is dL/dxp with the padding cut off.
    With ``input_grad = False`` (the first layer: its input is data) backward stops after dL/db, which
    skips a third of the products and all of col2im.

    Layout. The columns of X can be ordered (N, H_out, W_out) -- "fold" -- or (H_out, W_out, N) --
    "batch-last"; the products are the same, what changes is the length of the contiguous runs that
    im2col and col2im copy. Folded, a run is one row of a map (W_out numbers), so on 6x6 or 10x10
    maps numpy spends its time stepping between runs of 6-10 numbers; batch-last, a run is W_out*N
    numbers, but the output must then be transposed with the batch axis moving from innermost to
    outermost, a gather one number at a time. Measured (one BLAS thread, 2-core machine, a whole
    conv step): fold 2x faster on 28x28 maps (1->16 channels, batch 64); batch-last 1.3-1.6x faster
    on 10x10 and 6x6 maps (16->32 channels, batch 32; 64->64, batch 128). So maps narrower than
    ``BATCH_LAST_BELOW_WIDTH`` use batch-last.

    Per-sample. The same maths one sample at a time: X_n = im2col(xp_n) (C*kh*kw, P), Y_n = W_mat X_n
    + b, dL/dW_mat += sum_n dY_n X_n^T, dX_n = W_mat^T dY_n -- a batch of N products (np.matmul) whose
    results are already in (N, O, H_out, W_out) order, so neither y nor dY is ever transposed. The
    bias rides in the product: W_mat gains a column b and X_n a row of ones, so Y_n = [W_mat b] [X_n; 1]
    and dL/db is the last column of sum_n dY_n [X_n; 1]^T. When X has few rows (a layer near the input:
    1 or 4 channels) moving y and dY costs more than the products, and this layout wins: measured as
    above (forward + backward without dL/dx, and infer), 1.3x and 1.7x faster than fold on 28x28 maps
    (1->16 channels, batch 64), 1.4x and 1.1x faster than batch-last on 10x10 maps (4->16, valid, batch
    32; the MinAtar Q-network's conv); with 144 rows (16->32 channels on 10x10 maps) batch-last is
    1.2x faster again. So layers with at most ``PER_SAMPLE_MAX_ROWS`` rows use it.
    """

    returns_fresh = True  # y and dL/dx are new arrays (it keeps the patch matrix, not y)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 rng: np.random.Generator, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, init: str = "he", bias: bool = True,
                 dtype=np.float32) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.add_param("W", get_initialiser(init)((out_channels, in_channels, *self.kernel), rng, dtype=dtype))
        if bias:
            self.add_param("b", np.zeros(out_channels, dtype=dtype))

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return _out_size(h + 2 * ph, kh, sh), _out_size(w + 2 * pw, kw, sw)

    def _layout(self, x_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        if x_shape[1] * self.kernel[0] * self.kernel[1] <= PER_SAMPLE_MAX_ROWS:
            return PER_SAMPLE
        return BATCH_LAST if self._out_hw(*x_shape[2:])[1] < BATCH_LAST_BELOW_WIDTH else FOLD

    def _im2col(self, x: np.ndarray, layout: tuple[int, ...], ones_row: bool = False) -> np.ndarray:
        """The patch matrix X (C*kh*kw, N*H_out*W_out), columns in the layout's order: x is copied once
        into the zero-padded internal layout, and once more, through a windows view, into X.

        ``ones_row`` appends a row of ones, so that backward's product dY [X; 1]^T holds dL/db in its
        last column (the sum of dY's rows) and no separate pass over dY is needed for it."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        n, c, h, w = x.shape
        h_out, w_out = self._out_hw(h, w)
        padded_shape = np.array((n, c, h + 2 * ph, w + 2 * pw))[list(layout)]
        xp = np.zeros(padded_shape, dtype=self.params["W"].dtype)  # cast once, as Linear does
        inner = [slice(None), slice(None), slice(ph, ph + h), slice(pw, pw + w)]
        xp[tuple(inner[axis] for axis in layout)] = x.transpose(layout)
        # The windows view (C, kh, kw, <the column axes>): a kernel offset steps one pixel, an output
        # pixel steps one stride, the batch one sample.
        strides = dict(zip(layout, xp.strides))
        sizes = {0: n, 2: h_out, 3: w_out}
        steps = {0: strides[0], 2: strides[2] * sh, 3: strides[3] * sw}
        column_axes = layout[1:]
        patches = as_strided(xp, (c, kh, kw, *(sizes[a] for a in column_axes)),
                             (strides[1], strides[2], strides[3], *(steps[a] for a in column_axes)),
                             writeable=False)
        if not ones_row:
            return patches.reshape(c * kh * kw, -1)
        k = c * kh * kw
        cols = np.empty((k + 1, patches.size // k), dtype=xp.dtype)
        cols[:k].reshape(patches.shape)[...] = patches
        cols[k] = 1.0
        return cols

    def _conv(self, cols: np.ndarray, x_shape: tuple[int, ...], layout: tuple[int, ...]) -> np.ndarray:
        weight = self.params["W"]
        w_mat = weight.reshape(weight.shape[0], -1)
        y_mat = w_mat @ cols[:w_mat.shape[1]]  # (O, K) @ (K, N*P) -> (O, N*P), any row of ones left out
        n, _, h, w = x_shape
        out_shape = (n, weight.shape[0], *self._out_hw(h, w))
        y_view = y_mat.reshape(np.array(out_shape)[list(layout)]).transpose(np.argsort(layout))  # (N, O, H_out, W_out)
        if "b" not in self.params:
            return np.ascontiguousarray(y_view)
        # The bias is added in the same pass that copies y into (N, O, H_out, W_out) order.
        y = np.empty(out_shape, dtype=y_mat.dtype)
        np.add(y_view, self.params["b"][:, None, None], out=y)
        return y

    # -- the per-sample layout: one patch matrix per sample, one product per sample ---------------
    def _im2col_per_sample(self, x: np.ndarray) -> np.ndarray:
        """X (N, C*kh*kw [+ 1], P): sample n's patch matrix, with a row of ones when there is a bias;
        in the weights' dtype (a float64 input to a float32 layer is cast here, not upcasting y).

        Entry [n, (c, i, j), (a, b)] is xp[n, c, a*sh + i, b*sw + j]. Copied straight from the windows
        view, numpy moves one run of W_out numbers at a time (8 on a 10x10 map), and on small maps the
        cost per run (~7 ns of loop overhead) is the whole cost.

        Stride 1: each run X_n[(c, i, j), a, :] = xp[n, c, a + i, j : j + W_out] is W_out *consecutive*
        numbers of xp, so both sides are viewed with a numpy void dtype of W_out numbers' bytes -- an
        opaque item that numpy copies whole -- and the copy moves N*C*kh*kw*H_out items instead of
        numbers. Measured (one core, the MinAtar conv, 4x10x10, batch 32): 2x faster than the two
        copies below.

        Other strides, two copies: first ``shifted`` [n, c, j, row, b] = xp[n, c, row, b*sw + j],
        every row cut to its W_out columns for each column offset j; then the patch rows, in which the
        H_out rows a*sh + i of ``shifted`` are runs of W_out numbers (one block of H_out*W_out when
        sh = 1)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        n, c = x.shape[:2]
        dtype = self.params["W"].dtype
        if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
            # a 1x1 convolution's patch matrix is the map itself, (C, H*W) per sample: one copy
            cols = np.empty((n, c + ("b" in self.params), x.shape[2] * x.shape[3]), dtype=dtype)
            cols[:, :c] = x.reshape(n, c, -1)
            cols[:, c:] = 1.0
            return cols
        if ph or pw:
            xp = np.zeros((n, c, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), dtype=dtype)
            xp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
        else:
            xp = np.ascontiguousarray(x, dtype=dtype)  # (no copy for the usual contiguous float32 batch)
        h_pad = xp.shape[2]
        h_out, w_out = _out_size(h_pad, kh, sh), _out_size(xp.shape[3], kw, sw)
        s_n, s_c, s_h, s_w = xp.strides
        k = c * kh * kw
        cols = np.empty((n, k + ("b" in self.params), h_out * w_out), dtype=dtype)
        patch_shape = (n, c, kh, kw, h_out, w_out)
        if sw == 1:
            run = np.dtype((np.void, w_out * xp.itemsize))  # W_out numbers as one item
            runs = np.ndarray(patch_shape[:5], dtype=run, buffer=xp, strides=(s_n, s_c, s_h, s_w, s_h * sh))
            cols[:, :k].reshape(patch_shape).view(run)[..., 0] = runs
        else:
            shifted = np.empty((n, c, kw, h_pad, w_out), dtype=dtype)
            shifted[...] = as_strided(xp, shifted.shape, (s_n, s_c, s_w, s_h, s_w * sw), writeable=False)
            r_n, r_c, r_j, r_h, r_w = shifted.strides
            cols[:, :k].reshape(patch_shape)[...] = as_strided(shifted, patch_shape,
                                                               (r_n, r_c, r_h, r_j, r_h * sh, r_w), writeable=False)
        cols[:, k:] = 1.0
        return cols

    def _conv_per_sample(self, cols: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        """y (N, O, H_out, W_out) = [W_mat b] [X_n; 1] for every sample n: the bias comes out of the
        product, and y out of it already in (N, O, H_out, W_out) order."""
        weight = self.params["W"]
        w_aug = np.empty((weight.shape[0], cols.shape[1]), dtype=weight.dtype)
        w_aug[:, :weight[0].size] = weight.reshape(weight.shape[0], -1)
        w_aug[:, weight[0].size:] = self.params["b"][:, None] if "b" in self.params else 0.0
        return np.matmul(w_aug, cols).reshape(x_shape[0], weight.shape[0], *self._out_hw(*x_shape[2:]))

    def _backward_per_sample(self, dy: np.ndarray, cols: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray | None:
        weight = self.params["W"]
        n, out_ch, k = dy.shape[0], weight.shape[0], weight[0].size
        dy_mat = dy.reshape(n, out_ch, -1)
        # sum_n dY_n [X_n; 1]^T, computed transposed: sum_n [X_n; 1] dY_n^T, whose products (K + 1, P) @
        # (P, O) OpenBLAS runs 1.15x faster than (O, P) @ (P, K + 1) on the MinAtar conv (one core)
        d_aug = np.matmul(cols, dy_mat.transpose(0, 2, 1)).sum(axis=0).T
        self.grads["W"] += d_aug[:, :k].reshape(weight.shape)
        if "b" in self.grads:
            self.grads["b"] += d_aug[:, k]
        if not self.input_grad:
            return None
        d_cols = np.matmul(weight.reshape(out_ch, k).T, dy_mat).reshape(n, -1, *self.kernel, *dy.shape[2:])
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        _, c, h, w = x_shape
        h_out, w_out = dy.shape[2:]
        dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=d_cols.dtype)
        for i in range(kh):
            for j in range(kw):
                dxp[:, :, i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw] += d_cols[:, :, i, j]
        return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])

    def infer(self, x: np.ndarray) -> np.ndarray:
        layout = self._layout(x.shape)
        if layout == PER_SAMPLE:
            return self._conv_per_sample(self._im2col_per_sample(x), x.shape)
        return self._conv(self._im2col(x, layout), x.shape, layout)

    def forward(self, x: np.ndarray) -> np.ndarray:
        layout = self._layout(x.shape)
        if layout == PER_SAMPLE:
            cols = self._im2col_per_sample(x)
            self._saved.append((cols, x.shape, layout))
            return self._conv_per_sample(cols, x.shape)
        cols = self._im2col(x, layout, ones_row="b" in self.params)
        self._saved.append((cols, x.shape, layout))
        return self._conv(cols, x.shape, layout)

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        cols, x_shape, layout = self._saved.pop()
        if layout == PER_SAMPLE:
            return self._backward_per_sample(dy, cols, x_shape)
        weight = self.params["W"]
        out_ch = weight.shape[0]
        dy_mat = np.ascontiguousarray(dy.transpose(layout)).reshape(out_ch, -1)  # dY (O, N*P), X's column order

        d_weight = dy_mat @ cols.T  # (O, K), or (O, K + 1) with dL/db last (forward's row of ones)
        self.grads["W"] += d_weight[:, :weight[0].size].reshape(weight.shape)
        if "b" in self.grads:
            self.grads["b"] += d_weight[:, -1]
        if not self.input_grad:
            return None

        # Gradient of every patch entry, (C, kh, kw, <column axes>) like the rows of X.
        internal_out = np.array(dy.shape)[list(layout)]
        d_cols = (weight.reshape(out_ch, -1).T @ dy_mat).reshape(-1, *self.kernel, *internal_out[1:])

        # col2im: for each kernel offset (i, j), the patch entries at that offset came from a strided
        # grid of input pixels; one vectorised add per offset sends them all back at once, in the
        # internal layout (whose runs are long); the last copy restores (N, C, H, W) and cuts off the
        # padding.
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        n, c, h, w = x_shape
        _, _, h_out, w_out = dy.shape
        dxp = np.zeros(np.array((n, c, h + 2 * ph, w + 2 * pw))[list(layout)], dtype=d_cols.dtype)
        for i in range(kh):
            for j in range(kw):
                grid = [slice(None), slice(None), slice(i, i + sh * (h_out - 1) + 1, sh),
                        slice(j, j + sw * (w_out - 1) + 1, sw)]
                dxp[tuple(grid[axis] for axis in layout)] += d_cols[:, i, j]
        inner = [slice(None), slice(None), slice(ph, ph + h), slice(pw, pw + w)]
        return np.ascontiguousarray(dxp[tuple(inner[axis] for axis in layout)].transpose(np.argsort(layout)))


class MaxPool2d(Module):
    """Max pooling over kh x kw windows taken every ``stride`` pixels (default: stride = kernel, the
    usual non-overlapping tiling). No padding; rows/columns that do not fill a window are dropped.

    Forward:   y[n, c, a, b] = max_{i,j} x[n, c, a*s + i, b*s + j]
    Backward:  dL/dx[n, c, a*s + i*, b*s + j*] += dL/dy[n, c, a, b] for the window's arg-max (i*, j*);
               every other input pixel of the window gets nothing from it (the max is locally the
               identity on the winner and constant in the losers). With overlapping windows one pixel can
               win several windows and collects all their gradients.

    Ties: max is not differentiable where two entries are equal; we route the whole gradient to ONE
    of them, the first in row-major order within the window (``argmax``'s choice), so the gradient
    has the same total as dL/dy. (Splitting it, or giving every tied entry the full gradient, are
    other conventions; PyTorch also picks a single winner.)
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kernel = _pair(kernel_size)
        self.stride = self.kernel if stride is None else _pair(stride)

    def _winners(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y, index of each window's winner within its flattened kh*kw window), y (N, C, H_out, W_out)."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        n, c, h, w = x.shape
        h_out, w_out = _out_size(h, kh, sh), _out_size(w, kw, sw)
        if (kh, kw) == (sh, sw):
            # Non-overlapping windows tile the (cropped) image: a reshape exposes them as axes 3 and 5.
            tiles = x[:, :, :h_out * kh, :w_out * kw].reshape(n, c, h_out, kh, w_out, kw)
            flat = tiles.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h_out, w_out, kh * kw)
        else:
            flat = windows(x, self.kernel, self.stride).transpose(0, 1, 4, 5, 2, 3)
            flat = flat.reshape(n, c, h_out, w_out, kh * kw)
        winner = flat.argmax(axis=-1)
        y = np.take_along_axis(flat, winner[..., None], axis=-1)[..., 0]
        return y, winner

    def infer(self, x: np.ndarray) -> np.ndarray:
        (kh, kw), (sh, sw) = self.kernel, self.stride
        if (kh, kw) == (sh, sw):  # no winner needed: reduce the tile axes directly
            n, c, h, w = x.shape
            h_out, w_out = h // kh, w // kw
            return x[:, :, :h_out * kh, :w_out * kw].reshape(n, c, h_out, kh, w_out, kw).max(axis=(3, 5))
        return self._winners(x)[0]

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, winner = self._winners(x)
        self._saved.append((winner, x.shape))
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        winner, x_shape = self._saved.pop()
        (kh, kw), (sh, sw) = self.kernel, self.stride
        n, c, h, w = x_shape
        _, _, h_out, w_out = dy.shape
        dx = np.zeros(x_shape, dtype=dy.dtype)
        if (kh, kw) == (sh, sw):
            # Scatter dy into the winner's slot of each tile, then undo forward's reshapes.
            d_flat = np.zeros((n, c, h_out, w_out, kh * kw), dtype=dy.dtype)
            np.put_along_axis(d_flat, winner[..., None], dy[..., None], axis=-1)
            d_tiles = d_flat.reshape(n, c, h_out, w_out, kh, kw).transpose(0, 1, 2, 4, 3, 5)
            dx[:, :, :h_out * kh, :w_out * kw] = d_tiles.reshape(n, c, h_out * kh, w_out * kw)
            return dx
        # Overlapping windows: one pixel may win several windows, so contributions must add up.
        # np.bincount sums the weights that land on the same flat index (a fast np.add.at).
        rows = np.arange(h_out)[:, None] * sh + winner // kw  # (N, C, H_out, W_out) input row of the winner
        cols = np.arange(w_out)[None, :] * sw + winner % kw
        planes = np.arange(n * c).reshape(n, c, 1, 1)  # which (n, c) image plane
        flat_index = (planes * h + rows) * w + cols
        dx[...] = np.bincount(flat_index.ravel(), weights=dy.ravel(), minlength=dx.size).reshape(x_shape)
        return dx


class ResidualBlock(Module):
    """The residual block of MuZero's and EfficientZero's representation networks (without their
    batch normalisation): two same-size 3x3 convolutions around a skip connection.

    Forward:   h = conv1(x),  a = relu(h),  z = conv2(a),  y = relu(x + z)
    Backward:  g  = dL/dy * [y > 0]                    (the outer ReLU)
               dL/da = conv2's backward of g,  dL/dh = dL/da * [a > 0]
               dL/dx = g + conv1's backward of dL/dh   (the skip path and the body path add)
    With ``input_grad = False`` (the block is the network's first layer) conv1 skips dL/dx too.

    The convolutions are ``WinogradConv3x3`` (Conv2d's function with fewer multiplications; rlscratch/nn/
    winograd.py).
    """

    def __init__(self, channels: int, kernel_size: int, rng: np.random.Generator, init: str = "he",
                 dtype=np.float32) -> None:
        super().__init__()
        if kernel_size != 3:
            raise ValueError(f"ResidualBlock has 3x3 convolutions (Winograd), got kernel {kernel_size}")
        self.conv1 = WinogradConv3x3(channels, channels, rng, init=init, dtype=dtype)
        self.conv2 = WinogradConv3x3(channels, channels, rng, init=init, dtype=dtype)

    @staticmethod
    def _block(x: np.ndarray, conv1, conv2) -> tuple[np.ndarray, np.ndarray]:
        a = conv1(x)
        relu(a, out=a)
        y = conv2(a)
        y += x
        return a, relu(y, out=y)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._block(x, self.conv1.infer, self.conv2.infer)[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        a, y = self._block(x, self.conv1.forward, self.conv2.forward)
        self._saved.append((a, y))
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        a, y = self._saved.pop()
        g = dy * (y > 0)
        dh = self.conv2.backward(g)
        dh *= a > 0
        self.conv1.input_grad = self.input_grad
        dx = self.conv1.backward(dh)
        if dx is None:
            return None
        dx += g
        return dx
