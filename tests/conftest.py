"""Shared test set-up: one private compile-cache directory for the whole session (Numba
compiles are the slow part of the suite), and the `torch` marker skipped when torch is not
installed.

The cache directory is made with tempfile.mkdtemp (mode 0700, an unpredictable name) unless
TRACEJIT_CACHE_DIR is set (`.ci/run` sets it to a directory of the checkout): a fixed path in
the shared temporary directory could be made first by another user, and Numba's cache files
are pickles."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_OWN_CACHE = None
if not os.environ.get("TRACEJIT_CACHE_DIR"):
    _OWN_CACHE = tempfile.mkdtemp(prefix="tracejit-tests-")
    os.environ["TRACEJIT_CACHE_DIR"] = _OWN_CACHE


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="torch is not installed (pip install torch==2.13.0)")
        for item in items:
            if "torch" in item.keywords:
                item.add_marker(skip)
