"""Runs that survive signals, kills, divergence and races (issue 12).

The first test sends real signals to real training processes (``python -m rlscratch.train``) at
seeded moments -- mid-training, mid-checkpoint-write, mid-evaluation -- resumes them, and asserts the
final checkpoint is bit-identical to an uninterrupted run's: parameters, optimizer state, every random
generator, replay/rollout contents, the envs' replay log. The harness is benchmarks/fault_injection.py
(its ``--trials N`` is the longer version). The others exercise the run directory's rules in-process:
the lock, finished and checkpoint-less resumes, refused overrides, foreign checkpoints and truncated
configs, the divergence guard, orphan cleanup and TensorBoard's purge_step.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fault_injection as fi  # noqa: E402

from rlscratch.checkpoint import CheckpointManager, read_checkpoint  # noqa: E402
from rlscratch.cli import run_cli  # noqa: E402
from rlscratch.config import load_config  # noqa: E402
from rlscratch.events import read_scalars  # noqa: E402
from rlscratch.train import main as train_main  # noqa: E402
from rlscratch.trainer import train  # noqa: E402

INT, TERM, KILL = signal.SIGINT, signal.SIGTERM, signal.SIGKILL
# agent -> the three faults of its chain: (signal, moment). Every signal meets every moment somewhere.
CHAINS = {
    "dqn": [(INT, "eval"), (KILL, "checkpoint"), (INT, "double")],
    "ppo": [(TERM, "eval"), (INT, "checkpoint"), (KILL, "train")],
    "a2c": [(INT, "train"), (TERM, "checkpoint"), (KILL, "eval")],
    "muzero": [(KILL, "checkpoint"), (INT, "eval"), (TERM, "train")],
    "supervised": [(INT, "train"), (KILL, "checkpoint"), (TERM, "train")],
    "bandit": [(TERM, "train"), (INT, "checkpoint"), (KILL, "train")],
}


def reference_state(agent: str, run_dir: Path) -> dict[str, np.ndarray]:
    """The uninterrupted run, trained in this process (same config, same code path as the CLI)."""
    name, overrides = fi.CASES[agent]
    sets = overrides + fi.QUIET
    if fi.config_has_marker(agent):
        sets = sets + [f"env.eval_kwargs={{marker: {run_dir / 'eval_started'}, step_delay: 0.002}}"]
    config, _ = load_config(name, sets)
    summary = train(config, run_dir)
    assert not summary["interrupted"]
    return fi.final_state(run_dir)


@pytest.mark.parametrize("agent", list(CHAINS))
def test_signals_kills_and_resumes_end_bit_identical(tmp_path, agent):
    expected = reference_state(agent, tmp_path / "reference")
    assert expected["finished"]
    rng = np.random.default_rng(list(CHAINS).index(agent))
    run_dir = tmp_path / "chain"
    for i, (signum, moment) in enumerate(CHAINS[agent]):
        units = int(rng.integers(1, 8))  # stop checks into the leg (tests/fault_gate.py)
        trial = fi.inject(agent, run_dir, signum, moment, units, resume=i > 0)
        assert trial.delivered, f"{agent}: the run ended before {signum.name} at {moment}"
        assert trial.exit_code == fi.EXIT[signum], (agent, signum.name, moment, trial.notes)
        if moment == "double":  # the second SIGINT aborted the stop the first had asked for
            assert "aborted by a second SIGINT" in trial.stderr, trial.stderr[-500:]
        if signum != KILL:
            log = (run_dir / "log.txt").read_text()
            assert "continue with: python -m rlscratch.train --resume" in log
    done = fi.run_to_end(agent, run_dir, resume=True)
    assert done.returncode == 0, done.stderr[-1000:]
    final = fi.final_state(run_dir)
    assert fi.differences(final, expected) == []
    assert any(k.startswith("agent/") and "optim" in k for k in final)  # optimizer state was compared too
    assert fi.orphans(run_dir) == [] and fi.duplicate_steps(run_dir) == 0


def test_terminal_ctrl_c_stops_async_envs_without_hanging(tmp_path):
    """Ctrl-C in a terminal signals the whole process group: the async workers must survive it (they
    ignore SIGINT) so the trainer can checkpoint, and nothing may keep the process alive after."""
    run_dir = tmp_path / "run"
    cmd = fi.command("ppo", run_dir) + ["--set", "env.vectorization=async", "--set", "train.total_steps=100000"]
    proc = subprocess.Popen(cmd, env=fi.environment(), cwd=fi.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert fi.wait_for(proc, lambda: fi.starts_logged(run_dir) > 0, 120)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130
    assert CheckpointManager(run_dir / "checkpoints").latest() is not None


# -- the run directory's rules, in-process -----------------------------------------------------
def write_config(folder: Path, **train_section) -> Path:
    data = {"env": {"id": "CartPole-v1", "num_envs": 2}, "agent": {"name": "spine_agents:OnlineQ"},
            "model": {"hidden": [16]},
            "train": {"total_steps": 1200, "eval_every": 600, "eval_episodes": 3, "checkpoint_every": 400,
                      "log_every": 100, **train_section},
            "log": {"progress": False}, "seed": 3}
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*argv: str) -> int:
    return run_cli(train_main, list(argv))


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "log.txt" and not p.name.startswith("events.out")}


@pytest.fixture
def stopped_run(tmp_path) -> Path:
    """A run interrupted at step 700 (checkpoints at 400 and 700)."""
    config, _ = load_config(str(write_config(tmp_path)))
    assert train(config, tmp_path / "run", stop_at=700)["interrupted"]
    return tmp_path / "run"


def test_second_process_on_a_run_dir_is_refused_and_nothing_is_removed(tmp_path, stopped_run, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
                               "print('held', flush=True); time.sleep(60)", str(stopped_run / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    fresh = tmp_path / "fresh"  # a new run's directory, claimed by another process first
    fresh.mkdir()
    fresh_holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                                     "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                                     "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                                     str(fresh / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held" and fresh_holder.stdout.readline().strip() == "held"
        before = snapshot(stopped_run)
        capsys.readouterr()
        assert cli("--resume", str(stopped_run)) == 2
        assert "is in use by another training process" in one_line(capsys.readouterr().err)
        assert snapshot(stopped_run) == before
        assert cli("--config", str(write_config(tmp_path)), "--run-dir", str(fresh)) == 2
        assert "is in use by another training process" in one_line(capsys.readouterr().err)
        assert (fresh / ".lock").exists()  # the other process's directory is left alone
    finally:
        for proc in (holder, fresh_holder):
            proc.kill()
            proc.communicate()
    # the lock dies with its holder: the run resumes
    assert cli("--resume", str(stopped_run)) == 0


def test_finished_run_says_so_and_a_larger_total_continues_it(stopped_run, capsys):
    assert cli("--resume", str(stopped_run)) == 0
    before = snapshot(stopped_run)
    capsys.readouterr()
    assert cli("--resume", str(stopped_run)) == 0
    assert "already finished (1200 of train.total_steps 1200)" in one_line(capsys.readouterr().out)
    assert snapshot(stopped_run) == before  # nothing written
    assert cli("--resume", str(stopped_run), "--set", "train.total_steps=1600") == 0
    _, meta = read_checkpoint(CheckpointManager(stopped_run / "checkpoints").latest())
    assert meta["env_steps"] == 1600 and meta["finished"]
    assert yaml.safe_load((stopped_run / "config.yaml").read_text())["train"]["total_steps"] == 1600


@pytest.mark.parametrize("override, message", [
    ("model.hidden=[32]", "--resume cannot change model.hidden"),
    ("agent.lr=0.5", "--resume cannot change agent.lr"),
])
def test_refused_resume_override_leaves_the_run_untouched(stopped_run, capsys, override, message):
    before = snapshot(stopped_run)
    capsys.readouterr()
    assert cli("--resume", str(stopped_run), "--set", override) == 2
    assert message in one_line(capsys.readouterr().err)
    assert snapshot(stopped_run) == before


def test_edited_or_truncated_config_is_refused_by_name(stopped_run, capsys):
    path = stopped_run / "config.yaml"
    original = path.read_text()
    path.write_text(original.replace("lr: 0.001", "lr: 0.002"))  # same shapes, another experiment
    capsys.readouterr()
    assert cli("--resume", str(stopped_run)) == 2
    line = one_line(capsys.readouterr().err)
    assert "was written with another config: agent.lr (0.001 -> 0.002)" in line
    # A truncated file is refused by the strict loader before the checkpoint is compared: it names the
    # first key the file lacks (filling it with today's default would resume another experiment).
    for cut_before, missing in (("\ntrain:", "'train'"), ("\n  eval_every:", "'train.eval_every'")):
        truncated = original[:original.index(cut_before)] + "\n"
        path.write_text(truncated)
        assert cli("--resume", str(stopped_run)) == 2
        line = one_line(capsys.readouterr().err)
        assert f"config.yaml is incomplete: it has no {missing}" in line, line
        assert path.read_text() == truncated  # never rewritten by a refused resume


def test_run_saved_before_a_config_key_existed_still_resumes(stopped_run, capsys):
    """config.ADDED_LATER keys (``imports``): a run saved before one existed lacks it in config.yaml and
    in its checkpoint's config; both stand for the default, so neither check refuses the resume."""
    import json

    from rlscratch.nn.serialization import atomic_savez

    path = stopped_run / "config.yaml"
    data = yaml.safe_load(path.read_text())
    assert data.pop("imports") == []
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    latest = CheckpointManager(stopped_run / "checkpoints").latest()
    arrays, meta = read_checkpoint(latest)
    del meta["config"]["imports"]
    atomic_savez(latest, {**arrays, "meta": np.array(json.dumps(meta))})
    capsys.readouterr()
    assert cli("--resume", str(stopped_run)) == 0, capsys.readouterr().err
    # ... while an edit of that key is still caught:
    assert cli("--resume", str(stopped_run), "--set", "train.total_steps=1300") == 0
    data = yaml.safe_load(path.read_text())
    data["imports"] = ["json"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert cli("--resume", str(stopped_run), "--set", "train.total_steps=1400") == 2
    assert "another config: imports ([] -> ['json'])" in one_line(capsys.readouterr().err)


def test_checkpoint_from_another_run_is_refused(tmp_path, stopped_run, capsys):
    config, _ = load_config(str(write_config(tmp_path)))  # the very same config and seed
    train(config, tmp_path / "other", stop_at=900)
    foreign = CheckpointManager(tmp_path / "other" / "checkpoints").latest()
    shutil.copy(foreign, stopped_run / "checkpoints" / foreign.name)
    capsys.readouterr()
    assert cli("--resume", str(stopped_run)) == 2
    assert "belongs to another run" in one_line(capsys.readouterr().err)


def test_resume_without_a_checkpoint_starts_over_and_cleans_orphans(tmp_path, stopped_run):
    config, _ = load_config(str(write_config(tmp_path)))
    train(config, tmp_path / "full")
    shutil.rmtree(stopped_run / "checkpoints")  # killed before its first checkpoint
    (stopped_run / "checkpoints").mkdir()
    orphans = [stopped_run / "checkpoints" / "step_0000000400.npz.x1y2.tmp", stopped_run / "config.yaml.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half a write")
    assert cli("--resume", str(stopped_run)) == 0
    assert not any(p.exists() for p in orphans)
    assert fi.differences(fi.final_state(stopped_run), fi.final_state(tmp_path / "full")) == []
    # a new run's directory that never got its config.yaml (killed at start-up) can be used again
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "run_id").write_text("abc\n")
    assert cli("--config", str(write_config(tmp_path, total_steps=200)), "--run-dir", str(stale)) == 0


