"""Bringing frames to a common flux level (DRAGONS ``scaleCountsToReference``)."""

from __future__ import annotations

import numpy as np

from gemred.frame import Frame

__all__ = ["scale_counts_to_reference"]


def scale_counts_to_reference(frames: list[Frame]) -> list[Frame]:
    """Scale every frame's counts to the exposure time of the first.

    DRAGONS' default (``tolerance=0``): the factor is the ratio of exposure times. SCI is
    multiplied by it, VAR by its square; ``EXPTIME`` becomes the reference's and the original
    is kept as ``ORIGTEXP``.
    """
    reference = float(frames[0].phu["EXPTIME"])
    out = []
    for frame in frames:
        exptime = float(frame.phu["EXPTIME"])
        factor = reference / exptime if exptime > 0 else 1.0
        copy = frame.copy(deep=False)
        if factor != 1.0:  # new planes, so the input frame is left as it was
            for ext in copy:
                ext.sci = ext.sci * np.float32(factor)
                if ext.var is not None:
                    ext.var = ext.var * np.float32(factor * factor)
        copy.phu["ORIGTEXP"] = (exptime, "Exposure time before scaling")
        copy.phu["EXPTIME"] = (reference, "Exposure time (s), scaled to the reference")
        out.append(copy)
    return out
