"""The errors of tracejit.onnx: what cannot be exported, named with the user's line and what to
do instead."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The function or module cannot be written as an ONNX model as it stands."""


class UnsupportedOpError(ExportError, NotImplementedError):
    """A traced op has no entry in tracejit/onnx/table.py's mapping table."""

    def __init__(self, op: str, loc: str) -> None:
        self.op = op
        super().__init__(
            f"tracejit.onnx.export: op '{op}' (at {loc or 'an unknown line'}) has no ONNX "
            f"mapping yet; compute it with ops that have one, or add an entry for '{op}' to "
            "RULES in tracejit/onnx/table.py (docs/onnx.md lists the mapped ops)"
        )