def test_tensorboard_continues_without_duplicate_steps_after_a_kill(tmp_path, stopped_run):
    from tbparse import SummaryReader

    # As if killed after logging up to step 700 but before its checkpoint there was written:
    CheckpointManager(stopped_run / "checkpoints").latest().unlink()  # the latest left is step 400
    assert cli("--resume", str(stopped_run)) == 0
    raw = SummaryReader(str(stopped_run)).scalars  # every record, purge ignored
    raw_sps = raw[raw["tag"] == "perf/sps"]["step"]
    assert raw_sps.duplicated().sum() == 3  # 500, 600, 700 were logged twice ...
    steps, _ = read_scalars(stopped_run)["perf/sps"]
    assert list(steps) == list(range(100, 1300, 100))  # ... and the purge step hides the first copies
    evals, _ = read_scalars(stopped_run)["eval/mean_return"]
    assert list(evals) == [600, 1200]


@pytest.mark.parametrize("agent, override, quantity", [
    ("spine", "agent.lr=1e6", "optimizer state optimizer.v not finite"),  # Adam's g*g overflows first
    ("dqn", "agent.optim.lr.start=1e6", "loss/td is"),  # finite, but 1e18: above train.divergence_limit
])
def test_divergence_stops_with_exit_3_and_keeps_the_last_finite_checkpoint(tmp_path, capsys, agent, override,
                                                                           quantity):
    if agent == "spine":
        args = ["--config", str(write_config(tmp_path, checkpoint_every=2, keep_checkpoints=1,
                                             divergence_limit=0))]  # only non-finite numbers count
    else:
        name, overrides = fi.CASES["dqn"]
        args = ["--config", name] + [a for s in overrides + fi.QUIET + ["train.keep_checkpoints=1",
                                                                       "train.checkpoint_every=100"]
                                     for a in ("--set", s)]
    capsys.readouterr()
    assert cli(*args, "--run-dir", str(tmp_path / "run"), "--set", override) == 3
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"diverged: {quantity}") and "the last finite checkpoint is" in line, line
    latest = CheckpointManager(tmp_path / "run" / "checkpoints").latest()
    arrays, meta = read_checkpoint(latest)
    assert str(latest) in line
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    assert meta["env_steps"] < int(line.split(" at step ")[1].split(",")[0].split(";")[0])


