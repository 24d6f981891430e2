"""Errors a person can read: a stage (or `alia`) stopped by a known failure prints one line naming the
file, row, column or setting and what was expected, and exits with status 1; no traceback unless
ALIA_DEBUG=1 asks for one.

Known failures are bad or missing input and unreachable services: ValueError (alia's TableError, a
bad params value, pandas' and pyarrow's parse errors), OSError (missing files and models, refused
connections), a YAML error and the teacher's LLMError. Anything else is a bug and keeps its
full traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import TracebackType

import yaml

DEBUG_VARIABLE = "ALIA_DEBUG"
KNOWN: tuple[type[BaseException], ...] = (ValueError, OSError, yaml.YAMLError)


def is_known(error: BaseException) -> bool:
    # LLMError is a RuntimeError, Killed alia.core.tracking's SIGTERM: known by name, so that this
    # module needs no openai import
    return isinstance(error, KNOWN) or type(error).__name__ in ("LLMError", "Killed")


def one_line(error: BaseException) -> str:
    """What went wrong, on one line: the message itself, with the file a bare OSError names."""
    if isinstance(error, FileNotFoundError) and error.filename and error.strerror:
        message = f"{error.filename}: no such file or directory"
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())


def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if os.environ.get(DEBUG_VARIABLE) or not is_known(error):
        traceback.print_exception(kind, error, tb)
        return
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "alia"
    print(f"error: {script}: {one_line(error)} (set {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)


def install() -> None:
    """Print known errors as one line from now on: every stage calls this through alia.core.tracking."""
    sys.excepthook = excepthook
