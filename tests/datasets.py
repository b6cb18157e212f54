"""The shared public datasets beside the project: required in CI, skipped elsewhere."""

from __future__ import annotations

__all__ = ["DATASETS", "dataset_folder", "dataset_required", "requires_dataset"]

import os
from pathlib import Path

import pytest

#: ``../shared/datasets`` from the project's root, where CI lays the shared folder.
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def dataset_required(name: str, *, ci: bool | None = None) -> str | None:
    """Why the dataset ``name`` cannot be used, or None when it is there.

    Under CI (``CI`` set) a missing folder is a failure; a user's clone without
    ``../shared`` skips the replay and names the folder.
    """
    folder = DATASETS / name
    if folder.is_dir():
        return None
    ci = bool(os.environ.get("CI")) if ci is None else ci
    reason = f"dataset folder {folder} not present"
    if ci:
        return f"CI: {reason}; CI runs every dataset replay"
    return reason


def dataset_folder(name: str) -> Path:
    """The folder of dataset ``name``: the test fails in CI and skips elsewhere when absent."""
    problem = dataset_required(name)
    if problem is not None:
        if problem.startswith("CI:"):
            pytest.fail(problem)
        pytest.skip(problem)
    return DATASETS / name


def requires_dataset(name: str) -> pytest.MarkDecorator:
    """Skip before any server starts when ``name`` is absent outside CI; under CI the
    test runs and :func:`dataset_folder` fails it."""
    problem = dataset_required(name)
    return pytest.mark.skipif(problem is not None and not problem.startswith("CI:"),
                              reason=problem or "")
