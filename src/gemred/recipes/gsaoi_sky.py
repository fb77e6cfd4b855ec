"""GSAOI sky frames and their subtraction, the ``skyCorrect`` step of DRAGONS' GSAOI ``reduce``.

Which sky exposures serve each object frame is decided from the dataset table
(:func:`gemred.sky.separate_sky`, :func:`gemred.sky.associate_sky`); these functions read
the flat-corrected files and call the pixel primitives of :mod:`gemred.primitives.sky`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from gemred.frame import Frame
from gemred.io import GemredInputError, read_frame
from gemred.primitives.sky import SKY_DEFAULTS, make_sky, sky_object_masks, subtract_sky

__all__ = ["sky_frame", "sky_subtracted"]

PathLike = str | os.PathLike

#: ``skyCorrect`` keys that belong to the subtraction rather than to making the sky.
_SUBTRACT_KEYS = ("offset_sky",)


def _options(options: Mapping | None) -> dict:
    merged = {**SKY_DEFAULTS, **dict(options or {})}
    unknown = set(merged) - set(SKY_DEFAULTS)
    if unknown:
        msg = f"skyCorrect: unknown setting(s) {sorted(unknown)}; known: {sorted(SKY_DEFAULTS)}"
        raise GemredInputError(msg)
    return merged


def sky_frame(sky_paths: Sequence[PathLike], *, options: Mapping | None = None) -> Frame:
    """The sky of one object frame from its associated sky exposures (DRAGONS ``stackSkyFrames``).

    Parameters
    ----------
    sky_paths : sequence of path-like
        Flat-corrected sky frames, nearest in time first (:func:`gemred.sky.associate_sky`).
    options : mapping, optional
        ``skyCorrect`` settings over :data:`gemred.primitives.sky.SKY_DEFAULTS`.

    Returns
    -------
    Frame
        The sky, named after the first sky frame.

    Raises
    ------
    GemredInputError
        If no sky frame is given or a setting is unknown.
    """
    if not sky_paths:
        msg = "sky_frame: no sky frames given; check separateSky / associateSky in the config"
        raise GemredInputError(msg)
    settings = _options(options)
    make_options = {k: v for k, v in settings.items() if k not in _SUBTRACT_KEYS}
    frames = [read_frame(path) for path in sky_paths]
    masks = (
        sky_object_masks(frames, dilation=make_options["dilation"]) if make_options["mask_objects"] else None
    )
    return make_sky(frames, masks=masks, **make_options)


def sky_subtracted(frame: Frame, sky: Frame, *, options: Mapping | None = None) -> Frame:
    """``frame`` minus its sky, level-matched unless ``offset_sky`` is false (DRAGONS ``subtractSky``).

    Parameters
    ----------
    frame : Frame
        Flat-corrected object frame.
    sky : Frame
        Its sky (:func:`sky_frame`).
    options : mapping, optional
        ``skyCorrect`` settings (``offset_sky``, ``dilation`` are used).

    Returns
    -------
    Frame
    """
    settings = _options(options)
    return subtract_sky(frame, sky, offset_sky=settings["offset_sky"], dilation=settings["dilation"])
