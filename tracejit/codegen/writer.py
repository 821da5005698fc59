"""The only place that builds source text: indented lines, and a map from generated line to
the IR node (and user file:line) that produced it, so errors in generated code point back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.origin: dict[int, str] = {}  # 1-based line -> "%3 train.py:16"
        self._indent = 0

    def line(self, text: str = "", origin: str = "") -> None:
        for part in text.split("\n"):
            self.lines.append(("    " * self._indent + part) if part else "")
            if origin:
                self.origin[len(self.lines)] = origin

    @contextlib.contextmanager
    def indent(self) -> Iterator[None]:
        self._indent += 1
        try:
            yield
        finally:
            self._indent -= 1

    def drop(self, index: int) -> None:
        """Remove the line at 0-based `index` (the lines after it move up, with their origin)."""
        del self.lines[index]
        self.origin = {(k - 1 if k > index + 1 else k): v for k, v in self.origin.items()
                       if k != index + 1}

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
