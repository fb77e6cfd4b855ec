"""GSAOI sky frames and their subtraction, the ``skyCorrect`` step of DRAGONS' GSAOI ``reduce``.

Which sky exposures serve each object frame is decided from the dataset table
(:func:`gemred.sky.separate_sky`, :func:`gemred.sky.associate_sky`); these functions read
the flat-corrected files and call the pixel primitives of :mod:`gemred.primitives.sky`.
The source masks of a sky frame (:func:`sky_mask`) depend only on that frame and the skies
associated with it, so the workflow computes them once per sky frame, writes them
(:func:`write_sky_mask`) and every sky made from the frame reads them (:func:`sky_frame`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.io import fits

from gemred.descriptors import descriptors
from gemred.frame import Frame
from gemred.io import GemredInputError, open_fits, read_frame, write_fits_atomic
from gemred.primitives.sky import SKY_DEFAULTS, background_levels, make_sky, sky_object_mask, subtract_sky

__all__ = ["read_sky_mask", "sky_frame", "sky_mask", "sky_subtracted", "write_sky_mask"]

PathLike = str | os.PathLike

#: Memory (MB) for the row bands of a sky stack: the frames themselves are in memory too (up to
#: ~1.2 GB for seven full-size skies), so the bands are kept small to stay under 2 GB a job.
_BAND_MEMORY_MB = 192.0
#: ``skyCorrect`` keys that are not :func:`gemred.primitives.sky.make_sky` arguments.
_NOT_MAKE_KEYS = ("offset_sky", "follow_drift")


def _options(options: Mapping | None) -> dict:
    merged = {**SKY_DEFAULTS, **dict(options or {})}
    unknown = set(merged) - set(SKY_DEFAULTS)
    if unknown:
        msg = f"skyCorrect: unknown setting(s) {sorted(unknown)}; known: {sorted(SKY_DEFAULTS)}"
        raise GemredInputError(msg)
    return merged


def sky_mask(
    frame_path: PathLike, other_paths: Sequence[PathLike], *, options: Mapping | None = None
) -> list:
    """Source masks of one sky frame, found against the median of its own associated skies.

    Parameters
    ----------
    frame_path : path-like
        Flat-corrected sky frame.
    other_paths : sequence of path-like
        Other flat-corrected sky frames (the skies :func:`gemred.sky.associate_sky` gives this
        frame): their median is the first-pass sky.
    options : mapping, optional
        ``skyCorrect`` settings over :data:`gemred.primitives.sky.SKY_DEFAULTS` (``dilation``).

    Returns
    -------
    list of numpy.ndarray
        Per extension, ``True`` on source pixels.

    Raises
    ------
    GemredInputError
        If no other frame is given, the shapes differ or a setting is unknown.
    """
    settings = _options(options)
    frame = read_frame(frame_path, memmap=True, tables=False)
    others = [read_frame(path, memmap=True, tables=False) for path in other_paths]
    return sky_object_mask(frame, others, dilation=settings["dilation"], memory_mb=_BAND_MEMORY_MB)


def write_sky_mask(masks: Sequence[np.ndarray], path: PathLike, *, frame: PathLike) -> None:
    """Write a sky frame's source masks: one ``OBJMASK`` image (uint8, 1 on sources) per extension.

    Parameters
    ----------
    masks : sequence of numpy.ndarray
        Per extension, ``True`` on source pixels (:func:`sky_mask`).
    path : path-like
        Output FITS file, written whole or not at all.
    frame : path-like
        The sky frame the masks belong to (recorded as ``SKYFRAME``).
    """
    phu = fits.PrimaryHDU()
    phu.header["SKYFRAME"] = (os.path.basename(os.fspath(frame)), "Sky frame of these masks")
    hdus = [phu]
    for ver, mask in enumerate(masks, start=1):
        hdu = fits.ImageHDU(np.asarray(mask, dtype=np.uint8), name="OBJMASK")
        hdu.ver = ver
        hdus.append(hdu)
    write_fits_atomic(hdus, path)


def read_sky_mask(path: PathLike) -> list[np.ndarray]:
    """Source masks written by :func:`write_sky_mask`, per extension, ``True`` on sources.

    Raises
    ------
    GemredInputError
        If the file is missing, truncated or corrupt, or holds no ``OBJMASK`` image.
    """
    remedy = "remake it with the gsaoi_sky_mask rule"
    # Memory-mapped: the masks go straight to booleans, with no read buffer.
    with open_fits(path, memmap=True, what="the sky mask", remedy=remedy) as hdul:
        masks = [hdu.data.astype(bool) for hdu in hdul[1:] if hdu.name == "OBJMASK"]
    if not masks:
        msg = f"{path}: no OBJMASK extension; {remedy}"
        raise GemredInputError(msg)
    return masks


def _mid_exposure(path: PathLike) -> dt.datetime:
    """Middle of a frame's exposure, from its header (``ut_datetime`` + half the exposure time)."""
    values = descriptors(path)
    if values["ut_datetime"] is None or values["exposure_time"] is None:
        msg = (
            f"{path}: no UT start or exposure time in the header, needed to follow the sky's drift; "
            "fix the header or set skyCorrect: follow_drift: false"
        )
        raise GemredInputError(msg)
    start = dt.datetime.fromisoformat(values["ut_datetime"])
    return start + dt.timedelta(seconds=float(values["exposure_time"]) / 2)


