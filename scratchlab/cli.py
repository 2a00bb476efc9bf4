"""Shared behaviour of the command-line entry points: user errors become one line and exit code 2."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from scratchlab.errors import ScratchlabError

T = TypeVar("T")
log = logging.getLogger("scratchlab")


def run_or_exit(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn``; a ``ScratchlabError`` prints ``error: <message>`` to stderr and exits with code 2."""
    try:
        return fn(*args, **kwargs)
    except ScratchlabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
