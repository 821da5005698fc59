"""Shared by the examples: command-line options and a tiny progress bar on stderr (no
dependency). Not part of tracejit."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator


def parse_args(description: str, steps: int, **extra: int) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    for name, default in extra.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=default,
                       help=f"(default {default})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p.parse_args()


class progress:  # noqa: N801 - used like a function, as tqdm
    """Wrap range(n): after half a second of work, draw `[#####.....] 120/500 loss 1.23` on
    stderr, redrawn at most ten times a second, so short runs print nothing extra."""

    def __init__(self, n: int, width: int = 30) -> None:
        self.n, self.width = n, width
        self.start = self.last = time.perf_counter()
        self.note = ""
        self.drawn = False
        self._last_text = ""

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            yield i
            now = time.perf_counter()
            if now - self.start > 0.5 and (now - self.last > 0.1 or i + 1 == self.n):
                self.last = now
                self._draw(i + 1)
        if self.drawn:
            sys.stderr.write("\n")

    def set_note(self, note: str) -> None:
        self.note = note

    def write(self, line: str) -> None:
        """print(line) to stdout without tangling it with the bar on a terminal."""
        if self.drawn:
            sys.stderr.write("\r" + " " * (self.width + 40 + len(self.note)) + "\r")
            sys.stderr.flush()
        print(line, flush=True)
        if self.drawn:
            self._draw_last()

    def _draw_last(self) -> None:
        sys.stderr.write(self._last_text)
        sys.stderr.flush()

    def _draw(self, done: int) -> None:
        filled = self.width * done // max(self.n, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self._last_text = f"\r[{bar}] {done}/{self.n} {self.note}"
        sys.stderr.write(self._last_text)
        sys.stderr.flush()
        self.drawn = True


def report_every(steps: int, times: int = 10) -> int:
    return max(1, steps // times)
