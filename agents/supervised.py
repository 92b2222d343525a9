"""Supervised MNIST classification -- where the project's notes begin.

    X --[M_1|act]-> h_1 --[M_2|act]-> ... --[M_k|softmax]-> p => one_hot(y)

Minibatch gradient descent on the softmax cross-entropy (``optim:``, Adam by default; a learning-rate
schedule without ``steps`` spans the whole run: epochs x minibatches per epoch, counted from the data
with ``clock: updates``). It runs through the same
command line, run directory, TensorBoard logging and checkpoints as the RL agents, but learns from
the 60,000 training images instead of an environment (``train_offline``), and reports accuracy on the
10,000 test images after every epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from rlscratch import nn
from rlscratch.agent import Agent
from rlscratch.cli import interactive
from rlscratch.config import bounded
from rlscratch.data import load_mnist, scale_images
from rlscratch.errors import CheckpointError, ConfigError
from rlscratch.models import mlp
from rlscratch.optim_config import OptimConfig, Schedule, finish_config, make_optimizer, optim_field
from rlscratch.state import sub_state


@dataclass
class SupervisedConfig:
    network: str = bounded("mlp", choices=("mlp", "cnn"), help="mlp: the model section's hidden layers")
    channels: list[int] = field(default_factory=lambda: [32, 64])  # cnn: conv 3x3 + ReLU + 2x2 max-pool each
    dense: int = bounded(128, ge=1)  # cnn: width of the hidden dense layer
    dropout: float = bounded(0.0, ge=0, lt=1)
    epochs: int = bounded(10, ge=1)
    batch_size: int = bounded(128, ge=1)
    optim: OptimConfig = optim_field(name="adam", lr=1e-3)
    data_path: str | None = None  # a folder with the MNIST files; default: $RLSCRATCH_DATA, then the cache

    def __post_init__(self) -> None:
        finish_config(self, knows_run_length=True)  # a schedule may leave out steps: the whole run


def cnn(config: SupervisedConfig, rng: np.random.Generator) -> nn.Sequential:
    """[conv 3x3 (padding 1) -> ReLU -> max-pool 2x2] per entry of ``channels``, then dense -> ReLU -> 10."""
    layers: list[nn.Module] = []
    in_channels, side = 1, 28
    for out_channels in config.channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, rng, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        in_channels, side = out_channels, side // 2
    layers += [nn.Flatten(), nn.Linear(in_channels * side * side, config.dense, rng), nn.ReLU()]
    if config.dropout:
        layers.append(nn.Dropout(config.dropout, rng))
    layers.append(nn.Linear(config.dense, 10, rng, init="xavier"))
    return nn.Sequential(*layers).flatten()


def accuracy(net: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    correct = sum(int((net.infer(images[i:i + batch_size]).argmax(axis=1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


class Supervised(Agent):
    Config = SupervisedConfig
    counters = ("updates", "epoch")

    def __init__(self, config: SupervisedConfig, spec, model, rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        if config.network == "cnn":
            if model.notation is not None:
                raise ConfigError("model.notation: network: cnn is built from agent.channels; with model.notation "
                                  "the program is the network (set network: mlp; the program may hold conv layers)")
            self.net = cnn(config, rng)
        else:
            self.net = mlp(784, 10, model, rng)
            if config.dropout:
                raise ConfigError("agent.dropout: only the cnn network has dropout; set network: cnn or dropout: 0")
        # The schedule's length, if the config leaves it to the run, is set once the data is loaded.
        self.lr_schedule = Schedule(config.optim.lr, "agent.optim.lr")
        self.optimizer = make_optimizer(config.optim, self.net, lr=self.lr_schedule)
        self.epoch = 0
        self.input_shape = (1, 28, 28) if config.network == "cnn" else (784,)  # one image, as act() takes it

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        return self.net.infer(obs).argmax(axis=1)

    def components(self) -> dict:
        return {"rng": self.rng, "net": self.net, "optimizer": self.optimizer}

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss, dlogits = nn.softmax_cross_entropy(self.net(x), y)
        self.net.zero_grad()
        self.net.backward(dlogits)
        self.optimizer.step()
        self.updates += 1
        return loss

    def train_offline(self, session) -> dict:
        """Epochs of shuffled minibatches. ``session`` (rlscratch.lifecycle.RunSession) owns the run's
        life: a stop request is honoured between minibatches, and a checkpoint mid-epoch records the
        epoch's shuffled order and position, so a resumed run draws exactly the same batches."""
        layout = "nchw" if self.config.network == "cnn" else "flat"
        train_images, train_labels = load_mnist("train", self.config.data_path)
        test_images, test_labels = load_mnist("test", self.config.data_path)
        x_train, x_test = scale_images(train_images, layout), scale_images(test_images, layout)
        y_train, y_test = train_labels.astype(np.int64), test_labels.astype(np.int64)
        batch = self.config.batch_size
        self.lr_schedule.set_run_length(self.config.epochs * -(-len(x_train) // batch))  # updates in the run

        order, position, losses = np.zeros(0, dtype=np.int64), 0, []
        if session.resumed is not None:
            state = session.resumed.arrays
            try:
                if session.resumed.meta.get("agent") != session.config.agent["name"]:
                    raise ValueError(f"it was written by agent {session.resumed.meta.get('agent')!r}")
                self.load_state_dict(sub_state(state, "agent"))
                order, position = state["epoch/order"], int(state["epoch/position"])
                losses = list(state["epoch/losses"])
            except (KeyError, ValueError) as err:
                raise CheckpointError(f"{session.resumed.path} does not match this agent/config: {err}") from None
        session.check_config()
        where = f" in epoch {self.epoch + 1} at image {position}" if session.resumed else ""
        logger = session.start(details=f", {self.config.epochs} epochs{where}")

        def save(finished: bool = False) -> None:
            arrays = {**{f"agent/{k}": v for k, v in self.state_dict().items()},
                      "epoch/order": order, "epoch/position": np.asarray(position),
                      "epoch/losses": np.asarray(losses, dtype=np.float64)}
            session.save(self.updates, arrays, self.components(), finished=finished, log_step=self.epoch,
                         offline=True, epoch=self.epoch)

        epoch_seconds, test_accuracy = [], float("nan")
        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            self.net.train()
            if order.size == 0:  # a new epoch (a checkpoint mid-epoch holds its drawn order)
                order, position, losses = self.rng.permutation(len(x_train)), 0, []
            bar = tqdm(range(position, len(order), batch), desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                       unit="batch", leave=False, disable=not (session.config.log.progress and interactive()))
            for i in bar:
                if session.should_stop():
                    bar.close()
                    save()
                    logger.line(f"interrupted in epoch {self.epoch + 1} at image {position}; continue with: "
                                f"{session.resume_hint()}")
                    return {"interrupted": True, "signal": session.signals.signum, "epochs": self.epoch,
                            "run_dir": str(session.run_dir), "agent": self}
                idx = order[i:i + batch]
                losses.append(self.train_step(x_train[idx], y_train[idx]))
                session.guard(self.updates, {"loss/train": losses[-1]})
                position = i + batch
                if len(losses) % 50 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
                if session.checkpoint_due():
                    save()
            seconds = time.perf_counter() - start
            epoch_seconds.append(seconds)
            self.net.eval()
            self.epoch += 1
            order, position = np.zeros(0, dtype=np.int64), 0
            test_accuracy = accuracy(self.net, x_test, y_test)
            metrics = {"loss/train": float(np.mean(losses)), "eval/test_accuracy": test_accuracy,
                       "train/lr": self.optimizer.lr, "perf/seconds_per_epoch": seconds}
            logger.scalars(metrics, self.epoch)
            logger.line(f"epoch {self.epoch}: train loss {metrics['loss/train']:.4f}, "
                        f"test accuracy {test_accuracy:.4f}, {seconds:.1f} s")
            losses = []
            save(finished=self.epoch == self.config.epochs)
        summary = {"test_accuracy": test_accuracy, "epochs": self.epoch, "eval_mean": test_accuracy,
                   "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
                   "run_dir": str(session.run_dir), "interrupted": False, "agent": self}
        logger.line(f"done: test accuracy {test_accuracy:.4f} after {self.epoch} epochs "
                    f"({summary['seconds_per_epoch']:.1f} s per epoch); run dir {session.run_dir}")
        return summary
