"""FITS section strings (``[x1:x2,y1:y2]``, 1-based, inclusive) and numpy slices.

Gemini headers give every section x first, 1-based and with both ends included.
Internally we use :class:`Section`, 0-based and half-open, so that the pixels
of a section are ``data[sec.y1:sec.y2, sec.x1:sec.x2]``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Section", "parse_section", "format_section"]

_SECTION_RE = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


class Section(NamedTuple):
    """A 0-based, half-open rectangle: columns ``x1:x2``, rows ``y1:y2``."""

    x1: int
    x2: int
    y1: int
    y2: int

    @property
    def shape(self) -> tuple[int, int]:
        """Numpy shape ``(ny, nx)`` of the section."""
        return (self.y2 - self.y1, self.x2 - self.x1)

    def slices(self) -> tuple[slice, slice]:
        """Numpy index ``(rows, columns)`` selecting the section."""
        return (slice(self.y1, self.y2), slice(self.x1, self.x2))

    def to_fits(self) -> str:
        """The section as a FITS string, 1-based inclusive."""
        return format_section(self)


def parse_section(text: str) -> Section:
    """Parse a FITS section string such as ``'[33:288,1:2112]'``.

    Parameters
    ----------
    text : str
        Section keyword value, 1-based and inclusive, x first.

    Returns
    -------
    Section
        The same rectangle, 0-based and half-open: ``[33:288,1:2112]`` gives
        ``Section(32, 288, 0, 2112)``.

    Raises
    ------
    ValueError
        If the text is not a well-formed section with ``x1 <= x2`` and ``y1 <= y2``.
    """
    match = _SECTION_RE.match(str(text).strip())
    if match is None:
        msg = f"not a FITS section: {text!r} (expected '[x1:x2,y1:y2]')"
        raise ValueError(msg)
    x1, x2, y1, y2 = (int(v) for v in match.groups())
    if x1 < 1 or y1 < 1 or x2 < x1 or y2 < y1:
        msg = f"FITS section {text!r} is empty or not 1-based"
        raise ValueError(msg)
    return Section(x1 - 1, x2, y1 - 1, y2)


def format_section(section: Section | tuple[int, int, int, int]) -> str:
    """Format a 0-based half-open ``(x1, x2, y1, y2)`` as a FITS section string."""
    x1, x2, y1, y2 = section
    return f"[{x1 + 1}:{x2},{y1 + 1}:{y2}]"
