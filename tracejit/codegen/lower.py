"""Shared by the code generators: what cannot be compiled."""

from __future__ import annotations


class UnsupportedError(Exception):
    """A node with no compiled form on this device: the entry runs eagerly (a graph break)."""
