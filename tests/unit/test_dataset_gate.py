"""The dataset replays never skip silently in CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import datasets


@pytest.fixture
def empty_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(datasets, "DATASETS", tmp_path)
    return tmp_path


def test_a_missing_dataset_fails_under_ci(empty_shared: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"CI: dataset folder .*maven-crm"):
        datasets.dataset_folder("maven-crm")


def test_a_missing_dataset_skips_outside_ci_naming_the_folder(
        empty_shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    folder = re.escape(f"{empty_shared}/telco-churn not present")
    with pytest.raises(pytest.skip.Exception, match=folder):
        datasets.dataset_folder("telco-churn")
    assert datasets.requires_dataset("telco-churn").args == (True,)


def test_the_skip_marker_lets_the_test_run_and_fail_under_ci(
        empty_shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert datasets.requires_dataset("olist-funnel").args == (False,)


def test_a_present_dataset_is_used(empty_shared: Path) -> None:
    (empty_shared / "x-education-leads").mkdir()
    assert datasets.dataset_folder("x-education-leads") == empty_shared / "x-education-leads"
