"""python -m rlscratch.evaluate RUN_DIR [--episodes N] [--checkpoint FILE | --best] [--json] [--video ...]

Loads a run's latest checkpoint (or --checkpoint, or --best: the best evaluation's) and plays greedy
episodes in fresh evaluation envs; prints the mean ± std return, or with --json one object
{"mean", "std", "episodes", "returns"}.
--video records --video-episodes N episodes (default 3) to RUN_DIR/videos with gymnasium's
RecordVideo: it needs an env that renders rgb_array frames, and the video extra (pygame, moviepy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlscratch.cli import Parser, run_cli
from rlscratch.errors import UserError

if TYPE_CHECKING:
    import gymnasium as gym

    from rlscratch.agent import Agent
    from rlscratch.config import RunConfig
    from rlscratch.envs.wrappers import ObservationNormalizer


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m rlscratch.evaluate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--checkpoint", help="a checkpoint file (default: the run's latest)")
    p.add_argument("--best", action="store_true",
                   help="the best evaluation's checkpoint (RUN_DIR/checkpoints/best.npz) instead of the latest")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--video", action="store_true", help="record episodes to RUN_DIR/videos (one MP4 each)")
    p.add_argument("--video-episodes", type=int, default=3, metavar="N",
                   help="how many episodes --video records (default 3)")
    return p


def open_renderer(config: RunConfig) -> gym.Env:
    """The run's env rendering rgb_array frames, tried once up front: a missing renderer (pygame) or an
    env that draws nothing is one line naming what to install, not a traceback or an empty video."""
    import gymnasium as gym

    from rlscratch.envs.factory import make_env

    # frames are drawn off-screen: no window, no sound device (SDL complains on headless machines)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        env = make_env(config.env, evaluation=True, render_mode="rgb_array")
    except UserError:
        raise UserError(f"--video: {config.env.id} cannot draw frames (it refuses render_mode='rgb_array'); "
                        "videos need an env that renders rgb_array frames") from None
    try:
        env.reset(seed=0)
        frame = env.render()
    except gym.error.DependencyNotInstalled as err:
        env.close()
        raise UserError(f"--video: {config.env.id} cannot draw frames, a package is missing "
                        f"({str(err).splitlines()[0]}); pip install -e '.[video]' installs pygame and moviepy"
                        ) from None
    except Exception as err:  # an env without an rgb_array renderer fails in its own way
        env.close()
        raise UserError(f"--video: {config.env.id} cannot draw frames ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'no message'})") from None
    if not isinstance(frame, np.ndarray):
        env.close()
        raise UserError(f"--video: {config.env.id} draws no rgb_array frames (render() gave {type(frame).__name__}); "
                        "videos need an env that supports render_mode='rgb_array'")
    return env


def check_video_writer() -> None:
    try:
        import moviepy  # noqa: F401 - RecordVideo writes with it
    except ImportError:
        raise UserError("--video needs moviepy: pip install -e '.[video]' (or pip install moviepy pygame)") from None


def record_video(env: gym.Env, folder: Path, agent: Agent, normalizer: ObservationNormalizer | None, episodes: int,
                 seed: int) -> Path:
    """Play ``episodes`` greedy episodes (seeds seed, seed+1, ...) of the rendering ``env`` into
    ``folder``, one MP4 each."""
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(env, str(folder), episode_trigger=lambda _: True, disable_logger=True)
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done:
                view = obs[None] if normalizer is None else normalizer.normalize(obs[None])
                obs, _, terminated, truncated, _ = env.step(agent.act(view, explore=False)[0])
                done = terminated or truncated
    finally:
        env.close()
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from rlscratch.trainer import Evaluator, load_trained_agent

    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
    if args.video_episodes < 1:
        raise UserError(f"--video-episodes must be at least 1, got {args.video_episodes}")
    if args.best and args.checkpoint:
        raise UserError("--best and --checkpoint both name a checkpoint; give one of them")
    run_dir = Path(args.run_dir)
    config, agent, normalizer = load_trained_agent(run_dir, Path(args.checkpoint) if args.checkpoint else None,
                                                 args.best)
    if args.video:  # refused before the evaluation, not after it
        check_video_writer()
        renderer = open_renderer(config)
    evaluator = Evaluator(config, np.random.SeedSequence(args.seed), normalizer)
    result = evaluator.run(agent, args.episodes)
    evaluator.close()
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"{run_dir}: mean return {result.mean:.2f} ± {result.std:.2f} over {args.episodes} episodes")
    if args.video:
        folder = record_video(renderer, run_dir / "videos", agent, normalizer, args.video_episodes, args.seed)
        print(f"videos written to {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
