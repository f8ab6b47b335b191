"""Errors that speak to the person using the plugin."""

from __future__ import annotations


class OmnisegInputError(ValueError):
    """A file or argument the plugin cannot use.

    The message is one sentence for a pathologist or researcher: what is wrong and what to do.
    """


class MissingPixelSizeError(OmnisegInputError):
    """The slide carries no pixel size and the caller gave none."""


def short_reason(e: BaseException) -> str:
    """First line of an exception's message, short enough to sit inside one sentence."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:120]
