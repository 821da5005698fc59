"""Stage 2: the typed SSA IR (graph), its printer, verifier and reference interpreter.
Imports the op registry only; never tensor, autograd or trace."""

from .graph import Const, Effect, Graph, Node, Region, Value, walk
from .interpret import interpret
from .printer import print_graph
from .verify import VerifyError, verify

__all__ = ["Const", "Effect", "Graph", "Node", "Region", "Value", "walk", "interpret",
           "print_graph", "verify", "VerifyError"]
