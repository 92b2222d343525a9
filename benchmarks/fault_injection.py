"""Fault injection: real training processes are sent SIGINT, SIGTERM or SIGKILL at seeded random
moments, resumed, and their final state compared with an uninterrupted run's.

    python benchmarks/fault_injection.py --trials 20 [--agents dqn,ppo] [--signals INT,TERM,KILL] [--seed 0]

For every agent (a shipped config shrunk by --set overrides to a few seconds of training) it trains
one uninterrupted reference run, then for each trial: starts ``python -m rlscratch.train``, waits for
a moment (below), sends the signal, then runs ``--resume`` until the run finishes. A trial is
*exact* when the final checkpoint's every array -- parameters, optimizer state, every random
generator's state, the replay buffer or rollout, the envs' replay log -- is bit-identical to the
reference's. It also counts *unresumable* run dirs (a ``--resume`` that did not finish with exit 0)
and *orphan* files (``*.tmp`` left once the run finished), and checks that the TensorBoard scalars
read back (purge_step honoured) have no duplicate steps.

Moments, drawn per trial from the seeded generator, counted in the run's own progress (never in
seconds, which a fast machine outruns): the run is started through tests/fault_gate.py, parks there,
gets the signal and is released.
    train       the K-th stop check of training (between env steps or minibatches), K drawn at random
    checkpoint  the first checkpoint write, its temporary file complete and not yet renamed
    eval        the K-th stop check inside an evaluation (CartPole agents)
    double      (SIGINT only) as train, and a second signal once the run has recorded the first: abort
                without writing, the previous checkpoint stands

tests/test_faults.py runs a short version of the same harness in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
QUIET = ["log.progress=false"]
CARTPOLE = ["env.id=fault_envs:FaultCartPole-v0", "env.eval_num_envs=2"]

# agent -> (config, overrides). Runs of a few seconds; checkpoints on the step grid or a short timer (and the
# grid too, so that a run's first checkpoint write comes before its last on any machine: the checkpoint moment).
CASES: dict[str, tuple[str, list[str]]] = {
    "dqn": ("dqn_cartpole", CARTPOLE + [
        "train.total_steps=1200", "train.eval_every=400", "train.eval_episodes=4", "train.checkpoint_every=300",
        "train.log_every=100", "agent.learning_starts=200", "agent.train_freq=32", "agent.gradient_steps=8",
        "agent.buffer_size=20000", "agent.epsilon.steps=600", "agent.optim.lr.steps=1200"]),
    "ppo": ("ppo_cartpole", CARTPOLE + [
        "train.total_steps=1536", "train.eval_every=512", "train.eval_episodes=4", "train.checkpoint_every=384",
        "train.log_every=128", "agent.n_epochs=4", "agent.optim.lr.steps=1536", "agent.clip_range.steps=1536"]),
    "a2c": ("a2c_cartpole", CARTPOLE + [
        "train.total_steps=1600", "train.eval_every=800", "train.eval_episodes=4", "train.checkpoint_minutes=0.003",
        "train.checkpoint_every=800", "train.log_every=160"]),
    "muzero": ("muzero_cartpole", CARTPOLE + [
        "train.total_steps=192", "train.eval_every=96", "train.eval_episodes=2", "train.checkpoint_minutes=0.005",
        "train.checkpoint_every=96",
        "train.log_every=32", "agent.num_simulations=4", "agent.warmup_steps=64", "agent.batch_size=16",
        "agent.optim.lr.steps=128", "agent.target_update_interval=20"]),
    "supervised": ("supervised_mnist", [
        "agent.epochs=2", "agent.batch_size=1000", "model.hidden=[16]", "train.checkpoint_minutes=0.01"]),
    "bandit": ("epsilon_greedy_bandit_mnist", [
        "train.total_steps=300", "train.eval_every=100", "train.eval_episodes=100", "train.checkpoint_every=75",
        "train.log_every=50", "agent.replay_size=200", "agent.batch_size=16", "agent.optim.lr.steps=600",
        "agent.epsilon.steps=150"]),
    # MinAtar: image observations, and an env whose random generator is its own (envs/minatar_env.py)
    "dqn_minatar": ("dqn_minatar_breakout", [
        "env.eval_num_envs=2", "train.total_steps=600", "train.eval_every=300", "train.eval_episodes=2",
        "train.checkpoint_every=300", "train.log_every=100", "agent.learning_starts=100", "agent.train_freq=8",
        "agent.batch_size=16", "agent.buffer_size=1000", "agent.epsilon.steps=300",
        "agent.target_update_interval=100"]),
    "ppo_minatar": ("ppo_minatar_breakout", [
        "env.num_envs=2", "env.eval_num_envs=2", "train.total_steps=384", "train.eval_every=192",
        "train.eval_episodes=2", "train.checkpoint_every=192", "train.log_every=64", "agent.n_steps=32",
        "agent.batch_size=32", "agent.n_epochs=2", "agent.optim.lr.steps=384"]),
    "efficientzero_minatar": ("efficientzero_minatar_breakout", [
        "env.num_envs=2", "env.eval_num_envs=1", "train.total_steps=128", "train.eval_every=64",
        "train.eval_episodes=1", "train.checkpoint_every=64", "train.log_every=32", "agent.conv_channels=4",
        "agent.reduced_channels=2", "agent.head_hidden=8", "agent.lstm_hidden=8", "agent.num_simulations=2",
        "agent.batch_size=4", "agent.warmup_steps=32", "agent.optim.lr.steps=64",
        # reanalysis on (the shipped Breakout config has it off): its searches' draws must resume too
        "agent.reanalyze_fraction=0.25",
        # both optional switches on: batch norm's running statistics and augmentation's draws must resume too
        "agent.block_norm=batch", "agent.augmentation=[shift, intensity]"]),
}
# Stop checks of training that every run of the case has (vector env steps, rounds, minibatches): a
# "train" signal lands at a random one below this, so always before the run ends.
MAX_UNITS = {"dqn": 1200, "ppo": 192, "a2c": 200, "muzero": 24, "supervised": 120, "bandit": 300,
             "dqn_minatar": 600, "ppo_minatar": 192, "efficientzero_minatar": 64}
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
TIMEOUT = 300.0


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def command(agent: str, run_dir: Path, resume: bool = False) -> list[str]:
    config, overrides = CASES[agent]
    if resume:
        return [sys.executable, "-m", "rlscratch.train", "--resume", str(run_dir)]
    sets = overrides + QUIET
    if config_has_marker(agent):
        sets = sets + [f"env.eval_kwargs={{marker: {run_dir / 'eval_started'}, step_delay: 0.002}}"]
    return [sys.executable, "-m", "rlscratch.train", "--config", config, "--run-dir", str(run_dir)] + \
        [arg for s in sets for arg in ("--set", s)]


def config_has_marker(agent: str) -> bool:
    return CARTPOLE[0] in CASES[agent][1]


def starts_logged(run_dir: Path) -> int:
    log = run_dir / "log.txt"
    if not log.is_file():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines() if " starting" in line or " resuming" in line)


def run_to_end(agent: str, run_dir: Path, resume: bool) -> subprocess.CompletedProcess:
    return subprocess.run(command(agent, run_dir, resume), env=environment(), cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT)


def final_state(run_dir: Path) -> dict[str, np.ndarray]:
    from rlscratch.checkpoint import CheckpointManager, read_checkpoint

    latest = CheckpointManager(run_dir / "checkpoints").latest()
    if latest is None:
        return {}
    arrays, meta = read_checkpoint(latest)
    arrays["finished"] = np.asarray(bool(meta.get("finished")))
    return arrays


def differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in a or k not in b or a[k].shape != b[k].shape or a[k].dtype != b[k].dtype
            or not np.array_equal(a[k], b[k])]


def orphans(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob("*.tmp"))


def duplicate_steps(run_dir: Path) -> int:
    """Steps logged twice for a once-per-step tag, as TensorBoard would show them (purge_step honoured)."""
    from rlscratch.events import read_scalars

    scalars = read_scalars(run_dir)
    tags = [t for t in ("perf/sps", "eval/mean_return", "eval/test_accuracy") if t in scalars]
    return sum(int(len(scalars[t][0]) - len(np.unique(scalars[t][0]))) for t in tags)


@dataclass
class Trial:
    agent: str
    signum: int
    moment: str
    delivered: bool = False  # the signal reached a process that was still training
    landed: str = ""  # where: train / checkpoint write / evaluation / finished first
    exit_code: int | None = None
    resumes: int = 0
    resumable: bool = True
    exact: bool = False
    orphans: int = 0
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)
    stderr: str = ""  # the interrupted process's


def reference(agent: str, root: Path) -> tuple[dict[str, np.ndarray], float]:
    run_dir = root / f"{agent}-reference"
    start = time.perf_counter()
    done = run_to_end(agent, run_dir, resume=False)
    if done.returncode != 0:
        raise RuntimeError(f"{agent} reference run failed ({done.returncode}): {done.stderr[-2000:]}")
    return final_state(run_dir), time.perf_counter() - start


def wait_for(proc: subprocess.Popen, ready, limit: float) -> bool:
    """Poll (about every millisecond) until ready() or the process ends; False if it ended first."""
    deadline = time.monotonic() + limit
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.001)
    return False


def parked(proc: subprocess.Popen, gate: Path) -> bool:
    """Wait until the run parks at its gate (tests/fault_gate.py); False if it ended first."""
    return wait_for(proc, (gate / "parked").exists, TIMEOUT)


def inject(agent: str, run_dir: Path, signum: int, moment: str, units: int, resume: bool) -> Trial:
    """Start (or resume) a run, send ``signum`` at ``moment``; the interrupted process's outcome.

    The moment is counted in the run's own progress, never in seconds (a fast machine would finish
    first, a slow one not have begun): the run, started through tests/fault_gate.py, parks at its
    ``units``-th stop check of training (train, double) or of an evaluation (eval), or at its first
    checkpoint write between the complete temporary file and the rename (checkpoint); the signal is
    sent while it is parked (double: a second one once the run has recorded the first), and then it
    is released."""
    trial = Trial(agent, signum, moment)
    gate = run_dir.parent / f".{run_dir.name}-gate"
    shutil.rmtree(gate, ignore_errors=True)
    gate.mkdir(parents=True)
    k = 1 if moment == "checkpoint" else units
    env = {**environment(), "RLSCRATCH_FAULT_GATE": f"{moment}:{k}:{gate}"}
    proc = subprocess.Popen([sys.executable, "-m", "fault_gate"] + command(agent, run_dir, resume)[3:], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hit = parked(proc, gate)
        trial.delivered = hit and proc.poll() is None
        if trial.delivered:
            proc.send_signal(signum)
            if moment == "double":  # the second once the first is recorded: an abort, still parked
                if wait_for(proc, (gate / "signalled").exists, TIMEOUT):
                    proc.send_signal(signum)
        (gate / "release").touch()
        try:
            _, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            trial.notes.append(f"HUNG: still running {TIMEOUT:.0f} s after the signal; killed")
            proc.kill()
            _, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        shutil.rmtree(gate, ignore_errors=True)
    trial.exit_code, trial.stderr = proc.returncode, stderr or ""
    trial.landed = ({"checkpoint": "checkpoint write", "eval": "evaluation"}.get(moment, "training")
                    if trial.delivered else "finished first")
    if trial.delivered and proc.returncode not in (EXIT[signum], 0):
        trial.notes.append(f"exit {proc.returncode}: {stderr.strip().splitlines()[-1:] if stderr else ''}")
    return trial


def run_trial(agent: str, root: Path, name: str, signum: int, moment: str, rng: np.random.Generator,
              expected: dict[str, np.ndarray]) -> Trial:
    run_dir = root / name
    units = int(rng.integers(1, 8 if moment == "eval" else MAX_UNITS[agent]))
    trial = inject(agent, run_dir, signum, moment, units, resume=False)
    for _ in range(5):  # resume until the run has finished
        done = run_to_end(agent, run_dir, resume=True)
        trial.resumes += 1
        if done.returncode != 0:
            trial.resumable = False
            trial.notes.append(f"--resume exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
            break
        if final_state(run_dir).get("finished"):
            break
    diff = differences(final_state(run_dir), expected)
    trial.exact = trial.resumable and not diff
    if diff:
        trial.notes.append(f"differs in {diff[:4]}")
    trial.orphans = len(orphans(run_dir))
    trial.duplicates = duplicate_steps(run_dir)
    return trial


def moments_for(agent: str, signum: int) -> list[str]:
    moments = ["train", "checkpoint"]
    if config_has_marker(agent):
        moments.append("eval")
    if signum == signal.SIGINT:
        moments.append("double")
    return moments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3, help="trials per agent and signal")
    p.add_argument("--agents", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--signals", default="INT,TERM,KILL")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="where the run dirs go (default: a fresh temporary folder)")
    args = p.parse_args(argv)
    import tempfile

    root = Path(args.root or tempfile.mkdtemp(prefix="fault_injection-"))
    rng = np.random.default_rng(args.seed)
    signals = [getattr(signal, f"SIG{s.strip().upper()}") for s in args.signals.split(",")]
    table: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    started = time.perf_counter()
    for agent in args.agents.split(","):
        expected, seconds = reference(agent, root)
        print(f"{agent}: reference run {seconds:.1f} s", flush=True)
        for signum in signals:
            moments = moments_for(agent, signum)
            for t in range(args.trials):
                moment = moments[int(rng.integers(len(moments)))]
                trial = run_trial(agent, root, f"{agent}-{signum.name}-{t}", signum, moment, rng, expected)
                table[(agent, signum.name)].append(trial)
                print(f"  {signum.name:7} {moment:10} landed in {trial.landed:16} exit {trial.exit_code:>4} "
                      f"resumes {trial.resumes} exact {trial.exact} orphans {trial.orphans} "
                      f"dup {trial.duplicates} {'; '.join(trial.notes)}", flush=True)
    width = max([11] + [len(agent) + 1 for agent, _ in table])  # the agent column fits the longest name
    print(f"\n{'agent':<{width}}{'signal':<9}{'trials':>7}{'delivered':>10}{'exact':>7}{'unresumable':>12}"
          f"{'orphans':>8}{'dup steps':>10}  landed in")
    ok = True
    for (agent, name), trials in table.items():
        exact = sum(t.exact for t in trials)
        unresumable = sum(not t.resumable for t in trials)
        orphan_files = sum(t.orphans for t in trials)
        dups = sum(t.duplicates for t in trials)
        landed = defaultdict(int)
        for t in trials:
            landed[t.landed] += 1
        where = ", ".join(f"{k} {v}" for k, v in sorted(landed.items()))
        print(f"{agent:<{width}}{name:<9}{len(trials):>7}{sum(t.delivered for t in trials):>10}{exact:>7}"
              f"{unresumable:>12}{orphan_files:>8}{dups:>10}  {where}")
        ok &= exact == len(trials) and unresumable == 0 and orphan_files == 0 and dups == 0
    print(f"\n{'PASS' if ok else 'FAIL'}: {sum(len(v) for v in table.values())} trials in "
          f"{time.perf_counter() - started:.0f} s; run dirs in {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
