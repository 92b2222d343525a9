"""``python -m fault_gate ARGS`` is ``python -m rlscratch.train ARGS`` that parks itself at one exact
point of the run, so benchmarks/fault_injection.py can send its signal there whatever the machine's speed.

A wall-clock delay after the start line cannot pick a moment "mid-training": a fast machine finishes a
small run before the delay is up, a loaded one has not begun. So the harness names the moment in units of
the run's own progress, in ``RLSCRATCH_FAULT_GATE=MOMENT:K:FOLDER``:

    train       the K-th stop check of the training loop (between env steps / minibatches), outside evaluations
    eval        the K-th stop check inside an evaluation
    checkpoint  the K-th checkpoint write, after its temporary file is complete and before the rename

There the process touches FOLDER/parked and sleeps until FOLDER/release exists. The harness sends the
real signal meanwhile (SIGINT/SIGTERM: the run's own handler records it during the sleep; SIGKILL: the
process dies mid-write or mid-step), then releases it. Nothing else about the run changes: the code,
the config and the random numbers are the CLI's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def park(folder: Path, signalled=lambda: False) -> None:
    """Sleep until FOLDER/release exists; FOLDER/signalled appears once the run's handler has recorded
    a stop request (so the harness knows a second signal will be the second, not merged with the first)."""
    (folder / "parked").touch()
    while not (folder / "release").exists():
        if signalled() and not (folder / "signalled").exists():
            (folder / "signalled").touch()
        time.sleep(0.001)


def install(moment: str, k: int, folder: Path) -> None:
    from rlscratch import lifecycle, trainer

    counts = {"train": 0, "eval": 0, "checkpoint": 0}
    evaluating = [False]

    def count(kind: str, signalled=lambda: False) -> None:
        counts[kind] += 1
        if kind == moment and counts[kind] == k:
            park(folder, signalled)

    should_stop = lifecycle.RunSession.should_stop

    def gated_should_stop(self: lifecycle.RunSession) -> bool:
        count("eval" if evaluating[0] else "train", lambda: should_stop(self))
        return should_stop(self)

    evaluate = trainer.Evaluator.run

    def flagged_evaluate(self: trainer.Evaluator, *args, **kwargs):
        evaluating[0] = True
        try:
            return evaluate(self, *args, **kwargs)
        finally:
            evaluating[0] = False

    replace = os.replace

    def gated_replace(src, dst, *args, **kwargs) -> None:
        if str(src).endswith(".tmp") and Path(dst).parent.name == "checkpoints":
            count("checkpoint")
        replace(src, dst, *args, **kwargs)

    lifecycle.RunSession.should_stop = gated_should_stop
    trainer.Evaluator.run = flagged_evaluate
    os.replace = gated_replace


if __name__ == "__main__":
    from rlscratch.cli import run_cli
    from rlscratch.train import main

    moment, k, folder = os.environ["RLSCRATCH_FAULT_GATE"].split(":", 2)
    if moment == "double":  # two SIGINTs at a stop check of training
        moment = "train"
    install(moment, int(k), Path(folder))
    sys.exit(run_cli(main, sys.argv[1:]))
