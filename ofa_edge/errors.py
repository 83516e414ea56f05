"""The one error type users see: a clear message, never a traceback."""
from __future__ import annotations


class OfaEdgeError(Exception):
    """An error with a message meant for the user.

    The CLI prints ``str(error)`` as one line on stderr and exits with code 2.
    The message says what is wrong and, where possible, how to fix it.
    """


class SpecError(OfaEdgeError):
    """A device spec is malformed. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("; ".join(f"{source}: {p}" for p in problems))


class DataError(OfaEdgeError):
    """A dataset is missing, unreadable or malformed."""
