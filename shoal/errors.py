"""One error hierarchy for all of shoal.

Every error a user can see is a ShoalError whose message says what is wrong and what to do;
the edges (CLI, Docker API, Consul API, volume plugin) render it in their own reply form.
"""

from __future__ import annotations


class ShoalError(Exception):
    """A failure the user can act on; `str(err)` is the one line they see."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ShoalError):
    """The request itself is wrong (bad flag, bad expression, out-of-range value)."""

    exit_code = 2


class NotFound(ShoalError):
    """The named object does not exist."""


class Conflict(ShoalError):
    """The request clashes with something that already exists."""


class HostNotReady(ShoalError):
    """The host lacks something shoal needs (root, Linux, a program, memory)."""
