"""User-facing errors: one clear line, a non-zero exit, never a traceback."""
from __future__ import annotations

import difflib
import functools
import sys

#: Exit status for bad input or bad configuration.
EXIT_USAGE = 2


class UserError(Exception):
    """Bad input or configuration, reported to the user as a single line.

    The message should say what is wrong and where (file, column, row when they apply).
    """


def location(path=None, column=None, row=None) -> str:
    """Format ``file, column, row`` for an error message; omitted parts are left out."""
    parts = []
    if path is not None:
        parts.append(str(path))
    if column is not None:
        parts.append(f"column {column}")
    if row is not None:
        parts.append(f"row {row}")
    return ", ".join(parts)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, stripped; its type name when the
    message is empty (compiler and backend errors run to pages)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def did_you_mean(name, known) -> str:
    """``"; did you mean X?"`` for the known name closest to a mistyped ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def exit_on_user_error(func):
    """Decorate a ``main`` so that a :class:`UserError` prints ``error: ...`` and exits 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
