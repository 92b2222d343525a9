"""docs/adding-an-agent.md trains exactly the agent it shows: its code blocks are run here."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_config as write_yaml_config

from rlscratch.config import load_config
from rlscratch.trainer import train

DOC = Path(__file__).resolve().parent.parent / "docs" / "adding-an-agent.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.slow
def test_the_documented_agent_trains_from_its_documented_config(tmp_path, monkeypatch):
    agent_source = next(block for block in code_blocks("python") if "class Reinforce" in block)
    (tmp_path / "my_agent.py").write_text(agent_source)
    config_text = next(block for block in code_blocks("yaml") if "my_agent:Reinforce" in block)
    data = yaml.safe_load(config_text)
    write_yaml_config(tmp_path, data, "reinforce_cartpole.yaml")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("my_agent", None)

    config, _ = load_config("reinforce_cartpole.yaml", ["train.eval_episodes=20"])
    summary = train(config, tmp_path / "run")
    # Uniformly random play balances CartPole for about 22 steps.
    assert summary["eval_mean"] >= 150, summary["eval_mean"]
