"""Errors that speak to the person using the plugin."""

from __future__ import annotations


class OmnisegInputError(ValueError):
    """A file or argument the plugin cannot use.

    The message is one sentence for a pathologist or researcher: what is wrong and what to do.
    """


class MissingPixelSizeError(OmnisegInputError):
    """The slide carries no pixel size and the caller gave none."""


def failure_sentence(name: str, e: BaseException) -> str:
    """What the user reads when one file of a batch fails: the plugin's own sentence as it is,
    anything unexpected (a full disk, a corrupt tile) as the file's name and the error's first
    line."""
    return str(e) if isinstance(e, OmnisegInputError) else f"{name} failed: {short_reason(e)}"


def short_reason(e: BaseException) -> str:
    """First line of an exception's message, short enough to sit inside one sentence."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:120]
