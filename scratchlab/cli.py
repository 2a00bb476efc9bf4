"""Shared behaviour of the command-line entry points: user errors become one line and exit code 2."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import InstantiationException
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from scratchlab.errors import ScratchlabError

T = TypeVar("T")
log = logging.getLogger("scratchlab")


def user_error(err: BaseException) -> str | None:
    """The one-line message of a user error (also when Hydra's instantiate wrapped it), else None."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ScratchlabError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, (InstantiationException, MissingMandatoryValue, InterpolationResolutionError)):
        return str(err).strip().splitlines()[0]
    return None


def run_or_exit(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn``; a user error prints ``error: <message>`` to stderr and exits with code 2."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        message = user_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def exit_with(fn: Callable[..., int], *args, **kwargs) -> None:
    """``run_or_exit(fn, ...)``, then exit with its return code when that is not 0."""
    code = run_or_exit(fn, *args, **kwargs)
    if code:
        sys.exit(code)


def report_skipped(skipped: list[tuple[str, str]]) -> int:
    """List unreadable inputs on stderr; the exit code of a run that skipped some (1) or none (0)."""
    if not skipped:
        return 0
    print(f"skipped {len(skipped)} unreadable file(s):", file=sys.stderr)
    for path, _ in skipped:
        print(f"  {path}", file=sys.stderr)
    return 1
