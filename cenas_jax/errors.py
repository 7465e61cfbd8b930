"""Errors shown to users as one clear line (no traceback) by the CLI."""

from __future__ import annotations

from cenas_jax.config import ConfigError


class UserError(Exception):
    """Bad input from the user (a file, a name, a checkpoint): the message says what and where."""


# A config error is a user error too.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError)
