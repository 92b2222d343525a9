"""python -m rlscratch.evaluate RUN_DIR [--episodes N] [--checkpoint FILE] [--json] [--video]

Loads a run's latest checkpoint (or --checkpoint) and plays greedy episodes in fresh evaluation envs;
prints the mean ± std return, or with --json one object {"mean", "std", "episodes", "returns"}.
--video records episodes to RUN_DIR/videos with gymnasium's RecordVideo (needs an env that renders
and moviepy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rlscratch.cli import Parser, run_cli
from rlscratch.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m rlscratch.evaluate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--checkpoint", help="a checkpoint file (default: the run's latest)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--video", action="store_true", help="record the episodes to RUN_DIR/videos")
    return p


def record_video(run_dir: Path, config, agent, normalizer, episodes: int, seed: int) -> Path:
    try:
        import moviepy  # noqa: F401 - RecordVideo writes with it
    except ImportError:
        raise UserError("--video needs moviepy: pip install moviepy (or pip install -e '.[video]')") from None
    from gymnasium.wrappers import RecordVideo

    from rlscratch.envs.factory import make_env

    try:
        env = make_env(config.env, evaluation=True, render_mode="rgb_array")
    except Exception as err:  # envs without an rgb_array renderer refuse the render_mode
        raise UserError(f"--video: {config.env.id} cannot render frames ({err})") from None
    import gymnasium as gym

    folder = run_dir / "videos"
    env = RecordVideo(env, str(folder), episode_trigger=lambda _: True, disable_logger=True)
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done:
                view = obs[None] if normalizer is None else normalizer.normalize(obs[None])
                obs, _, terminated, truncated, _ = env.step(agent.act(view, explore=False)[0])
                done = terminated or truncated
    except gym.error.DependencyNotInstalled as err:
        raise UserError(f"--video: rendering {config.env.id} needs {str(err).splitlines()[0]}") from None
    finally:
        env.close()
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from rlscratch.trainer import Evaluator, load_trained_agent

    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
    run_dir = Path(args.run_dir)
    config, agent, normalizer = load_trained_agent(run_dir, Path(args.checkpoint) if args.checkpoint else None)
    evaluator = Evaluator(config, np.random.SeedSequence(args.seed), normalizer)
    result = evaluator.run(agent, args.episodes)
    evaluator.close()
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"{run_dir}: mean return {result.mean:.2f} ± {result.std:.2f} over {args.episodes} episodes")
    if args.video:
        folder = record_video(run_dir, config, agent, normalizer, min(args.episodes, 3), args.seed)
        print(f"videos written to {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
