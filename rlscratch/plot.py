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
    p.add_argument("--aggregate", choices=["iqm", "mean", "median"],
                   help="one curve per configuration (grouped by resolved config) with a 95%% bootstrap CI band; "
                        "RUN_DIR may be a sweep directory")
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
    if args.aggregate:
        return plot_aggregates([Path(d) for d in args.run_dirs], args.tag, args.aggregate, Path(args.out))
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


# -- aggregates per configuration, with confidence bands (python -m rlscratch.plot SWEEP --aggregate iqm) --
def aggregate_curves(run_dirs: list[Path], tag: str, statistic: str, reps: int = 500,
                     ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
    """{configuration: (steps, value, ci_low, ci_high, runs)}. Runs are grouped by their resolved config
    (seed and logging aside: rlscratch.sweep.group_key), never by name alone; at each step the statistic
    and its stratified-bootstrap 95% interval are taken over the runs that reached that step."""
    from rlscratch import stats
    from rlscratch.events import read_scalars
    from rlscratch.sweep import group_key

    function = {"iqm": stats.iqm, "mean": stats.mean, "median": stats.median}[statistic]
    members: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run_dir in run_dirs:
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass run or sweep directories")
        scalars = read_scalars(run_dir)
        if tag not in scalars:
            raise UserError(f"{run_dir} has no scalar '{tag}' (available: {', '.join(sorted(scalars)) or 'none'})")
        steps, values = scalars[tag]
        last = dict(zip(steps.tolist(), values.tolist()))  # a resumed run logs some steps twice: keep the later
        members[group_key(run_dir)[0]].append((np.array(sorted(last)), np.array([last[k] for k in sorted(last)])))
    result = {}
    for name, runs in members.items():
        grid = np.unique(np.concatenate([s for s, _ in runs]))
        stacked = np.array([np.where(grid <= s[-1], np.interp(grid, s, v), np.nan) for s, v in runs])
        value, low, high = (np.full(grid.size, np.nan) for _ in range(3))
        for j in range(grid.size):
            column = stacked[:, j][~np.isnan(stacked[:, j])]
            value[j] = function(column)
            low[j], high[j] = stats.stratified_bootstrap_ci(column, function, reps, np.random.default_rng(j))
        result[name] = (grid, value, low, high, len(runs))
    return result


def expand_sweeps(paths: list[Path]) -> list[Path]:
    """A sweep directory (python -m rlscratch.sweep --out DIR) stands for every run directory in DIR/runs."""
    out = []
    for path in paths:
        out.extend(sorted(p for p in (path / "runs").iterdir() if p.is_dir()) if (path / "runs").is_dir() else [path])
    return out


def plot_aggregates(paths: list[Path], tag: str, statistic: str, out: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (steps, value, low, high, runs) in aggregate_curves(expand_sweeps(paths), tag, statistic).items():
        ax.plot(steps, value, label=f"{name} ({statistic.upper() if statistic == 'iqm' else statistic}, {runs} runs)")
        ax.fill_between(steps, low, high, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"{tag} ({statistic}, 95% bootstrap CI)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
