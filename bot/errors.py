"""Errors the person running opsbot can fix: what is wrong, and what to do about it.

Raised where the problem is understood (a setting that does not parse, a database that
cannot be opened, a policy file with mistakes) and turned into one or two lines, without a
traceback, by the command line's one error-handling layer (:mod:`opsbot.cli`).
"""

from __future__ import annotations


class OpsbotError(Exception):
    """A problem with how opsbot is set up or called. ``str()`` names the problem (one line,
    or one line per problem); ``hint`` says how to fix it; ``label`` prefixes each line."""

    label = "error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(OpsbotError):
    """A setting (environment, ``opsbot.yaml``, a backend's settings) that cannot be used."""


class DatabaseError(OpsbotError):
    """The database ``OPSBOT_DATABASE_URL`` names cannot be opened."""
