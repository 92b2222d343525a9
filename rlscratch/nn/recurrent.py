"""Recurrent cells (RNN, GRU, LSTM) and backpropagation through time.

A *cell* computes one time step: (input x_t, state s_{t-1}) -> s_t. For RNNCell and GRUCell the state
is the hidden vector h; for LSTMCell it is the pair (h, c). ``Recurrent`` unrolls a cell over a
sequence; because a cell pushes one entry onto its ``_saved`` stack per ``forward`` call, unrolling T
steps and then calling ``backward`` T times in reverse order *is* backpropagation through time, and
the parameter gradients of all steps add up in ``grads`` (the weights are shared across time).

Shapes are time-major, as in PyTorch's default: one step x (N, in), h (N, H); a sequence xs (T, N, in)
-> hs (T, N, H). Weights use the (out, in) layout of ``Linear``. The gates of the GRU and the LSTM are
stacked along the output axis of one input matrix W_x and one hidden matrix W_h, so each step does
one matmul for the input and one for the state whatever the number of gates -- and the stacking order
is PyTorch's, so its ``weight_ih_l0``/``weight_hh_l0`` copy straight in.

The cells compute sigmoids as (1 + tanh(a/2)) / 2, like ``Sigmoid``: it never overflows.
"""

from __future__ import annotations

import numpy as np

from .init import orthogonal, xavier_uniform
from .module import Module

State = np.ndarray | tuple[np.ndarray, np.ndarray]


