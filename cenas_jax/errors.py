"""Errors shown to users as one clear line (no traceback) by the CLI.

The bottom layer of the package: this module imports nothing of ``cenas_jax``, so any module can
raise these (``tests/test_layering.py`` checks it).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a name, a checkpoint): the message says what and where."""


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key (``config`` raises it)."""


# A config error is a user error too.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError)
