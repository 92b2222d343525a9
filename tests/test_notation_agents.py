"""``model.notation`` in every agent's config: an agent with a network builds it from the program; an
agent that cannot take one refuses in one line (exit status 2 from the command line), never silently
ignoring the program or failing with an AttributeError."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from rlscratch.envs.factory import make_vec_env, spaces_of

from rlscratch.agent import EnvSpec
from rlscratch.config import load_config
from rlscratch.errors import ConfigError
from rlscratch.notation import NotationModel
from rlscratch.trainer import build_agent, train

PROGRAM = "O --[A_1: dense(16)|relu]-> h --[A_2]-> out"


def agent_with_notation(config_name: str, *overrides: str):
    config, _ = load_config(config_name, [f'model.notation="{PROGRAM}"', "env.num_envs=1", *overrides])
    spec = None
    if config.agent["name"] != "supervised":
        envs = make_vec_env(config.env, evaluation=True)
        spec = EnvSpec(*spaces_of(envs), config.env.num_envs)
        envs.close()
    return build_agent(config, spec, np.random.SeedSequence(0))


def notation_models(agent) -> list[NotationModel]:
    found = []
    for value in vars(agent).values():
        if hasattr(value, "modules"):
            found += [m for _, m in value.modules() if isinstance(m, NotationModel)]
    return found


@pytest.mark.parametrize("config_name, overrides", [
    ("dqn_cartpole", ()), ("a2c_cartpole", ()), ("a2c_gae_cartpole", ()), ("ppo_cartpole", ()),
    ("td_random_walk", ("agent.value=mlp",)), ("td_gru_random_walk_moves", ()), ("supervised_mnist_mlp", ()),
    ("epsilon_greedy_bandit_mnist", ()), ("policy_gradient_bandit_mnist", ()),
])
def test_agents_with_a_network_build_it_from_the_program(config_name, overrides):
    models = notation_models(agent_with_notation(config_name, *overrides))
    assert models, f"{config_name} ignored model.notation"
    assert all([n for n, _, _ in m.named_params()][:2] == ["A_1.W", "A_1.b"] for m in models)


@pytest.mark.parametrize("config_name, overrides, message", [
    ("muzero_cartpole", (), "model.notation: MuZero builds its three networks"),
    ("gumbel_muzero_cartpole", (), "model.notation: MuZero builds its three networks"),
    ("linucb_bandit_mnist", (), "model.notation: linucb_bandit reads its network's last hidden layer"),
    ("td_random_walk", (), "model.notation: value: linear has no network to write; set agent.value: mlp"),
    ("supervised_mnist_cnn", (), "model.notation: network: cnn is built from agent.channels"),
    ("dqn_cartpole", ("agent.dueling=true",), "model.notation: agent.dueling splits model.hidden's last layer"),
])
def test_agents_that_cannot_take_a_program_refuse_it(config_name, overrides, message):
    with pytest.raises(ConfigError) as info:
        agent_with_notation(config_name, *overrides)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_refusal_from_the_command_line_is_one_line_with_exit_status_2():
    result = subprocess.run([sys.executable, "-m", "rlscratch.train", "--config", "muzero_cartpole", "--set",
                             f'model.notation="{PROGRAM}"'], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.notation: MuZero builds its three networks"), lines


def test_bandit_with_a_notation_network_trains_through_the_loop(tmp_path):
    """The bandit agents used to fail on a notation network (AttributeError: no .layers)."""
    config, _ = load_config("epsilon_greedy_bandit_mnist", [
        f'model.notation="{PROGRAM}"', "train.total_steps=200", "train.eval_every=0", "train.eval_episodes=50",
        "log.tensorboard=false", "log.progress=false", "train.checkpoint_every=0"])
    summary = train(config, tmp_path / "run")
    agent = summary["agent"]
    initial = agent_with_notation("epsilon_greedy_bandit_mnist")
    assert notation_models(agent) and agent.net.num_params() == initial.net.num_params()
    assert not np.array_equal(agent.net.flat_params, initial.net.flat_params)  # it was trained
