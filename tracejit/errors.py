"""Where an error points: the user's file:line, found by walking out of the tracejit package.
Imports nothing from tracejit, so every module (dtypes, the registry) may use it."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


# the standard library's wrappers (contextlib's ContextDecorator around no_grad, functools) are
# never the user's line either
_SKIP = (_PKG_DIR, os.path.dirname(os.path.abspath(contextlib.__file__)) + os.sep + "contextlib",
         os.path.dirname(os.path.abspath(functools.__file__)) + os.sep + "functools")


def user_location() -> str:
    """file:line of the innermost caller outside tracejit (for messages)."""
    f: Any = sys._getframe(1)
    while f is not None:
        fn = os.path.abspath(f.f_code.co_filename)
        if not fn.startswith(_SKIP) and "<frozen" not in fn:
            return f"{os.path.basename(fn)}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>"


def located(msg: str) -> str:
    """`msg` with " (at file:line)" appended, once."""
    return msg if " (at " in msg else f"{msg} (at {user_location()})"