def sky_frame(
    sky_paths: Sequence[PathLike],
    *,
    mask_paths: Sequence[PathLike] | None = None,
    options: Mapping | None = None,
    object_path: PathLike | None = None,
    tracer_paths: Sequence[PathLike] = (),
) -> Frame:
    """The sky of one object frame from its associated sky exposures (DRAGONS ``stackSkyFrames``).

    Parameters
    ----------
    sky_paths : sequence of path-like
        Flat-corrected sky frames, nearest in time first (:func:`gemred.sky.associate_sky`).
    mask_paths : sequence of path-like, optional
        Their source masks (:func:`write_sky_mask`), in the same order; if None and
        ``mask_objects``, the masks are found here, each frame against the others given.
    options : mapping, optional
        ``skyCorrect`` settings over :data:`gemred.primitives.sky.SKY_DEFAULTS`.
    object_path : path-like, optional
        The object frame this sky is for: with ``follow_drift``, the sky is brought to the level
        its frames' levels reach at the middle of this frame's exposure (interpolated through
        the skies nearest in time). None: the first sky frame's level.
    tracer_paths : sequence of path-like
        Other flat-corrected object frames of the sequence (:func:`gemred.sky.drift_tracers`):
        with ``follow_drift``, when the object frame was taken before the first or after the
        last of its skies, their background levels against the object frame's carry the drift
        there instead of an extrapolation.

    Returns
    -------
    Frame
        The sky, named after the first sky frame.

    Raises
    ------
    GemredInputError
        If no sky frame is given, the masks do not match them, a setting is unknown, or a
        time needed for ``follow_drift`` is missing from a header.
    """
    if not sky_paths:
        msg = "sky_frame: no sky frames given; check separateSky / associateSky in the config"
        raise GemredInputError(msg)
    settings = _options(options)
    make_options = {k: v for k, v in settings.items() if k not in _NOT_MAKE_KEYS}
    masks = None
    if mask_paths is not None and make_options["mask_objects"]:
        if len(mask_paths) != len(sky_paths):
            msg = f"{sky_paths[0]}: {len(mask_paths)} mask files given for {len(sky_paths)} sky frames"
            raise GemredInputError(msg)
        masks = [read_sky_mask(path) for path in mask_paths]
    times, tracers = None, []
    if object_path is not None and settings["follow_drift"]:
        when = _mid_exposure(object_path)
        times = [(_mid_exposure(path) - when).total_seconds() for path in sky_paths]
        if tracer_paths:
            own = background_levels(read_frame(object_path, memmap=True, tables=False))
            for path in tracer_paths:
                levels = background_levels(read_frame(path, memmap=True, tables=False))
                if levels.shape != own.shape:
                    msg = (
                        f"{path}: {levels.size} extensions where the object frame {object_path} has "
                        f"{own.size}; drift tracers must be frames of the same configuration"
                    )
                    raise GemredInputError(msg)
                above = levels - own
                tracers.append(((_mid_exposure(path) - when).total_seconds(), above))
    frames = [read_frame(path, memmap=True, tables=False) for path in sky_paths]
    return make_sky(
        frames, masks=masks, times=times, tracers=tracers, memory_mb=_BAND_MEMORY_MB, **make_options
    )


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