def _sigmoid_(a: np.ndarray) -> np.ndarray:
    """sigma(a) = (1 + tanh(a/2)) / 2 computed in place (``a`` may be a slice of the gate block)."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5
    return a


class RecurrentCell(Module):
    """What every cell provides (the interface ``Recurrent`` relies on).

    * ``forward(x, state) -> new_state``        saves what backward needs, one stack entry per call
    * ``backward(dstate) -> (dx, dstate_prev)``  pops the latest call, accumulates parameter grads
    * ``infer(x, state) -> new_state``           same computation, keeps nothing (acting)
    * ``initial_state(batch_size)``              the all-zeros state
    * ``output(state)``                          the hidden vector h the layers above see

    Input-to-hidden weights start Xavier-uniform (suits the saturating gates); hidden-to-hidden
    weights start orthogonal, so repeated multiplication by W_h neither shrinks nor blows up a
    vector at first and gradients survive more time steps.
    """

    state_is_pair = False

    def __init__(self, n_in: int, n_hidden: int) -> None:
        super().__init__()
        self.n_in = n_in
        self.n_hidden = n_hidden

    def _init_weights(self, n_gates: int, rng: np.random.Generator, dtype) -> None:
        """W_x (G H, in) Xavier and W_h (G H, H) orthogonal, each gate's block initialised on its own
        (an orthogonal (3H, H) matrix would not make each H x H block orthogonal)."""
        H = self.n_hidden
        self.add_param("W_x", np.concatenate(
            [xavier_uniform((H, self.n_in), rng, dtype=dtype) for _ in range(n_gates)]))
        self.add_param("W_h", np.concatenate(
            [orthogonal((H, H), rng, dtype=dtype) for _ in range(n_gates)]))

    def initial_state(self, batch_size: int) -> State:
        return np.zeros((batch_size, self.n_hidden), dtype=self.params["W_h"].dtype)

    def output(self, state: State) -> np.ndarray:
        return state

    def forward(self, x: np.ndarray, state: State) -> State:
        raise NotImplementedError

    def backward(self, dstate: State) -> tuple[np.ndarray, State]:
        raise NotImplementedError

    def infer(self, x: np.ndarray, state: State) -> State:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_in}, {self.n_hidden})"


class RNNCell(RecurrentCell):
    """Elman (vanilla) RNN cell.

    Forward:   a  = x W_x^T + h W_h^T + b       x: (N, in)  h: (N, H)  W_x: (H, in)  W_h: (H, H)  b: (H,)
               h' = tanh(a)
    Backward:  da = dL/dh' * (1 - h'^2)
               dL/dW_x += da^T x      dL/dW_h += da^T h      dL/db += sum_n da_n
               dL/dx = da W_x         dL/dh = da W_h
    """

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator, dtype=np.float32) -> None:
        super().__init__(n_in, n_hidden)
        self._init_weights(1, rng, dtype)
        self.add_param("b", np.zeros(n_hidden, dtype=dtype))

    def infer(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        a = x @ self.params["W_x"].T
        a += h @ self.params["W_h"].T
        a += self.params["b"]
        return np.tanh(a, out=a)

    def forward(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        h_new = self.infer(x, h)
        self._saved.append((x, h, h_new))  # tanh' is 1 - tanh^2: the output is all backward needs
        return h_new

    def backward(self, dh_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, h, h_new = self._saved.pop()
        da = dh_new * (1.0 - h_new * h_new)
        self.grads["W_x"] += da.T @ x
        self.grads["W_h"] += da.T @ h
        self.grads["b"] += da.sum(axis=0)
        return da @ self.params["W_x"], da @ self.params["W_h"]


class GRUCell(RecurrentCell):
    """Gated recurrent unit (Cho et al. 2014), with exactly PyTorch's equations and layout.

    Gates are stacked in the order (r, z, n): rows [0, H) of W_x, W_h, b_x, b_h belong to the reset
    gate r, rows [H, 2H) to the update gate z, rows [2H, 3H) to the candidate n.

    Forward:   gx = x W_x^T + b_x                   W_x: (3H, in)   b_x: (3H,)    gx = [gx_r|gx_z|gx_n]
               gh = h W_h^T + b_h                   W_h: (3H, H)    b_h: (3H,)    gh = [gh_r|gh_z|gh_n]
               r  = sigma(gx_r + gh_r)
               z  = sigma(gx_z + gh_z)
               n  = tanh(gx_n + r * gh_n)           r scales the *projected* state, bias b_hn included,
               h' = (1 - z) * n + z * h             which is why b_h is not merged into b_x
    Backward:  dn = dL/dh' * (1 - z)                dz = dL/dh' * (h - n)
               da_n = dn * (1 - n^2)                da_z = dz * z (1 - z)
               da_r = (da_n * gh_n) * r (1 - r)
               dgx = [da_r | da_z | da_n]           dgh = [da_r | da_z | da_n * r]
               dL/dW_x += dgx^T x    dL/db_x += sum_n dgx    dL/dx = dgx W_x
               dL/dW_h += dgh^T h    dL/db_h += sum_n dgh    dL/dh = dgh W_h + dL/dh' * z
    """

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator, dtype=np.float32) -> None:
        super().__init__(n_in, n_hidden)
        self._init_weights(3, rng, dtype)
        self.add_param("b_x", np.zeros(3 * n_hidden, dtype=dtype))
        self.add_param("b_h", np.zeros(3 * n_hidden, dtype=dtype))

    def _step(self, x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """h' plus the gate block [r|z|n] (N, 3H) and gh_n, the only intermediates backward needs."""
        H = self.n_hidden
        gates = x @ self.params["W_x"].T
        gates += self.params["b_x"]
        gh = h @ self.params["W_h"].T
        gh += self.params["b_h"]
        # The gate block is overwritten in place: pre-activations in, activations out.
        rz = gates[:, :2 * H]
        rz += gh[:, :2 * H]
        _sigmoid_(rz)
        r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        gh_n = gh[:, 2 * H:]
        n += r * gh_n
        np.tanh(n, out=n)
        # (1 - z) n + z h  rewritten as  n + z (h - n): one product instead of two
        h_new = h - n
        h_new *= z
        h_new += n
        return h_new, gates, gh_n

    def infer(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        return self._step(x, h)[0]

    def forward(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        h_new, gates, gh_n = self._step(x, h)
        self._saved.append((x, h, gates, gh_n))
        return h_new

    def backward(self, dh_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, h, gates, gh_n = self._saved.pop()
        H = self.n_hidden
        r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        # Gradients w.r.t. the pre-activations, written straight into one stacked block so that a
        # single matmul per weight matrix serves all three gates, as in the forward pass.
        dgx = np.empty_like(gates)
        da_r, da_z, da_n = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:]
        np.multiply(dh_new, 1.0 - z, out=da_n)
        da_n *= 1.0 - n * n
        np.multiply(dh_new, h - n, out=da_z)
        da_z *= z * (1.0 - z)
        np.multiply(da_n, gh_n, out=da_r)
        da_r *= r * (1.0 - r)
        # The hidden side sees the same r and z gradients, but its n part was multiplied by r.
        dgh = dgx.copy()
        dgh[:, 2 * H:] *= r
        self.grads["W_x"] += dgx.T @ x
        self.grads["b_x"] += dgx.sum(axis=0)
        self.grads["W_h"] += dgh.T @ h
        self.grads["b_h"] += dgh.sum(axis=0)
        dh = dgh @ self.params["W_h"]
        dh += dh_new * z  # the direct path h -> z * h
        return dgx @ self.params["W_x"], dh


class LSTMCell(RecurrentCell):
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997, with a forget gate), PyTorch's
    equations and gate order (i, f, g, o): rows [0, H) input gate, [H, 2H) forget gate,
    [2H, 3H) cell candidate, [3H, 4H) output gate. The state is the pair (h, c).

    Forward:   a  = x W_x^T + h W_h^T + b           W_x: (4H, in)  W_h: (4H, H)  b: (4H,)
               i = sigma(a_i)   f = sigma(a_f)   g = tanh(a_g)   o = sigma(a_o)
               c' = f * c + i * g
               h' = o * tanh(c')
    Backward:  dc~ = dL/dc' + dL/dh' * o * (1 - tanh(c')^2)      (c' reaches the loss both ways)
               da_i = dc~ * g * i (1 - i)       da_f = dc~ * c * f (1 - f)
               da_g = dc~ * i * (1 - g^2)       da_o = dL/dh' * tanh(c') * o (1 - o)
               da = [da_i | da_f | da_g | da_o]
               dL/dW_x += da^T x    dL/dW_h += da^T h    dL/db += sum_n da
               dL/dx = da W_x       dL/dh = da W_h       dL/dc = dc~ * f

    One bias b, where PyTorch has two (b_ih and b_hh) that only ever appear summed: to load PyTorch
    weights set b = bias_ih + bias_hh.

    The forget-gate bias starts at 1 (Gers et al. 2000; Jozefowicz et al. 2015): with a zero bias f
    starts near sigma(0) = 1/2, so the cell state -- and the gradient flowing back along it -- is
    halved at every step and nothing is remembered for long until training pushes f up. Starting at
    sigma(1) ~ 0.73 the cell remembers by default and learns to forget.
    """

    state_is_pair = True

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator, dtype=np.float32) -> None:
        super().__init__(n_in, n_hidden)
        self._init_weights(4, rng, dtype)
        b = np.zeros(4 * n_hidden, dtype=dtype)
        b[n_hidden:2 * n_hidden] = 1.0
        self.add_param("b", b)

    def initial_state(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        zeros = np.zeros((batch_size, self.n_hidden), dtype=self.params["W_h"].dtype)
        return zeros, zeros.copy()

    def output(self, state: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return state[0]

    def _step(self, x: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
        """(h', c') plus the gate block [i|f|g|o] (N, 4H) and tanh(c'), what backward needs."""
        h, c = state
        H = self.n_hidden
        gates = x @ self.params["W_x"].T
        gates += h @ self.params["W_h"].T
        gates += self.params["b"]
        _sigmoid_(gates[:, :2 * H])  # i and f are adjacent: one call
        np.tanh(gates[:, 2 * H:3 * H], out=gates[:, 2 * H:3 * H])
        _sigmoid_(gates[:, 3 * H:])
        i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
        c_new = f * c
        c_new += i * g
        tanh_c = np.tanh(c_new)
        return (o * tanh_c, c_new), gates, tanh_c

    def infer(self, x: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self._step(x, state)[0]

    def forward(self, x: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        new_state, gates, tanh_c = self._step(x, state)
        self._saved.append((x, state[0], state[1], gates, tanh_c))
        return new_state

    def backward(self, dstate: tuple[np.ndarray, np.ndarray | None]
                 ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``dstate = (dL/dh', dL/dc')``; dL/dc' may be None when the loss only reads h."""
        dh_new, dc_new = dstate
        x, h, c, gates, tanh_c = self._saved.pop()
        H = self.n_hidden
        i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
        dc = 1.0 - tanh_c * tanh_c
        dc *= o
        dc *= dh_new
        if dc_new is not None:
            dc += dc_new
        da = np.empty_like(gates)
        da_i, da_f, da_g, da_o = da[:, :H], da[:, H:2 * H], da[:, 2 * H:3 * H], da[:, 3 * H:]
        np.multiply(dc, g, out=da_i)
        da_i *= i * (1.0 - i)
        np.multiply(dc, c, out=da_f)
        da_f *= f * (1.0 - f)
        np.multiply(dc, i, out=da_g)
        da_g *= 1.0 - g * g
        np.multiply(dh_new, tanh_c, out=da_o)
        da_o *= o * (1.0 - o)
        self.grads["W_x"] += da.T @ x
        self.grads["W_h"] += da.T @ h
        self.grads["b"] += da.sum(axis=0)
        dc *= f
        return da @ self.params["W_x"], (da @ self.params["W_h"], dc)


class Recurrent(Module):
    """Unrolls a cell over a sequence; ``backward`` is backpropagation through time (BPTT).

    Forward:   s_0 = h0 (zeros if None);   for t = 0..T-1:   s_{t+1} = cell(xs[t], s_t),  hs[t] = h(s_{t+1})
               returns hs (T, N, H); the final state s_T -- an array, or (h, c) for an LSTM -- is left
               in ``self.final_state`` (by ``infer`` too).
    Backward:  ds = dL/ds_T (``dh_final``, zero if None);  for t = T-1..0:
                   ds[h] += dhs[t]                         (h_t feeds both the loss and step t+1)
                   dxs[t], ds = cell.backward(ds)          (parameter grads of every step add up)
               returns (dxs (T, N, in), dL/dh0) -- dL/dh0 a pair for an LSTM.

    ``resets`` (T, N) bool marks episode starts inside a rollout: resets[t, n] zeroes env n's state
    just before step t, so no information (and, in backward, no gradient) crosses the boundary.

    Truncated BPTT is this module called on consecutive chunks: run ``forward`` on a chunk, then
    ``backward``, and pass ``final_state`` as ``h0`` of the next chunk. The state is a plain array, so
    it is already "detached": the next chunk's backward stops at it, and ``dh0`` is simply ignored.

    ``dhs`` may be None when only the final state enters the loss (a sequence summarised by its
    last state). The arrays returned and passed in are not referenced by the saved state, except xs
    and h0, which (like Linear's input) must not be modified in place before ``backward``.
    """

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__()
        self.cell = cell
        self.final_state: State | None = None

    def _run(self, step, xs: np.ndarray, h0: State | None, resets: np.ndarray | None):
        """Shared loop of forward (step = cell.forward) and infer (step = cell.infer)."""
        if xs.ndim != 3:
            raise ValueError(f"Recurrent expects xs shaped (T, N, in), got {xs.shape}")
        steps, batch = xs.shape[:2]
        if steps == 0:
            raise ValueError("Recurrent needs at least one time step")
        if resets is not None and resets.shape != (steps, batch):
            raise ValueError(f"resets must be shaped (T, N) = {(steps, batch)}, got {resets.shape}")
        state = self.cell.initial_state(batch) if h0 is None else h0
        # keep[t] (N, 1) multiplies the state: 0 for the envs starting a new episode at step t
        keep = None if resets is None else (~resets.astype(bool))[..., None].astype(xs.dtype)
        hs = None
        for t in range(steps):
            if keep is not None and resets[t].any():
                state = self._masked(state, keep[t])
            state = step(xs[t], state)
            h = self.cell.output(state)
            if hs is None:
                hs = np.empty((steps,) + h.shape, dtype=h.dtype)
            hs[t] = h
        self.final_state = state
        return hs, keep

    @staticmethod
    def _masked(state: State, keep: np.ndarray) -> State:
        if isinstance(state, tuple):
            return tuple(s * keep for s in state)
        return state * keep

    def forward(self, xs: np.ndarray, h0: State | None = None,
                resets: np.ndarray | None = None) -> np.ndarray:
        hs, keep = self._run(self.cell.forward, xs, h0, resets)
        reset_at = None if keep is None else resets.any(axis=1)
        self._saved.append((xs.shape[0], keep, reset_at))
        return hs

    def infer(self, xs: np.ndarray, h0: State | None = None,
              resets: np.ndarray | None = None) -> np.ndarray:
        return self._run(self.cell.infer, xs, h0, resets)[0]

    def backward(self, dhs: np.ndarray | None, dh_final: State | None = None) -> tuple[np.ndarray, State]:
        if dhs is None and dh_final is None:
            raise ValueError("backward needs dhs, dh_final or both")
        steps, keep, reset_at = self._saved.pop()
        pair = self.cell.state_is_pair
        if dh_final is None:
            dh, dc = None, None  # zero, without allocating: the first step just uses dhs[T-1]
        elif pair:
            dh, dc = dh_final
        else:
            dh, dc = dh_final, None
        dxs = None
        for t in range(steps - 1, -1, -1):
            if dhs is not None:
                if dh is None:
                    dh = dhs[t]
                elif t == steps - 1:
                    dh = dh + dhs[t]  # not in place: dh_final belongs to the caller
                else:
                    dh += dhs[t]  # dh came fresh from the cell's backward
            dx, dprev = self.cell.backward((dh, dc) if pair else dh)
            dh, dc = dprev if pair else (dprev, None)
            if dxs is None:
                dxs = np.empty((steps,) + dx.shape, dtype=dx.dtype)
            dxs[t] = dx
            if reset_at is not None and reset_at[t]:
                dh, dc = dh * keep[t], (None if dc is None else dc * keep[t])
        return dxs, ((dh, dc) if pair else dh)

    def __repr__(self) -> str:
        return f"Recurrent({self.cell!r})"
