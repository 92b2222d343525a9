"""TensorBoard hparams: the whole resolved config, written at the start of the run into the run's own
event files (no second run beside it), with the final evaluation added at the end."""

from pathlib import Path

import pytest
from tbparse import SummaryReader

from rlscratch.config import load_config
from rlscratch.trainer import train

QUICK = ["train.total_steps=300", "train.eval_every=0", "train.eval_episodes=2", "log.progress=false",
         "agent.learning_starts=64", "agent.optim.lr.start=7e-4"]


def run(tmp_path: Path, stop_at: int | None = None) -> dict:
    config, _ = load_config("dqn_cartpole", QUICK + [f"log.root={tmp_path}"])
    return train(config, tmp_path / "run", stop_at=stop_at)


def hparams(run_dir: Path) -> dict:
    frame = SummaryReader(str(run_dir)).hparams
    return dict(zip(frame["tag"], frame["value"]))


def test_hparams_hold_the_whole_config_from_the_start_in_the_same_run(tmp_path):
    run(tmp_path, stop_at=100)  # cut short: the hyperparameters are there already
    run_dir = tmp_path / "run"
    early = hparams(run_dir)
    assert early["agent.optim.lr.start"] == pytest.approx(7e-4)
    assert early["env.id"] == "CartPole-v1" and early["train.total_steps"] == 300 and early["seed"] == 0
    assert early["model.activation"] == "relu" and early["train.stop_at_return"] == "null"
    assert early["agent.name"] == "dqn" and early["log.tensorboard"] is True


def test_final_metric_is_added_in_the_same_run(tmp_path):
    summary = run(tmp_path)
    run_dir = tmp_path / "run"
    assert not [p for p in run_dir.rglob("events.out.tfevents.*") if p.parent != run_dir]  # one run, no subfolder
    assert hparams(run_dir)["agent.gamma"] == pytest.approx(0.99)
    scalars = SummaryReader(str(run_dir)).scalars
    final = scalars[scalars["tag"] == "hparam/eval_mean_return"]
    assert list(final["step"]) == [300] and final["value"].iloc[0] == pytest.approx(summary["eval_mean"])
