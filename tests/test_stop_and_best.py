"""train.stop_at_return (stop, as finished, at the first evaluation that reaches it) and the kept best
checkpoint (checkpoints/best.npz: the parameters of the best evaluation so far, outside the rotation)."""

import json
import re
from pathlib import Path

import numpy as np

import rlscratch
from rlscratch.checkpoint import read_checkpoint
from rlscratch.config import load_config
from rlscratch.evaluate import main as evaluate
from rlscratch.state import sub_state
from rlscratch.trainer import train

# 8 updates per 4 env steps, not the config's burst of 128: runs of a few hundred steps still see their
# evaluations rise and fall (the premises asserted below), at a sixteenth of the updates.
QUICK = ["train.eval_episodes=2", "log.tensorboard=false", "log.progress=false", "agent.learning_starts=64",
         "agent.train_freq=4", "agent.gradient_steps=8"]


def run(tmp_path: Path, overrides: list[str], resume: bool = False, stop_at: int | None = None) -> dict:
    config, _ = load_config("dqn_cartpole", QUICK + overrides + [f"log.root={tmp_path}"])
    return train(config, tmp_path / "run", resume=resume, stop_at=stop_at)


def eval_means(run_dir: Path) -> dict[int, float]:
    """step -> the evaluation's mean return, as log.txt reports them."""
    found = re.findall(r"step (\d+): eval return (-?[\d.]+)", (run_dir / "log.txt").read_text())
    return {int(step): float(mean) for step, mean in found}


def agent_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays, _ = read_checkpoint(path)
    return sub_state(arrays, "agent")


def test_low_stop_at_return_stops_at_the_first_evaluation_as_finished(tmp_path):
    summary = run(tmp_path, ["train.total_steps=2000", "train.eval_every=200", "train.stop_at_return=1.0"])
    assert summary["stopped_early"] and summary["env_steps"] == 200
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "stopped early at step 200 of 2000" in log and "train.stop_at_return 1" in log
    assert list(eval_means(tmp_path / "run")) == [200]  # no second, "final" evaluation
    _, meta = read_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000000200.npz")
    assert meta["finished"] and meta["stopped_at_return"] >= 1.0
    again = run(tmp_path, ["train.total_steps=2000", "train.eval_every=200", "train.stop_at_return=1.0"], resume=True)
    assert again.get("already_finished")
    # A target it has not reached yet: the resume trains on (stop_at_return may change on resume).
    more = run(tmp_path, ["train.total_steps=400", "train.eval_every=200", "train.stop_at_return=1e9"], resume=True)
    assert not more["stopped_early"] and more["env_steps"] == 400


def test_no_target_runs_to_the_end(tmp_path):
    summary = run(tmp_path, ["train.total_steps=400", "train.eval_every=200"])
    assert not summary["stopped_early"] and summary["env_steps"] == 400


def test_best_checkpoint_holds_the_best_evaluations_parameters(tmp_path):
    summary = run(tmp_path, ["train.total_steps=1500", "train.eval_every=100", "train.checkpoint_every=100",
                             "train.keep_checkpoints=100"])
    run_dir = tmp_path / "run"
    means = eval_means(run_dir)
    best_step = max(means, key=lambda s: (means[s], -s))  # the first of equal bests
    assert best_step != summary["env_steps"], "a test run whose best is its last cannot tell best from latest"
    best = run_dir / "checkpoints" / "best.npz"
    _, meta = read_checkpoint(best)
    assert meta["env_steps"] == best_step and abs(meta["best_return"] - means[best_step]) < 0.006
    assert abs(summary["best_return"] - means[best_step]) < 0.006
    kept, at_step = agent_arrays(best), agent_arrays(run_dir / "checkpoints" / f"step_{best_step:010d}.npz")
    assert kept.keys() == at_step.keys() and all(np.array_equal(kept[k], at_step[k]) for k in kept)
    latest = agent_arrays(run_dir / "checkpoints" / f"step_{summary['env_steps']:010d}.npz")
    assert any(not np.array_equal(kept[k], latest[k]) for k in kept if "online" in k or "q" in k)
    # rlscratch.load(best=True) acts with those parameters
    loaded = rlscratch.load(run_dir, best=True)
    flat = np.concatenate([v.ravel() for _, v in sorted(loaded.agent.state_dict().items())
                           if isinstance(v, np.ndarray) and v.dtype == np.float32])
    want = np.concatenate([v.ravel() for _, v in sorted(kept.items()) if v.dtype == np.float32])
    assert np.array_equal(flat, want)


def test_evaluate_best_uses_best_npz(tmp_path, capsys):
    run(tmp_path, ["train.total_steps=600", "train.eval_every=100", "train.checkpoint_every=300"])
    run_dir = tmp_path / "run"
    best = run_dir / "checkpoints" / "best.npz"
    capsys.readouterr()  # the training's lines
    assert evaluate([str(run_dir), "--checkpoint", str(best), "--episodes", "3", "--json"]) == 0
    by_path = json.loads(capsys.readouterr().out)
    for path in (run_dir / "checkpoints").glob("step_*.npz"):
        path.unlink()  # only best.npz is left: --best must read it, not the (gone) latest
    assert evaluate([str(run_dir), "--best", "--episodes", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_path


def test_resumed_run_remembers_the_best_so_far(tmp_path):
    """Interrupted after its best evaluation (step 500 with this seed), resumed through worse ones: a
    resume that forgot the best-so-far return would overwrite best.npz with the first of them."""
    overrides = ["train.total_steps=1500", "train.eval_every=100", "train.checkpoint_every=100"]
    assert run(tmp_path, overrides, stop_at=550)["interrupted"]
    run(tmp_path, overrides + ["train.total_steps=900"], resume=True)
    means = eval_means(tmp_path / "run")
    best_step = max(means, key=lambda s: (means[s], -s))
    assert best_step < 550 and max(v for s, v in means.items() if s > 550) < means[best_step]  # the premise
    _, meta = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.npz")
    assert meta["env_steps"] == best_step
