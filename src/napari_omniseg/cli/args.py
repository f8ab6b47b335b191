"""The argument types every ``omniseg`` command shares: each value is checked where it is
parsed, so a bad one is told in one line (argparse's usage error, exit 2) before any work
starts, and never surfaces later as a library's message."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

#: The largest seed numpy's generators take.
MAX_SEED = 2**32 - 1


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer type within ``[low, high]`` (either bound may be open)."""
    def parse(text: str) -> int:
        v = int(_number(text, int))
        if (low is not None and v < low) or (high is not None and v > high):
            raise argparse.ArgumentTypeError(_range_sentence(text, low, high, "an integer"))
        return v

    return parse


def real(low: float | None = None, high: float | None = None, *, above: bool = False
         ) -> Callable[[str], float]:
    """A finite number within ``[low, high]`` (``above``: strictly above ``low``); NaN and
    infinity are refused (``--minutes inf`` would never end, ``--min-area nan`` drops every
    object)."""
    def parse(text: str) -> float:
        v = float(_number(text, float))
        ok = math.isfinite(v) and (low is None or (v > low if above else v >= low)) and (
            high is None or v <= high)
        if not ok:
            what = "a finite number" + (" above" if above and low is not None else "")
            raise argparse.ArgumentTypeError(_range_sentence(text, low, high, what, above))
        return v

    return parse


def _range_sentence(text: str, low, high, what: str, above: bool = False) -> str:
    lo, hi = _shown(low), _shown(high)
    if low is not None and high is not None:
        return f"must be {what} {'above ' if above else 'from '}{lo} to {hi}, got {text}"
    if low is not None:
        return (f"must be {what} {lo}, got {text}" if above
                else f"must be {what} of {lo} or more, got {text}")
    return f"must be {what} of at most {hi}, got {text}"


def _shown(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


#: Types of the values many commands take.
positive_int = integer(1)
non_negative_int = integer(0)
positive_float = real(0, above=True)
non_negative_float = real(0)
seed = integer(0, MAX_SEED)
#: A pixel size: from 1 nm to 1 mm per pixel (a slide scanner gives 0.1-10 µm).
mpp = real(1e-3, 1e3)
