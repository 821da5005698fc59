"""Stage 1: capture. The tracer and the sources/guards of a trace."""

from .sources import Guard, Source
from .tracer import GraphBreak, Tracer, TraceResult

__all__ = ["Guard", "Source", "GraphBreak", "TraceResult", "Tracer"]
