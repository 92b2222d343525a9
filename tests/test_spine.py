"""The training spine: configs and their errors, the registry, envs (termination vs truncation),
checkpoints (atomic, resumable, exact), determinism and TensorBoard output."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import write_config as write_yaml_config
from rlscratch.envs.factory import make_vec_env

from rlscratch import nn
from rlscratch.agent import register_agent, resolve_agent
from rlscratch.checkpoint import CheckpointManager, read_checkpoint
from rlscratch.collector import Collector
from rlscratch.config import EnvConfig, load_config
from rlscratch.errors import CheckpointError, ConfigError
from rlscratch.trainer import train

AGENT = "spine_agents:OnlineQ"


def write_config(folder: Path, **sections) -> Path:
    data = {
        "env": {"id": "CartPole-v1", "num_envs": 2},
        "agent": {"name": AGENT},
        "model": {"hidden": [16]},
        "train": {"total_steps": 1200, "eval_every": 600, "eval_episodes": 3, "checkpoint_every": 400,
                  "log_every": 200},
        "seed": 3,
    }
    return write_yaml_config(folder, data, **sections)


# -- configs ---------------------------------------------------------------------------------------
def test_config_loads_with_defaults_and_overrides(tmp_path):
    path = write_config(tmp_path)
    config, _ = load_config(str(path), ["agent.lr=1e-2", "train.total_steps=5e3", "model.hidden=[8, 8]"], seed=9)
    assert config.name == "exp" and config.seed == 9
    assert config.train.total_steps == 5000 and config.model.hidden == [8, 8]
    assert config.agent["lr"] == 0.01
    assert config.train.keep_checkpoints == 3  # a default


@pytest.mark.parametrize("override, message", [
    ("train.total_step=5", r"unknown key 'train.total_step' -- did you mean 'total_steps'\?"),
    ("trian.total_steps=5", r"unknown key 'trian' -- did you mean 'train'\?"),
    ("train.total_steps=lots", r"train.total_steps: expected an integer, got 'lots'"),
    ("env.num_envs=0", r"env.num_envs: 0 is out of range; allowed: >= 1"),
    ("env.vectorization=asyncc", r"did you mean 'async'"),
    ("model.hidden=64", r"model.hidden: expected a list"),
])
def test_config_errors_name_key_value_and_fix(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(str(write_config(tmp_path)), [override])


def test_agent_hyperparameters_are_validated(tmp_path):
    from rlscratch.agent import agent_config

    cls = resolve_agent(AGENT)
    with pytest.raises(ConfigError, match=r"unknown key 'agent.lrr' -- did you mean 'lr'\?"):
        agent_config(cls, {"name": AGENT, "lrr": 0.1})
    with pytest.raises(ConfigError, match=r"agent.gamma: 1.5 is out of range; allowed: >= 0 and <= 1"):
        agent_config(cls, {"name": AGENT, "gamma": 1.5})
    assert agent_config(cls, {"name": AGENT, "lr": "3e-4"}).lr == pytest.approx(3e-4)


def test_missing_and_malformed_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config 'nope.yaml' not found"):
        load_config("nope.yaml")
    (tmp_path / "bad.yaml").write_text("env: {id: CartPole-v1\nagent: [")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+, column \d+"):
        load_config("bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        load_config("list.yaml")
    (tmp_path / "python.yaml").write_text("agent: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe_load refuses arbitrary objects
        load_config("python.yaml")


def test_bare_name_resolves_into_configs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    write_config(tmp_path).rename(tmp_path / "configs" / "mine.yaml")
    config, _ = load_config("mine")
    assert config.name == "mine"


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rlscratch.train", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(Path(__file__).parent), "PATH": "/usr/bin:/bin"})


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path):
    result = run_cli("--config", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: config 'missing.yaml' not found")
    result = run_cli("--config", str(write_config(tmp_path)), "--set", "agent.lrr=1", cwd=tmp_path)
    assert result.returncode == 2 and "did you mean 'lr'" in result.stderr
    assert not (tmp_path / "runs").exists(), "a rejected config must not leave a run directory behind"
    result = run_cli("--resume", str(tmp_path / "no-such-run"), cwd=tmp_path)
    assert result.returncode == 2 and "not an rlscratch run directory" in result.stderr
    assert run_cli("--help", cwd=tmp_path).returncode == 0


# -- registry --------------------------------------------------------------------------------------
def test_registry_and_dotted_paths():
    from spine_agents import OnlineQ

    assert resolve_agent(AGENT) is OnlineQ
    register_agent("online_q_test", AGENT)
    assert resolve_agent("online_q_test") is OnlineQ
    with pytest.raises(ConfigError, match=r"unknown agent 'online_q_tst' -- did you mean 'online_q_test'\?"):
        resolve_agent("online_q_tst")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        resolve_agent("no_such_module:Agent")
    with pytest.raises(ConfigError, match="is not an rlscratch Agent"):
        resolve_agent("numpy:ndarray")


# -- environments: termination vs truncation -------------------------------------------------------
def test_truncation_keeps_final_observation_and_resets():
    envs = make_vec_env(EnvConfig(id="CartPole-v1", num_envs=2, kwargs={"max_episode_steps": 5}))
    collector = Collector(envs, seeds=[1, 2])
    for _ in range(4):
        step, finished = collector.step(np.array([0, 1]))
        assert not step.done.any() and not finished
    previous = step.next_obs.copy()
    step, finished = collector.step(np.array([0, 1]))
    assert step.truncated.all() and not step.terminated.any()
    assert [e.length for e in finished] == [5, 5]
    # next_obs is the final observation the action led to (CartPole moves continuously from the last one),
    # while the collector already holds the first observation of a new episode.
    assert np.abs(step.next_obs - previous).max() < 0.5
    assert not np.allclose(collector.obs, step.next_obs)
    assert np.abs(collector.obs).max() <= 0.05  # CartPole resets within +-0.05


def test_termination_is_not_truncation():
    envs = make_vec_env(EnvConfig(id="CartPole-v1", num_envs=1))
    collector = Collector(envs, seeds=[0])
    for _ in range(200):
        step, finished = collector.step(np.array([1]))  # always pushing right topples the pole
        if step.done.any():
            break
    assert step.terminated[0] and not step.truncated[0]
    assert abs(step.next_obs[0, 2]) > 0.2 or abs(step.next_obs[0, 0]) > 2.4  # the pole really fell


# -- checkpoints, resume, determinism --------------------------------------------------------------
def final_params(summary) -> np.ndarray:
    return summary["agent"].q.flat_params.copy()


def test_same_seed_same_result_and_resume_is_exact(tmp_path):
    config, _ = load_config(str(write_config(tmp_path)))
    full = train(config, tmp_path / "full")
    again = train(config, tmp_path / "again")
    assert np.array_equal(final_params(full), final_params(again))
    assert full["eval_mean"] == again["eval_mean"]

    interrupted = train(config, tmp_path / "split", stop_at=700)  # mid-episode, off the checkpoint grid
    assert interrupted["interrupted"] and interrupted["env_steps"] == 700
    resumed = train(config, tmp_path / "split", resume=True)
    assert resumed["env_steps"] == 1200
    assert np.array_equal(final_params(resumed), final_params(full))
    assert resumed["eval_mean"] == full["eval_mean"]

    other_seed, _ = load_config(str(write_config(tmp_path)), seed=4)
    assert not np.array_equal(final_params(train(other_seed, tmp_path / "other")), final_params(full))


def test_run_directory_contents(tmp_path):
    config, _ = load_config(str(write_config(tmp_path, train={"keep_checkpoints": 2})), ["agent.lr=0.002"])
    train(config, tmp_path / "run")
    run = tmp_path / "run"
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["agent"] == {"name": AGENT, "lr": 0.002, "epsilon": 0.2, "gamma": 0.99}
    assert written["train"]["total_steps"] == 1200
    assert "done: 1200 env steps" in (run / "log.txt").read_text()
    names = [p.name for p in CheckpointManager(run / "checkpoints").all()]
    assert names == ["step_0000000800.npz", "step_0000001200.npz"]  # saved every 400 steps, the last 2 kept


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(100, {"w": np.arange(3.0)}, {"env_steps": 100})

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        manager.save(200, {"w": np.arange(3.0)}, {"env_steps": 200})
    monkeypatch.undo()
    assert [p.name for p in manager.all()] == ["step_0000000100.npz"]
    assert list(tmp_path.glob("*.tmp")) == []
    arrays, meta = read_checkpoint(manager.latest())
    assert meta["env_steps"] == 100 and np.array_equal(arrays["w"], np.arange(3.0))


def test_keep_last_n_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save(step, {"x": np.zeros(1)}, {})
    assert [p.name for p in manager.all()] == ["step_0000000020.npz", "step_0000000030.npz"]


def test_resume_rejects_foreign_or_corrupt_checkpoints(tmp_path):
    config, _ = load_config(str(write_config(tmp_path)))
    train(config, tmp_path / "run", stop_at=400)
    different, _ = load_config(str(write_config(tmp_path)), ["env.num_envs=3"])
    with pytest.raises(CheckpointError, match="written with num_envs=2, but this config has 3"):
        train(different, tmp_path / "run", resume=True)
    bigger_net, _ = load_config(str(write_config(tmp_path)), ["model.hidden=[32]"])
    with pytest.raises(CheckpointError, match="does not match this agent/config: .*shape mismatch"):
        train(bigger_net, tmp_path / "run", resume=True)
    latest = CheckpointManager(tmp_path / "run" / "checkpoints").latest()
    latest.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable .npz file"):
        train(config, tmp_path / "run", resume=True)
    # (a run directory without a checkpoint starts over on --resume: tests/test_faults.py)


# -- TensorBoard -----------------------------------------------------------------------------------
def test_tensorboard_scalars_read_back(tmp_path):
    from tbparse import SummaryReader

    config, _ = load_config(str(write_config(tmp_path)))
    summary = train(config, tmp_path / "run")
    scalars = SummaryReader(str(tmp_path / "run")).scalars
    tags = set(scalars["tag"])
    for tag in ("charts/episodic_return", "charts/episodic_length", "eval/mean_return", "loss/td",
                "train/epsilon", "perf/sps", "perf/ups"):
        assert tag in tags, tag
    evals = scalars[scalars["tag"] == "eval/mean_return"]
    assert list(evals["step"]) == [600, 1200]
    assert evals["value"].iloc[-1] == pytest.approx(summary["eval_mean"])
    epsilon = scalars[scalars["tag"] == "train/epsilon"]["value"]
    assert np.allclose(epsilon, 0.2)


def test_flat_params_of_agent_are_float32(tmp_path):
    config, _ = load_config(str(write_config(tmp_path)), ["train.total_steps=10"])
    agent = train(config, tmp_path / "run")["agent"]
    assert agent.q.flat_params.dtype == np.float32 and isinstance(agent.optimizer, nn.Adam)


def test_gym_registers_our_env_ids():
    import rlscratch.envs  # noqa: F401

    assert "rlscratch/MNISTBandit-v0" in gym.registry


# -- evaluate and plot -----------------------------------------------------------------------------
def test_evaluate_and_plot_commands(tmp_path, capsys):
    import json

    from rlscratch import evaluate, plot
    from rlscratch.cli import run_cli as run_main
    from rlscratch.events import read_scalars

    runs = []
    for seed in (1, 2):
        config, _ = load_config(str(write_config(tmp_path)), seed=seed)
        train(config, tmp_path / f"run{seed}")
        runs.append(str(tmp_path / f"run{seed}"))
    steps, values = read_scalars(runs[0])["eval/mean_return"]
    assert list(steps) == [600, 1200]
    capsys.readouterr()

    assert run_main(evaluate.main, [runs[0], "--episodes", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 4 and len(result["returns"]) == 4
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))
    assert run_main(evaluate.main, [str(tmp_path / "nowhere")]) == 2
    assert "not an rlscratch run directory" in capsys.readouterr().err

    try:
        import moviepy  # noqa: F401
    except ImportError:
        assert run_main(evaluate.main, [runs[0], "--episodes", "1", "--video"]) == 2
        assert "--video needs moviepy" in capsys.readouterr().err

    out = tmp_path / "curves.png"
    assert run_main(plot.main, [*runs, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_main(plot.main, [runs[0], "--tag", "no/such"]) == 2
    assert "has no scalar 'no/such'" in capsys.readouterr().err


SHIPPED_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_validates(path):
    """Each shipped config loads, its agent section passes the agent's own dataclass, its env id is
    known to gymnasium, and its file name starts with its agent's name (<agent>_<env>.yaml)."""
    from rlscratch.envs.factory import MINATAR_PREFIX, register_minatar

    from rlscratch.agent import agent_config

    config, _ = load_config(str(path))
    name = config.agent["name"]
    agent_config(resolve_agent(name), config.agent)
    assert path.stem.startswith(name + "_"), (path.name, name)
    if config.env.id.startswith(MINATAR_PREFIX):
        register_minatar()  # what make_env does for such an id (not left to an earlier test)
    assert config.env.id in gym.registry, config.env.id
