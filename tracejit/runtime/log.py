"""TRACEJIT_LOG: one `logging` line per event (recompiles, graph_breaks, ir, code, cache)."""

from __future__ import annotations

import logging

from ..flags import get as get_flag

logger = logging.getLogger("tracejit")
EVENTS = ("recompiles", "graph_breaks", "ir", "code", "cache")


def enabled(event: str) -> bool:
    raw = get_flag("log")
    if not raw:
        return False
    kinds = {k.strip() for k in raw.split(",")}
    return "all" in kinds or event in kinds


def log(event: str, msg: str) -> None:
    if enabled(event):
        if not logger.handlers and not logging.getLogger().handlers:
            h = logging.StreamHandler()
            h.setFormatter(logging.Formatter("[tracejit %(message)s"))
            logger.addHandler(h)
            logger.setLevel(logging.INFO)
        logger.info(f"{event}] {msg}")
