"""evaluate --video: N episodes recorded as MP4s, or one line saying what is missing."""

import sys
from pathlib import Path

import pytest

from rlscratch.config import load_config
from rlscratch.errors import UserError
from rlscratch.evaluate import main as evaluate
from rlscratch.evaluate import open_renderer
from rlscratch.train import main as train

SHORT = ["--set", "train.total_steps=200", "--set", "train.eval_episodes=1", "--set", "env.eval_num_envs=1",
         "--set", "log.tensorboard=false", "--set", "agent.learning_starts=50"]


def test_video_records_the_asked_number_of_episodes(tmp_path):
    pytest.importorskip("pygame", reason="no renderer: pip install -e '.[video]'")
    pytest.importorskip("moviepy", reason="no video writer: pip install -e '.[video]'")
    run = tmp_path / "run"
    assert train(["--config", "dqn_cartpole", *SHORT, "--run-dir", str(run)]) == 0
    assert evaluate([str(run), "--episodes", "1", "--video", "--video-episodes", "4"]) == 0
    videos = sorted((run / "videos").glob("*.mp4"))
    assert len(videos) == 4 and all(v.stat().st_size > 1000 for v in videos)  # it used to stop at 3


def test_env_without_frames_is_one_line():
    config, _ = load_config("td_random_walk")
    with pytest.raises(UserError, match=r"--video: rlscratch/RandomWalk-v0 (cannot draw|draws no rgb_array) frames"):
        open_renderer(config)


def test_missing_pygame_is_named(monkeypatch):
    for name in [m for m in sys.modules if m == "pygame" or m.startswith("pygame.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame -> ImportError, as when not installed
    config, _ = load_config("dqn_cartpole")
    with pytest.raises(UserError, match=r"CartPole-v1 cannot draw frames, a package is missing \(pygame.*\[video\]"):
        open_renderer(config)


def test_video_episodes_must_be_positive(tmp_path, capsys):
    from rlscratch.cli import run_cli

    run = tmp_path / "run"
    assert train(["--config", "dqn_cartpole", *SHORT, "--run-dir", str(run)]) == 0
    assert run_cli(evaluate, [str(run), "--video", "--video-episodes", "0"]) == 2
    assert "--video-episodes must be at least 1" in capsys.readouterr().err
    assert not Path(run / "videos").exists()
