"""rlscratch/optim_config.py: the one optimizer/schedule vocabulary every agent's config uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from rlscratch import nn
from rlscratch.agent import AGENTS, EnvSpec, agent_config, resolve_agent
from rlscratch.config import ModelConfig, load_config, read_yaml
from rlscratch.errors import ConfigError
from rlscratch.optim_config import RENAMED, OptimConfig, Schedule, ScheduleConfig, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


# -- schedules -----------------------------------------------------------------------------------------
def test_schedules_by_hand():
    linear = Schedule(ScheduleConfig(start=1.0, end=0.1, steps=100))
    assert [linear(t) for t in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    cosine = Schedule(ScheduleConfig(start=2.0, end=1.0, steps=10, kind="cosine"))
    assert [cosine(t) for t in (0, 5, 10, 20)] == pytest.approx([2.0, 1.5, 1.0, 1.0])
    assert Schedule(ScheduleConfig(start=0.3, end=9.0, steps=10, kind="constant"))(7) == 0.3
    assert Schedule(0.25)(10**9) == 0.25  # a plain number is a constant


def test_each_schedule_reads_the_clock_it_names():
    on_env_steps = Schedule(ScheduleConfig(start=1.0, end=0.0, steps=10, clock="env_steps"))
    on_updates = Schedule(ScheduleConfig(start=1.0, end=0.0, steps=10, clock="updates"))
    assert on_env_steps(env_steps=4, updates=8) == pytest.approx(0.6)
    assert on_updates(env_steps=4, updates=8) == pytest.approx(0.2)


def test_a_schedule_without_steps_waits_for_the_run_length():
    schedule = Schedule(ScheduleConfig(start=1.0, end=0.0, kind="cosine", clock="updates"))
    with pytest.raises(ConfigError, match="steps: missing"):
        schedule(0, 0)
    schedule.set_run_length(10)
    assert schedule(0, 5) == pytest.approx(0.5)


# -- the optim: section --------------------------------------------------------------------------------
def test_a_partial_section_keeps_the_agents_other_defaults():
    a2c = agent_config(resolve_agent("a2c"), {"optim": {"lr": 5e-4}}).optim
    assert (a2c.name, a2c.lr, a2c.eps, a2c.alpha, a2c.max_grad_norm) == ("rmsprop", 5e-4, 1e-5, 0.99, 0.5)
    ppo = agent_config(resolve_agent("ppo"), {"optim": {"max_grad_norm": 2}}).optim
    assert (ppo.name, ppo.lr, ppo.eps, ppo.max_grad_norm) == ("adam", 2.5e-4, 1e-5, 2.0)
    dqn = agent_config(resolve_agent("dqn"), {"optim": {"lr": {"start": 1e-3, "end": 0, "steps": 10}}}).optim
    assert dqn.lr == ScheduleConfig(start=1e-3, end=0.0, steps=10) and dqn.max_grad_norm == 10.0


def test_the_section_is_validated_like_any_other():
    dqn = resolve_agent("dqn")
    with pytest.raises(ConfigError, match="did you mean 'start'"):
        agent_config(dqn, {"optim": {"lr": {"stat": 1e-3, "steps": 10}}})
    with pytest.raises(ConfigError, match="'adamm' is not allowed"):
        agent_config(dqn, {"optim": {"name": "adamm"}})
    with pytest.raises(ConfigError, match="agent.optim.lr.steps: missing"):
        agent_config(dqn, {"optim": {"lr": {"start": 1e-3, "end": 0}}})  # DQN does not know its run's length
    with pytest.raises(ConfigError, match="agent.epsilon.steps: missing"):
        agent_config(dqn, {"epsilon": {"start": 1.0, "end": 0.0}})


@pytest.mark.parametrize("name, cls", [("sgd", nn.SGD), ("momentum", nn.optim.Momentum),
                                       ("nesterov", nn.optim.Momentum), ("rmsprop", nn.RMSprop),
                                       ("adam", nn.Adam), ("adamw", nn.AdamW)])
def test_make_optimizer_passes_every_hyperparameter(name, cls, rng):
    model = nn.Sequential(nn.Linear(3, 2, rng)).flatten()
    optim = OptimConfig(name=name, lr=0.1, weight_decay=0.01, betas=[0.5, 0.75], eps=1e-3, alpha=0.8,
                        momentum=0.6).with_defaults()
    optimizer = make_optimizer(optim, model)
    assert type(optimizer) is cls and optimizer.weight_decay == 0.01 and optimizer.lr == 0.1
    expected = {"adam": {"beta1": 0.5, "beta2": 0.75, "eps": 1e-3}, "adamw": {"beta1": 0.5, "beta2": 0.75},
                "rmsprop": {"alpha": 0.8, "eps": 1e-3}, "momentum": {"momentum": 0.6, "nesterov": False},
                "nesterov": {"momentum": 0.6, "nesterov": True}}.get(name, {})
    assert {key: getattr(optimizer, key) for key in expected} == expected


def test_the_learning_rate_follows_the_optimizers_own_update_count(rng):
    """clock: updates -- the k-th step (from 0) uses start + (end - start) * k / steps: SGD on a loss
    whose gradient is 1 everywhere moves a parameter by exactly the sum of the rates used."""
    model = nn.Sequential(nn.Linear(1, 1, rng, bias=False)).flatten()
    optim = OptimConfig(name="sgd", lr=ScheduleConfig(start=1.0, end=0.0, steps=4, clock="updates")).with_defaults()
    optimizer = make_optimizer(optim, model)
    before = model.flat_params.copy()
    for _ in range(6):
        model.flat_grads[...] = 1.0
        optimizer.step()
    assert np.allclose(before - model.flat_params, 1.0 + 0.75 + 0.5 + 0.25 + 0.0 + 0.0)


def test_an_env_step_clock_needs_an_agent_that_counts_env_steps(rng):
    model = nn.Sequential(nn.Linear(1, 1, rng)).flatten()
    optim = OptimConfig(lr=ScheduleConfig(start=1.0, end=0.0, steps=4)).with_defaults()
    with pytest.raises(ConfigError, match="clock: updates"):
        make_optimizer(optim, model)
    steps = [0]
    optimizer = make_optimizer(optim, model, env_steps=lambda: steps[0])
    steps[0] = 3
    assert optimizer.lr == pytest.approx(0.25)


# -- old keys and shipped configs ----------------------------------------------------------------------
@pytest.mark.parametrize("agent, key, new", [
    ("dqn", "lr", "optim.lr"), ("dqn", "lr_final", "optim.lr: {kind: linear"),
    ("dqn", "exploration_steps", "epsilon.steps"),
    ("a2c", "anneal_steps", "optim.lr: {kind: linear"), ("a2c", "optimizer_eps", "optim.eps"),
    ("ppo", "anneal_clip_range", "clip_range: {kind: linear"), ("epsilon_greedy_bandit", "lr_end", "optim.lr: {"),
    ("linucb_bandit", "lr_decay_rounds", "optim.lr.steps"), ("supervised", "lr_schedule", "optim.lr: {kind: cosine"),
    ("muzero", "lr_decay_updates", "optim.lr.steps"), ("td_gru", "lr_anneal_steps", "optim.lr: {kind: linear"),
    ("td", "optimizer", "optim.name"), ("muzero", "max_grad_norm", "optim.max_grad_norm"),
])
def test_old_keys_name_their_new_place(agent, key, new):
    with pytest.raises(ConfigError) as error:
        agent_config(resolve_agent(agent), {key: 1})
    message = str(error.value)
    assert message.startswith(f"agent.{key} was renamed: use agent.{new}") and "\n" not in message, message


def test_an_old_key_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    config = str(ROOT / "configs" / "dqn_cartpole.yaml")
    result = subprocess.run([sys.executable, "-m", "rlscratch.train", "--config", config,
                             "--set", "agent.lr_final=0", "--set", f"log.root={tmp_path}"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "agent.lr_final was renamed: use agent.optim.lr" in lines[0], result.stderr
    assert not list(tmp_path.glob("**/config.yaml"))  # no run directory was started


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_speaks_the_vocabulary(path):
    """It validates, and what it sets is an optim: section (no learning rate outside it)."""
    config, _ = load_config(str(path))
    section = read_yaml(path)["agent"]
    assert not set(section) & set(RENAMED), set(section) & set(RENAMED)
    cfg = agent_config(resolve_agent(config.agent["name"]), config.agent)
    assert isinstance(cfg.optim, OptimConfig) and cfg.optim.name is not None


def test_every_agents_optimizer_is_built_from_its_section():
    """Each registered agent, built on a tiny env with optim: {name: sgd, lr: 0.125}, gets exactly that."""
    box = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2), 1)
    for name in AGENTS:
        if name in ("supervised", "td", "td_gru"):
            continue  # MNIST and the random walk's own spaces: covered by their configs above
        cls = resolve_agent(name)
        cfg = agent_config(cls, {"optim": {"name": "sgd", "lr": 0.125}})
        agent = cls(cfg, box, ModelConfig(hidden=[4]), np.random.default_rng(0))
        assert type(agent.optimizer) is nn.SGD and agent.optimizer.lr == 0.125, name


def test_written_run_config_shows_the_filled_section(tmp_path):
    """The run directory's config.yaml records the agent's defaults, not nulls."""
    from rlscratch.trainer import train

    data = {"env": {"id": "CartPole-v1"}, "agent": {"name": "a2c", "n_steps": 4, "optim": {"lr": 1e-3}},
            "model": {"hidden": [4]}, "train": {"total_steps": 8, "eval_episodes": 1},
            "log": {"root": str(tmp_path), "progress": False, "tensorboard": False}}
    path = tmp_path / "a2c.yaml"
    path.write_text(yaml.safe_dump(data))
    config, _ = load_config(str(path))
    train(config, tmp_path / "run")
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["agent"]["optim"]
    assert written["name"] == "rmsprop" and written["lr"] == 1e-3 and written["eps"] == 1e-5


# -- schedules reach the maths they set ----------------------------------------------------------------
def one_rollout(name: str, **config) -> np.ndarray:
    """The parameters after the first update of an A2C/PPO on random CartPole-shaped steps."""
    from rlscratch.agent import Step

    spec = EnvSpec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2), 2)
    cls = resolve_agent(name)
    agent = cls(agent_config(cls, {"n_steps": 4, **config}), spec, ModelConfig(hidden=[8]), np.random.default_rng(0))
    data = np.random.default_rng(1)
    metrics: dict = {}
    while not metrics:
        obs = data.standard_normal((2, 4)).astype(np.float32)
        step = Step(obs, agent.act(obs), data.standard_normal(2), data.standard_normal((2, 4)).astype(np.float32),
                    data.random(2) < 0.2, np.zeros(2, bool), {})
        metrics = agent.observe(step)
    return agent.net.flat_params.copy()


def test_a2c_uses_the_entropy_coefficient_its_schedule_gives_now():
    """The first update comes after 8 env steps: a schedule from 1 to 0 over 32 steps is 0.75 there."""
    scheduled = one_rollout("a2c", ent_coef={"start": 1.0, "end": 0.0, "steps": 32})
    assert np.array_equal(scheduled, one_rollout("a2c", ent_coef=0.75))
    assert not np.array_equal(scheduled, one_rollout("a2c", ent_coef=1.0))


def test_ppo_uses_the_clip_range_its_schedule_gives_now():
    """After 8 env steps a clip range from 0.2 to 0 over 16 steps is 0.1; 3 epochs let the ratio reach it."""
    args = {"n_epochs": 3, "batch_size": 8, "optim": {"lr": 0.05}}
    scheduled = one_rollout("ppo", clip_range={"start": 0.2, "end": 0.0, "steps": 16}, **args)
    assert np.array_equal(scheduled, one_rollout("ppo", clip_range=0.1, **args))
    assert not np.array_equal(scheduled, one_rollout("ppo", clip_range=0.2, **args))


def test_supervised_schedule_spans_the_run_counted_from_the_data(tmp_path, monkeypatch):
    """100 training images, batches of 32, 2 epochs: 2 x ceil(100 / 32) = 8 updates, so a cosine from 1
    to 0 without steps is 0.5 at update 4 and 0 after the 8th (with MNIST's 60,000 images hard-coded
    it would still be ~1)."""
    import rlscratch.agents.supervised as supervised

    from rlscratch.trainer import train

    fake = np.random.default_rng(0)
    data = {split: (fake.integers(0, 256, (n, 28, 28), dtype=np.uint8), fake.integers(0, 10, n).astype(np.uint8))
            for split, n in (("train", 100), ("test", 20))}
    monkeypatch.setattr(supervised, "load_mnist", lambda split, path=None: data[split])
    config = {"agent": {"name": "supervised", "epochs": 2, "batch_size": 32,
                        "optim": {"lr": {"kind": "cosine", "start": 1.0, "end": 0.0, "clock": "updates"}}},
              "model": {"hidden": [4]}, "log": {"root": str(tmp_path), "progress": False, "tensorboard": False}}
    path = tmp_path / "supervised.yaml"
    path.write_text(yaml.safe_dump(config))
    agent = train(load_config(str(path))[0], tmp_path / "run")["agent"]
    assert agent.optimizer.steps == 8 and agent.optimizer.lr == 0.0
    assert agent.lr_schedule(0, 4) == pytest.approx(0.5)
