"""Data-quality bits, as DRAGONS defines them (``geminidr/gemini/lookups/DQ_definitions.py``)."""

from __future__ import annotations

__all__ = [
    "GOOD",
    "BAD_PIXEL",
    "NON_LINEAR",
    "SATURATED",
    "COSMIC_RAY",
    "NO_DATA",
    "OVERLAP",
    "UNILLUMINATED",
    "FAIL",
    "NOT_SIGNAL",
]

GOOD = 0
BAD_PIXEL = 1
NON_LINEAR = 2
SATURATED = 4
COSMIC_RAY = 8
NO_DATA = 16
OVERLAP = 32
UNILLUMINATED = 64

#: Pixels that carry no usable signal at all.
FAIL = BAD_PIXEL | SATURATED | COSMIC_RAY | NO_DATA
#: Every bit except non-linear and saturated (what applyDQPlane replaces by default).
NOT_SIGNAL = 65535 ^ (NON_LINEAR | SATURATED)
