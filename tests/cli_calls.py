"""Calling an entry point's ``main()`` in this process, as its command line would (saves a Python start)."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def call_main(module: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture) -> subprocess.CompletedProcess:
    """``python -m module args`` in-process: Hydra parses ``args``; returns the exit code and the output."""
    monkeypatch.setattr(sys, "argv", [module, *args])
    code = 0
    try:
        importlib.import_module(module).main()
    except SystemExit as exit_info:
        code = exit_info.code or 0
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([module, *args], code, out, err)
