"""Errors as the service's log lines and answers show them."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type when it has none), at most 300 characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
