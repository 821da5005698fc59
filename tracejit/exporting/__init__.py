"""tracejit's own export format: `export(fn, *example_args)` -> Exported (call it, inspect
it, `save(path)`), and `load_exported(path)`, which runs the saved graph without the Python
that defined it. The format is in docs/export.md; the capture in tracejit/capture.py."""

from ..capture import ExportError, TensorSpec
from .fileformat import VERSION
from .program import Exported, export, load_exported

__all__ = ["Exported", "ExportError", "TensorSpec", "VERSION", "export", "load_exported"]
