"""Shared test set-up: one compile-cache directory for the whole session (Numba compiles are
the slow part of the suite), and the `torch` marker skipped when torch is not installed."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("TRACEJIT_CACHE_DIR", os.path.join(tempfile.gettempdir(), "tracejit-tests"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="torch is not installed (pip install torch==2.13.0)")
        for item in items:
            if "torch" in item.keywords:
                item.add_marker(skip)