def test_env_emitting_nan_is_reported_unless_the_guard_is_off(tmp_path, capsys):
    nan_env = ["--set", "env.id=fault_envs:FaultCartPole-v0", "--set", "env.kwargs={nan_after: 150}",
               "--set", "train.total_steps=600", "--set", "train.eval_every=0"]
    path = str(write_config(tmp_path))
    capsys.readouterr()
    assert cli("--config", path, "--run-dir", str(tmp_path / "nan"), *nan_env) == 3
    assert "diverged: a non-finite observation from the env at step 300" in one_line(capsys.readouterr().err)
    # (2 envs: each has stepped 150 times at step 300.) With the guard off, the NaN goes unnoticed:
    assert cli("--config", path, "--run-dir", str(tmp_path / "off"), *nan_env,
               "--set", "train.divergence_guard=false") == 0


def sigint_when_evaluating(marker: Path) -> threading.Thread:
    """A thread that sends this process a real SIGINT as soon as the eval env announces itself (``marker``)."""
    def interrupt() -> None:
        while not marker.exists():
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt, daemon=True)
    watcher.start()
    return watcher


def test_signal_during_the_final_evaluation_checkpoints_and_evaluates_on_resume(tmp_path):
    """A real SIGINT to this process while the final evaluation runs (the eval env announces itself)."""
    marker = tmp_path / "eval_started"
    config, _ = load_config(str(write_config(tmp_path, eval_every=0, total_steps=400)), [
        "env.id=fault_envs:FaultCartPole-v0", f"env.eval_kwargs={{marker: {marker}, step_delay: 0.01}}"])

    watcher = sigint_when_evaluating(marker)
    summary = train(config, tmp_path / "run")
    watcher.join(timeout=5)
    assert summary["interrupted"] and summary["signal"] == signal.SIGINT
    _, meta = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").latest())
    assert meta["env_steps"] == 400 and not meta["finished"]
    assert "eval return" not in (tmp_path / "run" / "log.txt").read_text()  # the evaluation was skipped
    marker.unlink()
    resumed = train(config, tmp_path / "run", resume=True)
    assert not resumed["interrupted"] and "eval_mean" in resumed
    assert train(config, tmp_path / "run", resume=True)["already_finished"]


