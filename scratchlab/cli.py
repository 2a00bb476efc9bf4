"""Shared behaviour of the command-line entry points: user errors become one line and exit code 2.

``hydra_main(config_name)`` replaces ``hydra.main`` for every entry point: Hydra's own CLI (overrides,
``--multirun``, ``--help``, ``--cfg``) is kept, composition mistakes (an unknown option, key or syntax)
and invalid values (``scratchlab.config_schema``) print one ``error:`` line and exit with code 2.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import hydra
from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
)

from scratchlab.config import CONFIG_DIR
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
    if isinstance(err, InstantiationException):
        return _instantiation_message(err)
    if isinstance(err, (MissingMandatoryValue, InterpolationResolutionError)):
        return str(err).strip().splitlines()[0]
    return None


def _instantiation_message(err: InstantiationException) -> str:
    """``<key> (<target>): <cause>`` from Hydra's ``Error in call to target '...':`` + cause + full_key."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    key = next((line.removeprefix("full_key:").strip() for line in lines if line.startswith("full_key:")), "")
    head = lines[0].removeprefix("Error in call to target ").rstrip(":").strip("'")
    cause = err.__cause__
    reason = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}" if cause is not None and str(cause) \
        else " ".join(line for line in lines[1:] if not line.startswith("full_key:"))
    return f"{key or 'config'} ({head}): {reason}; fix this setting"


def composition_error(err: CompactHydraException) -> str:
    """One line for a mistake Hydra found while composing the config (before the app runs)."""
    text = str(err).split("\nConfig search path:")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("See https://")]
    if isinstance(err, MissingConfigException) and err.options is not None:
        lines = [line for line in lines if line.lstrip("\t") not in err.options]
        lines = [f"{line} {', '.join(err.options)}" if line.startswith("Available options") else line for line in lines]
    message = "; ".join(line.rstrip(".") for line in lines)
    cause = err.__cause__
    key = re.search(r"Could not override '([^']+)'", message)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:  # a key the config lacks
        given = re.search(r"use \+(\S+)", message)
        return (f"{given.group(1) if given else key.group(1)}: {key.group(1)} is not a key of this config; "
                f"check the spelling (--cfg job prints the whole config)")
    if cause is not None and str(cause).strip():
        message += f" ({str(cause).strip().splitlines()[0]})"
    if isinstance(err, OverrideParseException):
        return f"{err.override}: {message}"
    missing = getattr(err, "missing_cfg_file", None)
    if missing and "/" in missing:
        group, _, option = missing.rpartition("/")
        return f"{group}={option}: {message}"
    return message


def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[..., Any]]:
    """``hydra.main`` for ``conf/<config_name>.yaml``, with the config validated before ``task`` runs and
    every config mistake (Hydra's own included) printed as one ``error:`` line with exit code 2.
    ``HYDRA_FULL_ERROR=1`` shows Hydra's full tracebacks instead."""
    def decorate(task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def validated(cfg: DictConfig) -> Any:
            from scratchlab.config_schema import validate_config

            run_or_exit(validate_config, cfg)
            return task(cfg)

        app = hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(validated)

        @functools.wraps(task)
        def main(cfg: DictConfig | None = None) -> Any:
            if cfg is not None:
                return validated(cfg)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                return app()
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing, so mistakes are caught here
            try:
                return app()
            except CompactHydraException as err:
                if isinstance(err, InstantiationException):  # a callback of Hydra's own config: a real failure
                    raise
                print(f"error: {composition_error(err)}", file=sys.stderr)
                sys.exit(2)
            finally:
                os.environ.pop("HYDRA_FULL_ERROR", None)

        return main

    return decorate


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
    """Count the skipped unreadable inputs on stderr (each was warned about as it was met); the exit
    code of a run that skipped some (1) or none (0)."""
    if not skipped:
        return 0
    print(f"skipped {len(skipped)} unreadable file(s), each named in a warning above", file=sys.stderr)
    return 1
