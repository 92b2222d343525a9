"""Where a run's numbers go: TensorBoard event files (tensorboardX), a plain-text log, and the console
(a tqdm progress bar plus a summary line)."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlscratch.cli import interactive


class MetricAverager:
    """Accumulates scalars between writes so logging stays cheap when agents report every step."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.sums[key] += float(value)
            self.counts[key] += 1

    def pop_means(self) -> dict[str, float]:
        means = {key: self.sums[key] / self.counts[key] for key in self.sums}
        self.sums.clear()
        self.counts.clear()
        return means


class Logger:
    """Writes scalars to TensorBoard and appends human-readable lines to ``log.txt``."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, progress_total: int | None = None,
                 progress_initial: int = 0, progress: bool = True, purge_step: int | None = None) -> None:
        self.run_dir = run_dir
        self.text = open(run_dir / "log.txt", "a", buffering=1)
        self.writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step: a resumed run tells TensorBoard to drop what the interrupted one logged
            # after its last checkpoint, so the curves continue without duplicate steps.
            # The suffix numbers the sessions: a resume within the same second as the run it continues
            # would otherwise get the same file name (and truncate it).
            session = len(list(run_dir.glob("events.out.tfevents.*")))
            self.writer = SummaryWriter(str(run_dir), flush_secs=10, purge_step=purge_step,
                                        filename_suffix=f".{session:03d}")
        self.bar = None
        if progress and progress_total is not None and interactive():  # no redraws into log files
            from tqdm import tqdm

            self.bar = tqdm(total=progress_total, initial=progress_initial, unit="step", dynamic_ncols=True,
                            mininterval=0.5, smoothing=0.1)
        self._last_time = time.perf_counter()

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)

    def line(self, message: str) -> None:
        """A line for log.txt, and the console (above the progress bar)."""
        self.text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def progress(self, steps: int, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(steps - self.bar.n)
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)

    def hparams_start(self, hparams: dict, metric_names: list[str]) -> None:
        """The run's hyperparameters (a flat dict), written at its start into this run's own event
        file (tensorboardX's ``add_hparams`` would open a second run beside it). TensorBoard's HParams
        tab shows ``hparam/<name>`` for each metric name once ``hparams_end`` logs it."""
        if self.writer is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries

        flat = {k: (v if isinstance(v, (int, float, str, bool)) else "null" if v is None else str(v))
                for k, v in hparams.items()}
        experiment, start, _ = hparams_summaries(flat, {f"hparam/{k}": 0.0 for k in metric_names})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(start)

    def hparams_end(self, metrics: dict[str, float], step: int) -> None:
        """The final metrics of the run whose hyperparameters ``hparams_start`` wrote."""
        if self.writer is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries

        for key, value in metrics.items():
            self.writer.add_scalar(f"hparam/{key}", value, step)
        _, _, end = hparams_summaries({}, {})  # the session-end record (status: success)
        self.writer.file_writer.add_summary(end)

    def flush(self) -> None:
        """Push buffered events to disk (at each checkpoint: a kill then loses little)."""
        if self.writer is not None:
            self.writer.flush()
        self.text.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.text.close()


def flatten_dict(d: dict, prefix: str = "") -> dict:
    """{"agent": {"lr": 1}} -> {"agent.lr": 1}, for hyperparameter tables."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_dict(value, name + "."))
        elif isinstance(value, (list, tuple, np.ndarray)):
            out[name] = str(list(value))
        else:
            out[name] = value
    return out
