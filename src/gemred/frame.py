"""The in-memory image model: a primary header and extensions holding SCI, VAR and DQ.

A raw GMOS file becomes a :class:`Frame` of 12 extensions (one per amplifier), a GSAOI file
one of 4 (one per array), a mosaic or a stack one of 1. Pixel arrays are float32 for SCI and
VAR and uint16 for DQ, as DRAGONS stores them. Primitives take frames (or their arrays) and
return new ones; only :mod:`gemred.io` touches disk.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table

__all__ = ["Extension", "Frame", "copy_header", "product_name"]


def copy_header(header: fits.Header) -> fits.Header:
    """A copy of a FITS header, card for card, without astropy's per-card checks.

    ``Header.copy`` adds the copied cards one at a time through ``Header.append`` and its
    checks: copying headers, which every step does to its frame's, took a third of the
    time to standardise a raw GMOS bias, all of it holding the GIL that the job's other
    threads wait for. Here each card is copied as ``copy.copy`` does and the copies are
    indexed as astropy indexes the cards it reads from a file (``Header._fromcards``); with
    an astropy laid out otherwise, ``Header.copy`` is used.

    Examples
    --------
    >>> original = fits.Header({"OBJECT": "M51"})
    >>> copied = copy_header(original)
    >>> copied["OBJECT"] = "M31"
    >>> original["OBJECT"], copied["OBJECT"]
    ('M51', 'M31')
    """
    try:
        cards, from_cards = header._cards, type(header)._fromcards
    except AttributeError:
        return header.copy()
    copies = []
    for card in cards:
        duplicate = object.__new__(type(card))
        duplicate.__dict__.update(card.__dict__)
        copies.append(duplicate)
    return from_cards(copies)


@dataclass
class Extension:
    """One amplifier, array or mosaic: science pixels, their variance and quality bits."""

    sci: np.ndarray
    header: fits.Header
    var: np.ndarray | None = None
    dq: np.ndarray | None = None
    objcat: Table | None = None

    def __post_init__(self) -> None:
        self.sci = np.asarray(self.sci, dtype=np.float32)
        if self.var is not None:
            self.var = np.asarray(self.var, dtype=np.float32)
        if self.dq is not None:
            self.dq = np.asarray(self.dq, dtype=np.uint16)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.sci.shape

    def copy(self) -> Extension:
        """A deep copy (arrays, header and catalogue)."""
        return copy.deepcopy(self)


@dataclass
class Frame:
    """A whole exposure or product: primary header plus extensions.

    ``root`` is the file name root of the (first) raw input, from which product names are
    made (``N20170614S0201`` gives ``N20170614S0201_image.fits``).
    """

    phu: fits.Header
    extensions: list[Extension]
    root: str
    tables: dict[str, Table] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.extensions)

    def __iter__(self):
        return iter(self.extensions)

    def __getitem__(self, index: int) -> Extension:
        return self.extensions[index]

    def copy(self, *, deep: bool = True) -> Frame:
        """A copy of the frame.

        ``deep=False`` copies the headers and tables but shares the pixel planes: for steps that
        change metadata, or that replace a plane by a new array rather than writing into it.
        """
        if deep:
            return copy.deepcopy(self)
        extensions = [
            Extension(
                e.sci, copy_header(e.header), e.var, e.dq, None if e.objcat is None else e.objcat.copy()
            )
            for e in self.extensions
        ]
        return Frame(
            copy_header(self.phu), extensions, self.root, {k: t.copy() for k, t in self.tables.items()}
        )

    @property
    def instrument(self) -> str:
        return str(self.phu.get("INSTRUME", "")).strip()

    def stamp(self, keyword: str, comment: str) -> None:
        """Record in the primary header that a processing step was applied (DRAGONS style)."""
        from datetime import datetime, timezone

        self.phu[keyword] = (datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), comment)


def product_name(root: str, suffix: str) -> str:
    """File name of a product: ``root`` of the first input plus ``suffix`` (``'_bias'``)."""
    if not suffix.startswith("_"):
        suffix = f"_{suffix}"
    return f"{root}{suffix}.fits"
