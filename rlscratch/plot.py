"""python -m rlscratch.plot RUN_DIR... [--tag TAG] [--out FILE.png]

Learning curves read back from TensorBoard event files: return against environment steps, the mean
over the given runs (e.g. several seeds) with a band from the lowest to the highest. Runs whose
config names differ are drawn as separate curves.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlscratch.cli import Parser, run_cli
from rlscratch.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m rlscratch.plot", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--tag", default="eval/mean_return",
                   help="scalar to plot (default eval/mean_return; e.g. charts/episodic_return)")
    p.add_argument("--out", default="learning_curves.png", help="output image (default learning_curves.png)")
    p.add_argument("--smooth", type=int, default=1, help="moving-average window over points (default 1: none)")
    return p


def group_name(run_dir: Path) -> str:
    """Runs of one config share a curve: the run directory's name less its timestamp suffix."""
    config = run_dir / "config.yaml"
    if config.is_file():
        from rlscratch.config import read_yaml

        name = read_yaml(config).get("name")
        if name:
            return str(name)
    return run_dir.name


Curve = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def curves(run_dirs: list[Path], tag: str, smooth: int) -> dict[str, Curve]:
    """{group: (steps, mean, low, high)}; each run interpolated onto the union of its group's steps."""
    from rlscratch.events import read_scalars

    runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such run directory")
        scalars = read_scalars(run_dir)
        if tag not in scalars:
            available = ", ".join(sorted(scalars)) or "none (no event files?)"
            raise UserError(f"{run_dir} has no scalar '{tag}' (available: {available})")
        steps, values = scalars[tag]
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
            steps = steps[smooth - 1:]
        runs[group_name(run_dir)].append((steps, values))
    result = {}
    for name, members in runs.items():
        grid = np.unique(np.concatenate([s for s, _ in members]))
        # each run is only drawn over the steps it reached
        stacked = np.array([np.where(grid <= s[-1], np.interp(grid, s, v), np.nan) for s, v in members])
        result[name] = (grid, np.nanmean(stacked, axis=0), np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if out.suffix and out.suffix.lower().lstrip(".") not in formats:  # checked before any work, not after
        raise UserError(f"--out {out}: matplotlib cannot write '{out.suffix}' files; "
                        f"end the name in one of {', '.join('.' + f for f in sorted(formats))}")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'curves.png'}")
    data = curves([Path(d) for d in args.run_dirs], args.tag, args.smooth)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (steps, mean, low, high) in data.items():
        count = sum(1 for d in args.run_dirs if group_name(Path(d)) == name)
        ax.plot(steps, mean, label=f"{name} ({count} run{'s' if count > 1 else ''})")
        if count > 1:
            ax.fill_between(steps, low, high, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(args.tag)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write it ({err.strerror}); choose another path") from None
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
