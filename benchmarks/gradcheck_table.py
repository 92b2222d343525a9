"""Print the finite-difference gradient-check table of the network core: for each component, the
largest relative error over its inputs and parameters (float64, central differences).

    python benchmarks/gradcheck_table.py

The tests assert the same checks (<= 1e-6); this script gathers them into one table.
"""

from __future__ import annotations

import numpy as np

from rlscratch import nn


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + 0.1)


def loss_error(loss_fn, pred, *args, **kwargs) -> float:
    _, analytic = loss_fn(pred, *args, **kwargs)
    return nn.check_gradients(lambda: loss_fn(pred, *args, **kwargs)[0], {"pred": (pred, analytic)})["pred"]


def main() -> None:
    rng = np.random.default_rng(0)
    f64 = np.float64
    rows: list[tuple[str, float]] = []

    def module(name: str, m: nn.Module, *inputs: np.ndarray, h: float = 1e-6, **kwargs) -> None:
        errors = nn.check_module(m.astype(f64) if m.num_params() else m, *inputs, rng=rng, h=h, **kwargs)
        rows.append((name, max(errors.values())))

    module("Linear 5->3", nn.Linear(5, 3, rng), rng.standard_normal((4, 5)))
    for act in (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax):
        module(act.__name__, act(), away_from_zero(rng, (4, 6)))
    module("Conv2d 2->3 k3 s2 p1", nn.Conv2d(2, 3, 3, rng, stride=2, padding=1), rng.standard_normal((2, 2, 7, 6)),
           h=1e-4)
    module("MaxPool2d 2", nn.MaxPool2d(2), rng.permutation(2 * 2 * 6 * 6).reshape(2, 2, 6, 6) / 144 - 1)
    module("LayerNorm", nn.LayerNorm(6), rng.standard_normal((4, 6)))
    module("BatchNorm (train, N,C)", nn.BatchNorm(5), rng.standard_normal((8, 5)))
    module("BatchNorm (train, N,C,H,W)", nn.BatchNorm(3), rng.standard_normal((4, 3, 3, 2)))
    dropout = nn.Dropout(0.3, rng)

    def same_mask() -> None:
        dropout.rng = np.random.default_rng(7)

    module("Dropout (train)", dropout, rng.standard_normal((4, 5)), before_forward=same_mask)
    module("Flatten/Reshape", nn.Sequential(nn.Flatten(), nn.Reshape(3, 4)), rng.standard_normal((2, 3, 2, 2)))
    module("Residual(MLP)", nn.Residual(nn.Sequential(nn.Linear(5, 5, rng), nn.Tanh(), nn.Linear(5, 5, rng))),
           rng.standard_normal((3, 5)))
    module("2-input net (Concat..Split)", nn.Sequential(nn.Concat(), nn.Linear(8, 7, rng), nn.Tanh(), nn.Split(1, 6)),
           rng.standard_normal((3, 6)), np.eye(2)[[0, 1, 1]])
    for cell in (nn.RNNCell, nn.GRUCell, nn.LSTMCell):
        module(f"{cell.__name__} unrolled 4 steps", nn.Recurrent(cell(3, 4, rng)), rng.standard_normal((4, 2, 3)),
               h=1e-5)

    # One module applied three times in one step (MuZero-style unroll), gradients accumulated.
    g = nn.Sequential(nn.Linear(4, 4, rng), nn.Tanh()).astype(f64)
    s0, upstream = rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(3)]
    g.zero_grad()
    states = [s0]
    for _ in range(3):
        states.append(g(states[-1]))
    carry = np.zeros_like(s0)
    for k in reversed(range(3)):
        carry = g.backward(upstream[k] + carry)

    def unrolled() -> float:
        s, total = s0, 0.0
        for k in range(3):
            s = g.infer(s)
            total += float(np.sum(upstream[k] * s))
        return total

    rows.append(("module applied 3x in one step",
                 nn.check_gradients(unrolled, {"g": (g.flat_params, g.flat_grads.copy())})["g"]))

    pred, target = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    pred[np.abs(np.abs(pred - target) - 1.0) < 0.05] += 0.2
    weights, mask = rng.uniform(0.5, 2, 6), np.array([1, 0, 1, 1, 0, 1])
    rows.append(("MSE (weights, mask)", loss_error(nn.mse, pred, target, weights=weights, mask=mask)))
    rows.append(("Huber (weights, mask)", loss_error(nn.huber, pred, target, weights=weights, mask=mask)))
    logits = rng.standard_normal((5, 4))
    rows.append(("softmax CE, integer labels", loss_error(nn.softmax_cross_entropy, logits, np.array([0, 3, 1, 1, 2]))))
    rows.append(("softmax CE, soft targets", loss_error(nn.softmax_cross_entropy, logits,
                                                        rng.dirichlet(np.ones(4), size=5))))
    module("LayerNorm2d (N,C,H,W)", nn.LayerNorm2d(3), rng.standard_normal((2, 3, 4, 4)), h=1e-5)
    module("NormResidualBlock (layer)", nn.NormResidualBlock(3, rng, "layer"), rng.standard_normal((2, 3, 4, 4)),
           h=1e-5)

    width = max(len(name) for name, _ in rows)
    print(f"{'component':<{width}}  max relative error")
    for name, error in rows:
        print(f"{name:<{width}}  {error:.1e}")
    worst = max(e for _, e in rows)
    print(f"{'worst':<{width}}  {worst:.1e}  ({'OK' if worst <= 1e-6 else 'ABOVE'} the 1e-6 bound)")


if __name__ == "__main__":
    main()
