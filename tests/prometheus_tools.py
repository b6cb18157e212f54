"""Debian's prometheus and docker-compose binaries for the tests: required in CI and as
root, skipped elsewhere."""

from __future__ import annotations

__all__ = ["require_binary"]

import os
import shutil

import pytest


def require_binary(*names: str) -> str:
    """Path of the first of ``names`` on PATH.

    Missing in CI (``CI`` set) or as root, where `make test` installs the packages,
    the test fails; elsewhere it is skipped with the install command.
    """
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") or os.geteuid() == 0:
        pytest.fail(f"{names[0]} is missing: `make test` installs Debian's prometheus, "
                    "prometheus-alertmanager and docker-compose packages when run as root")
    pytest.skip(f"{names[0]} is missing and this is not CI or root: "
                "apt-get install prometheus prometheus-alertmanager docker-compose")
