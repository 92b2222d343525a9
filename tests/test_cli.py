"""The command line as a new user meets it (issue 18): config names found from any directory,
--list / --describe / --help, a register_agent short name found through the config's ``imports``,
run directory names, and no progress-bar redraws in logs."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlscratch.agent import AGENTS, resolve_agent
from rlscratch.config import shipped_configs
from rlscratch.train import main, parser

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SHORT = ["--set", "train.total_steps=200", "--set", "train.eval_episodes=2", "--set", "env.eval_num_envs=1",
         "--set", "agent.learning_starts=50", "--set", "agent.gradient_steps=1", "--set", "log.tensorboard=false"]


def python(args: list[str], cwd: Path, extra_path: list[Path] = ()) -> subprocess.CompletedProcess:
    """`python -m ...` as a user types it, from ``cwd``, with stdout and stderr piped (not terminals)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(str(p) for p in [ROOT, *extra_path]))
    env.pop("TQDM_DISABLE", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_bare_config_names_resolve_outside_the_checkout(tmp_path):
    """From a directory with no configs/ in it, `--config dqn_cartpole` finds the installed config
    (it said 'available: none'); the run is named <config>-<env>-s<seed>-<timestamp>; and with
    stdout/stderr piped, no progress bar redraws itself into them."""
    assert not (tmp_path / "configs").exists()
    listed = python(["-m", "rlscratch.train", "--list"], tmp_path)
    assert listed.returncode == 0 and "dqn_cartpole" in listed.stdout, listed.stderr
    done = python(["-m", "rlscratch.train", "--config", "dqn_cartpole", "--seed", "3", *SHORT], tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"dqn_cartpole-CartPole-v1-s3-\d{8}-\d{6}", run.name), run.name
    assert "\r" not in done.stderr and "step/s" not in done.stderr, done.stderr[:300]
    assert "done: 200 env steps" in done.stdout


def test_list_names_every_agent_config_and_env(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in [*AGENTS, *shipped_configs(), "rlscratch/MNISTBandit-v0", "rlscratch/RandomWalk-v0"]:
        assert name in out
    assert len(shipped_configs()) == len(list((ROOT / "configs").glob("*.yaml")))
    assert parser().epilog in parser().format_help() and "dqn_cartpole" in parser().epilog  # --help says it too


@pytest.mark.parametrize("agent", ["dqn", "ppo", "muzero"])
def test_describe_lists_every_hyperparameter_with_type_default_range_and_help(agent, capsys):
    assert main(["--describe", agent]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[3:]}
    fields = dataclasses.fields(resolve_agent(agent).Config)
    assert set(rows) == {f.name for f in fields}
    if agent == "dqn":
        assert re.search(r"buffer_size\s+int\s+100000\s+>= 1\s+replay capacity in transitions", out)
        assert re.search(r"loss\s+str\s+huber\s+one of huber, mse", out)
        assert re.search(r"tau\s+float\s+1.0\s+> 0 and <= 1\s+1: hard copy", out)


def test_register_agent_short_name_found_through_imports(tmp_path):
    """docs/adding-an-agent.md: register_agent("reinforce", ...) in your module, then name that
    module in the config's imports -- the CLI (train and evaluate) finds the short name."""
    (tmp_path / "my_plugin.py").write_text(
        'from rlscratch.agent import register_agent\nregister_agent("online_q_short", "spine_agents:OnlineQ")\n')
    config = {"imports": ["my_plugin"], "env": {"id": "CartPole-v1"}, "agent": {"name": "online_q_short"},
              "model": {"hidden": [8]}, "train": {"total_steps": 100, "eval_episodes": 2},
              "log": {"tensorboard": False}}
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(config))
    done = python(["-m", "rlscratch.train", "--config", "short.yaml", "--run-dir", "run"], tmp_path, [TESTS, tmp_path])
    assert done.returncode == 0, done.stderr
    evaluated = python(["-m", "rlscratch.evaluate", "run", "--episodes", "2", "--json"], tmp_path, [TESTS, tmp_path])
    assert evaluated.returncode == 0 and '"episodes": 2' in evaluated.stdout, evaluated.stderr
    without = yaml.safe_dump({k: v for k, v in config.items() if k != "imports"})
    (tmp_path / "without.yaml").write_text(without)
    refused = python(["-m", "rlscratch.train", "--config", "without.yaml"], tmp_path, [TESTS, tmp_path])
    assert refused.returncode == 2 and "unknown agent 'online_q_short'" in refused.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_drawn_on_a_terminal(tmp_path):
    """The other half of the rule: on a terminal the bar is drawn (the piped run above has none)."""
    import fcntl
    import struct
    import termios

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("TQDM_DISABLE", None)
    process = subprocess.Popen([sys.executable, "-m", "rlscratch.train", "--config", "dqn_cartpole", *SHORT,
                                "--run-dir", str(tmp_path / "run")], cwd=tmp_path, env=env,
                               stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "step/s" in text and "\r" in text, text[-500:]
