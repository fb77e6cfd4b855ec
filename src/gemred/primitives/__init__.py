"""Primitives: one processing step each, taking a :class:`~gemred.frame.Frame` and returning a new one.

``standardize`` (prepare, add_dq, add_var), ``ccd`` (overscan, trimming, bias, gain) and
``flat`` (scaling, normalising, thresholding and applying flats) follow DRAGONS' primitives of
the same names; ``shared/reference/reduction-steps.md`` describes each.
"""

from gemred.primitives.ccd import adu_to_electrons, subtract_bias, subtract_overscan, trim_overscan
from gemred.primitives.flat import flat_correct, normalize_flat_gmos, scale_flats, threshold_flat
from gemred.primitives.standardize import add_dq, add_var, prepare

__all__ = [
    "prepare",
    "add_dq",
    "add_var",
    "subtract_overscan",
    "trim_overscan",
    "subtract_bias",
    "adu_to_electrons",
    "scale_flats",
    "normalize_flat_gmos",
    "threshold_flat",
    "flat_correct",
]
