"""Helpers shared by the tests: import them with ``from conftest import ...`` (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

GRAD_TOL = 1e-6  # relative error allowed between a hand-written backward pass and central differences (float64)


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (the default: one per core), numpy's BLAS gets one thread, as
    `python -m rlscratch.train` pins it: workers that each started a thread per core would fight over them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def assert_gradients_ok(errors: dict[str, float], tol: float = GRAD_TOL) -> None:
    """The verdict of a gradient check (nn.check_module, nn.check_gradients, ...): every relative error
    between the analytic gradient and central finite differences is at most ``tol`` (a NaN fails)."""
    assert errors, "nothing was checked"
    above = {name: error for name, error in errors.items() if not error <= tol}
    assert not above, f"relative errors above {tol:g}: {above} (all: {errors})"


def write_config(folder: Path, data: dict, name: str = "exp.yaml", **sections) -> Path:
    """Write an experiment config for a short test run into ``folder`` and return its path.

    ``data`` is the config; each keyword replaces a section, or updates it key by key if both are dicts.
    Runs log under ``folder/runs`` without a progress bar unless ``data``'s log section says otherwise.
    """
    data = {**data, "log": {"root": str(folder / "runs"), "progress": False, **data.get("log", {})}}
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def with_optim(settings: dict) -> dict:
    """Agent-config keyword arguments with lr / max_grad_norm / optimizer moved into the optim: section."""
    optim = {key: settings.pop(key) for key in ("lr", "max_grad_norm", "optimizer") if key in settings}
    if "optimizer" in optim:
        optim["name"] = optim.pop("optimizer")
    return {**settings, "optim": optim} if optim else settings
