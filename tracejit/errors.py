"""Where an error points: the user's file:line, found by walking out of the tracejit package.
Imports nothing from tracejit, so every module (dtypes, the registry) may use it."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


# the standard library's wrappers (contextlib's ContextDecorator around no_grad, functools) are
# never the user's line either
_SKIP = (_PKG_DIR, os.path.dirname(os.path.abspath(contextlib.__file__)) + os.sep + "contextlib",
         os.path.dirname(os.path.abspath(functools.__file__)) + os.sep + "functools")


def user_frame(also: Callable[[str], bool] | None = None) -> Any:
    """The innermost caller's frame outside tracejit (and outside the files `also` says are
    not the user's either), or None."""
    f: Any = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if not ("<frozen" in fn or os.path.abspath(fn).startswith(_SKIP)
                or (also is not None and also(fn))):
            return f
        f = f.f_back
    return None


def user_location() -> str:
    """file:line of the innermost caller outside tracejit (for messages)."""
    f = user_frame()
    return "<unknown>" if f is None else f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


def warn_at_user(msg: str, category: type[Warning],
                 also: Callable[[str], bool] | None = None) -> None:
    """Warn pointing at the user's line (a fixed stacklevel points elsewhere, or at sys:1,
    when the call comes through a method, a module or another path)."""
    f = user_frame(also)
    if f is None:
        warnings.warn(msg, category, stacklevel=2)
        return
    g = f.f_globals
    registry = g.setdefault("__warningregistry__", {})
    # (no module_globals: with them, the warning machinery asks the module's __loader__ for
    # the source line, which fails for code run by `python -c`)
    warnings.warn_explicit(msg, category, f.f_code.co_filename, f.f_lineno,
                           module=g.get("__name__"), registry=registry)


class PathNotTakenError(Exception):
    """Raised by a compiled program whose branch predicate came out otherwise than in its
    trace (its argument: which of the graph's checks), before it committed any effect. The
    runtime catches it and tries another entry or traces the new path; users never see it."""


def located(msg: str) -> str:
    """`msg` with " (at file:line)" appended, once."""
    return msg if " (at " in msg else f"{msg} (at {user_location()})"