def test_pending_evaluation_done_on_resume_is_checkpointed_and_logged_once(tmp_path):
    """A run stopped mid-evaluation evaluates that step again on resume. Once that is done, a stop
    before the next unit of work must still checkpoint: the checkpoint on disk says the evaluation is
    pending, and resuming from it would log that step's eval twice."""
    marker = tmp_path / "eval_started"
    config, _ = load_config(str(write_config(tmp_path, checkpoint_every=0)), [
        "env.id=fault_envs:FaultCartPole-v0", f"env.eval_kwargs={{marker: {marker}, step_delay: 0.01}}"])

    watcher = sigint_when_evaluating(marker)
    assert train(config, tmp_path / "run")["interrupted"]  # during the evaluation at step 600
    watcher.join(timeout=5)
    _, meta = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").latest())
    assert meta["env_steps"] == 600 and meta["eval_pending"]
    marker.unlink()
    assert train(config, tmp_path / "run", resume=True, stop_at=600)["interrupted"]  # evaluates, then stops
    _, meta = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").latest())
    assert meta["env_steps"] == 600 and not meta["eval_pending"]
    assert not train(config, tmp_path / "run", resume=True)["interrupted"]
    assert list(read_scalars(tmp_path / "run")["eval/mean_return"][0]) == [600, 1200]


def test_stale_lock_file_of_a_killed_run_does_not_block(stopped_run):
    with open(stopped_run / ".lock", "w") as f:
        f.write("99999999")  # a pid long gone; flock state died with it
    fd = os.open(stopped_run / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
    finally:
        os.close(fd)
    assert cli("--resume", str(stopped_run)) == 0
