"""User-facing errors: one clear line that says what is wrong and how to fix it."""
from __future__ import annotations


class ScratchlabError(Exception):
    """An error caused by input or configuration; printed as one line, never as a traceback."""


class DataError(ScratchlabError):
    """A data set, image or mask that cannot be used as given."""


class ConfigError(ScratchlabError):
    """A configuration value that cannot work."""
