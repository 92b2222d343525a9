"""The PyTorch side of ``python -m rlscratch.bench nn`` (benchmarks/bench_nn.py): the same networks and
training steps, built with torch, for the side-by-side ratios. It lives outside the package on purpose --
rlscratch never imports torch -- and is imported only when a benchmark asks for the PyTorch comparison.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_nn import GAMMA, LR, MAX_GRAD_NORM, Case, make_batch


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def info() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads()}


class ResBlock(torch.nn.Module):
    """relu(x + conv(relu(conv(x)))), as rlscratch.nn.ResidualBlock."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.conv2 = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


def build_torch(case: Case):
    layers, shape = [], case.input_shape
    for kind, *args in case.layers:
        if kind == "linear":
            layers.append(torch.nn.Linear(shape[-1], args[0]))
            shape = (args[0],)
        elif kind == "conv":
            n_out, kernel, padding = args
            layers.append(torch.nn.Conv2d(shape[0], n_out, kernel, stride=1, padding=padding))
            shape = (n_out, *(size + 2 * padding - kernel + 1 for size in shape[1:]))
        elif kind == "resblock":
            layers.append(ResBlock(shape[0], args[0]))
        elif kind == "flatten":
            layers.append(torch.nn.Flatten())
            shape = (math.prod(shape),)
        else:
            layers.append({"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[kind]())
    return torch.nn.Sequential(*layers)


def torch_step(case: Case) -> Callable[[], None]:
    torch.manual_seed(0)
    net = build_torch(case)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    batch = {name: torch.from_numpy(value) for name, value in make_batch(case).items()}
    x, labels, actions = batch["x"], batch["labels"], batch["actions"]

    def q_backward(targets: torch.Tensor) -> None:
        q_taken = net(x).gather(1, actions[:, None]).squeeze(1)
        F.huber_loss(q_taken, targets, delta=1.0).backward()

    if case.task == "classify":
        def step() -> None:
            optimizer.zero_grad()
            F.cross_entropy(net(x), labels).backward()
            optimizer.step()
    elif case.task == "q":
        def step() -> None:
            optimizer.zero_grad()
            q_backward(batch["targets"])
            optimizer.step()
    elif case.task == "dqn":
        target_net = copy.deepcopy(net).requires_grad_(False)
        rewards, next_x, not_done = batch["rewards"], batch["next_x"], 1.0 - batch["dones"]

        def step() -> None:
            with torch.no_grad():
                targets = rewards + GAMMA * not_done * target_net(next_x).max(dim=1).values
            optimizer.zero_grad()
            q_backward(targets)
            torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_GRAD_NORM)
            optimizer.step()
    else:
        raise ValueError(f"unknown task {case.task!r}")
    return step


