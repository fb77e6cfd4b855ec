"""Flat-field primitives for GMOS imaging: scaling, normalising, thresholding and applying flats.

DRAGONS' ``scaleFlats`` and ``normalizeFlat`` (GMOS overrides, ``geminidr/gmos/primitives_gmos_image.py``),
``thresholdFlatfield`` and ``flatCorrect`` (``geminidr/core/primitives_preprocess.py``); see
``shared/reference/reduction-steps.md`` sections 3.2 and 3.3. Statistics come from CCD2 only
(the middle chip, its amplifiers tiled side by side), less a border of 5 % of each side (at
least 20 pixels), using DQ-good pixels.
"""

from __future__ import annotations

import numpy as np

from gemred import dq
from gemred.frame import Frame
from gemred.io import GemredInputError
from gemred.primitives.standardize import _binning, frame_label
from gemred.sections import parse_section

__all__ = [
    "ccd2_pixels",
    "ccd2_mean",
    "flat_level",
    "scale_flats",
    "normalize_flat_gmos",
    "threshold_flat",
    "flat_correct",
    "normalize_flat",
    "threshold_flatfield",
]

#: Fraction of each side of CCD2 left out of statistics, and its minimum in pixels.
BORDER_FRACTION = 0.05
MIN_BORDER = 20
#: Border used when the minimum one would leave nothing (small read-out areas).
SMALL_BORDER = 2
#: Histogram bin width, in units of the robust standard deviation, for the mode.
_MODE_BIN = 0.1


def _ccd2_indices(frame: Frame) -> list[int]:
    """Indices of the extensions on the middle CCD, ordered left to right on the detector."""
    names = list(dict.fromkeys(str(ext.header.get("CCDNAME", "")).strip() for ext in frame))
    middle = names[len(names) // 2]
    indices = [i for i, ext in enumerate(frame) if str(ext.header.get("CCDNAME", "")).strip() == middle]

    def left_edge(i: int) -> int:
        detsec = frame[i].header.get("DETSEC")
        return parse_section(detsec).x1 if detsec else i

    return sorted(indices, key=left_edge)


def _border(n: int) -> int:
    border = max(MIN_BORDER, int(BORDER_FRACTION * n))
    return border if 2 * border < n else SMALL_BORDER


def ccd2_pixels(frame: Frame, *, positive: bool = False) -> np.ndarray:
    """DQ-good SCI pixels of CCD2, tiled, less the statistics border.

    Parameters
    ----------
    frame : Frame
        A trimmed GMOS frame (every extension with ``CCDNAME``; DQ optional).
    positive : bool
        Keep only pixels > 0.

    Returns
    -------
    numpy.ndarray
        1-D float32 array of the pixels.

    Raises
    ------
    GemredInputError
        If no good pixel is left.
    """
    indices = _ccd2_indices(frame)
    sci = np.concatenate([frame[i].sci for i in indices], axis=1)
    good = np.ones(sci.shape, dtype=bool)
    if all(frame[i].dq is not None for i in indices):
        good = np.concatenate([frame[i].dq == 0 for i in indices], axis=1)
    by, bx = _border(sci.shape[0]), _border(sci.shape[1])
    inner = (slice(by, sci.shape[0] - by), slice(bx, sci.shape[1] - bx))
    sci, good = sci[inner], good[inner]
    if positive:
        good &= sci > 0
    pixels = sci[good]
    if pixels.size == 0:
        msg = f"{frame_label(frame)}: no good pixels on CCD2 to measure the flat level"
        raise GemredInputError(msg)
    return pixels


def flat_level(pixels: np.ndarray) -> float:
    """Normalisation of a GMOS flat: median of the pixels within mode +/- 3 std.

    The mode is the peak of a histogram with bins 0.1 robust standard deviations wide.

    Parameters
    ----------
    pixels : numpy.ndarray
        Good CCD2 pixels (see :func:`ccd2_pixels`).

    Returns
    -------
    float
        The level by which the flat is divided.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(flat_level(rng.normal(1000.0, 10.0, 100_000).astype(np.float32)))
    1000
    """
    median = float(np.median(pixels))
    mad_std = 1.4826 * float(np.median(np.abs(pixels - np.float32(median))))
    if mad_std == 0:
        return median
    edges = median + mad_std * np.arange(-5.0, 5.0 + _MODE_BIN / 2, _MODE_BIN)
    counts, edges = np.histogram(pixels, bins=edges)
    peak = int(np.argmax(counts))
    mode = 0.5 * (edges[peak] + edges[peak + 1])
    std = float(np.std(pixels, dtype=np.float64))
    near = pixels[np.abs(pixels - np.float32(mode)) <= 3.0 * std]
    return float(np.median(near))


def ccd2_mean(frame: Frame) -> float:
    """Mean of the good CCD2 pixels of a flat (see :func:`ccd2_pixels`), the level ``scale_flats`` matches.

    Raises
    ------
    GemredInputError
        If there are no good CCD2 pixels or their mean is not positive.
    """
    mean = float(np.mean(ccd2_pixels(frame), dtype=np.float64))
    if not mean > 0:
        msg = f"{frame_label(frame)}: flat level {mean} on CCD2 is not positive; not a flat"
        raise GemredInputError(msg)
    return mean


def scale_flats(frames: list[Frame], *, reference: float | None = None) -> list[Frame]:
    """Scale each flat so the mean of its good CCD2 pixels equals that of the first flat.

    Parameters
    ----------
    frames : list of Frame
        Trimmed, bias-subtracted flats (in electrons), with DQ.
    reference : float, optional
        Level to scale to instead of the first flat's :func:`ccd2_mean` (so that flats can be
        scaled one at a time as they are reduced).

    Returns
    -------
    list of Frame
        Scaled copies; SCI is multiplied by the factor, VAR by its square. The primary header
        keyword ``RELINT`` records the factor applied.

    Raises
    ------
    GemredInputError
        If a flat has no good CCD2 pixels or a non-positive level.
    """
    means = [ccd2_mean(frame) for frame in frames]
    target = means[0] if reference is None else reference
    out = []
    for frame, mean in zip(frames, means, strict=True):
        factor = target / mean
        scaled = frame.copy(deep=False)  # SCI and VAR are replaced by new arrays below
        for ext in scaled:
            ext.sci = ext.sci * np.float32(factor)
            if ext.var is not None:
                ext.var = ext.var * np.float32(factor * factor)
        scaled.phu["RELINT"] = (factor, "Factor scaling this flat to the first")
        scaled.stamp("SCALEFLT", "UT time stamp for scale_flats")
        out.append(scaled)
    return out


def normalize_flat_gmos(frame: Frame) -> Frame:
    """Divide a stacked GMOS flat by its CCD2 level (see :func:`flat_level`).

    All extensions are divided by the same number, so CCD1 and CCD3 keep their response
    relative to CCD2. DQ-flagged pixels are then set to 1.0 with zero variance.

    Parameters
    ----------
    frame : Frame
        A stacked flat with DQ.

    Returns
    -------
    Frame
        The normalised copy; ``FLATNORM`` in the primary header gives the level divided by.
    """
    level = flat_level(ccd2_pixels(frame, positive=True))
    out = frame.copy(deep=False)  # SCI and VAR are replaced by new arrays below; DQ is read only
    for ext in out:
        ext.sci = ext.sci / np.float32(level)
        if ext.var is not None:
            ext.var = ext.var / np.float32(level * level)
        if ext.dq is not None:
            _set_to_one(ext, ext.dq != 0)
    out.phu["FLATNORM"] = (level, "CCD2 level the flat was divided by")
    out.stamp("NORMFLAT", "UT time stamp for normalize_flat_gmos")
    return out


def _set_to_one(ext, where: np.ndarray) -> None:
    """Make pixels neutral in a flat: SCI 1, VAR 0."""
    ext.sci[where] = 1.0
    if ext.var is not None:
        ext.var[where] = 0.0


def threshold_flat(frame: Frame, *, low: float = 0.5, high: float = 2.0) -> Frame:
    """Flag pixels of a normalised flat whose response is below ``low`` or above ``high``.

    Such pixels (dead or weak columns, dust, hot pixels) cannot be flat-fielded: they get the
    ``BAD_PIXEL`` DQ bit, SCI 1.0 and VAR 0, so dividing by the flat leaves them unchanged and
    flagged. (DRAGONS' ``thresholdFlatfield`` uses the unilluminated bit for GSAOI; for GMOS
    a low response means a bad pixel, not a vignetted one.)

    Parameters
    ----------
    frame : Frame
        A normalised flat.
    low, high : float
        Acceptable response range.

    Returns
    -------
    Frame
        A copy with DQ planes; ``FLATLOW``/``FLATHIGH`` record the thresholds.

    Raises
    ------
    ValueError
        If ``low >= high``.
    """
    if not low < high:
        msg = f"threshold_flat: low ({low}) must be below high ({high})"
        raise ValueError(msg)
    out = frame.copy()
    for ext in out:
        bad = (ext.sci < low) | (ext.sci > high) | ~np.isfinite(ext.sci)
        if ext.dq is None:
            ext.dq = np.zeros(ext.shape, dtype=np.uint16)
        ext.dq[bad] |= dq.BAD_PIXEL
        _set_to_one(ext, bad)
    out.phu["FLATLOW"] = (low, "Flat response below this flagged bad")
    out.phu["FLATHIGH"] = (high, "Flat response above this flagged bad")
    out.stamp("THRESFLT", "UT time stamp for threshold_flat")
    return out


def _filter(frame: Frame) -> str:
    return "&".join(str(frame.phu.get(key, "")).strip() for key in ("FILTER1", "FILTER2"))


def flat_correct(frame: Frame, flat: Frame) -> Frame:
    """Divide by a processed flat, propagating variance and OR-ing DQ (DRAGONS ``flatCorrect``).

    ``VAR = var / f**2 + sci**2 * var_f / f**4``. Flat pixels that are not positive leave
    the data unchanged and set ``BAD_PIXEL``.

    Parameters
    ----------
    frame : Frame
        Bias-subtracted, trimmed frame.
    flat : Frame
        Normalised flat with the same extensions, shapes, binning and filter.

    Returns
    -------
    Frame
        The flat-fielded copy; ``FLATIM`` names the flat.

    Raises
    ------
    GemredInputError
        If extension count, shape, binning or filter differ (both files are named).
    """
    name, flat_name = frame_label(frame), frame_label(flat)
    if len(flat) != len(frame):
        msg = f"{name} has {len(frame)} extensions but the flat {flat_name} has {len(flat)}"
        raise GemredInputError(msg)
    if "FILTER2" in flat.phu and "FILTER2" in frame.phu and _filter(flat) != _filter(frame):
        msg = f"{name} has filter {_filter(frame)!r} but the flat {flat_name} has {_filter(flat)!r}"
        raise GemredInputError(msg)
    out = frame.copy(deep=False)  # SCI, VAR and DQ are replaced by new arrays below
    for i, (ext, fext) in enumerate(zip(out, flat, strict=True)):
        if ext.shape != fext.shape or _binning(ext.header) != _binning(fext.header):
            msg = (
                f"{name} and flat {flat_name} do not match in extension {i + 1}: shape {ext.shape} vs "
                f"{fext.shape}, binning {_binning(ext.header)} vs {_binning(fext.header)}"
            )
            raise GemredInputError(msg)
        response = fext.sci
        unusable = ~(response > 0)
        if unusable.any():
            response = np.where(unusable, np.float32(1), response)
        ext.sci = ext.sci / response
        if ext.var is not None:
            var = ext.var + np.square(ext.sci) * fext.var if fext.var is not None else ext.var.copy()
            var /= np.square(response)
            ext.var = var
        dq_out = np.zeros(ext.shape, dtype=np.uint16) if ext.dq is None else ext.dq.copy()
        if fext.dq is not None:
            dq_out |= fext.dq
        dq_out[unusable] |= dq.BAD_PIXEL
        ext.dq = dq_out
    out.phu["FLATIM"] = (flat_name, "Processed flat divided by")
    out.stamp("FLATCORR", "UT time stamp for flat_correct")
    return out


def normalize_flat(frame: Frame) -> Frame:
    """Divide a flat by the median of its DQ-good pixels over all extensions together.

    DRAGONS' ``normalizeFlat`` with ``scale='median'``, ``separate_ext=False``: the arrays
    keep their response relative to one another. VAR is divided by the square.

    Parameters
    ----------
    frame : Frame
        A stacked (lamp-on minus lamp-off) flat with DQ.

    Returns
    -------
    Frame
        The normalised copy; ``FLATNORM`` gives the median divided by.

    Raises
    ------
    GemredInputError
        If no good pixel has a positive, finite value.
    """
    pixels = np.concatenate(
        [ext.sci[(ext.dq == 0) if ext.dq is not None else np.ones(ext.shape, bool)] for ext in frame]
    )
    pixels = pixels[np.isfinite(pixels)]
    level = float(np.median(pixels)) if pixels.size else np.nan
    del pixels
    if not level > 0:
        msg = f"{frame.root}: median of the good flat pixels is {level}; not a usable lamp flat"
        raise GemredInputError(msg)
    out = frame.copy()
    for ext in out:
        ext.sci /= np.float32(level)
        if ext.var is not None:
            ext.var /= np.float32(level * level)
    out.phu["FLATNORM"] = (level, "Median of good pixels the flat was divided by")
    out.stamp("NORMFLAT", "UT time stamp for normalize_flat")
    return out


def threshold_flatfield(frame: Frame, *, low: float = 0.01, high: float = 10.0, weak: float = 0.5) -> Frame:
    """Flag unusable pixels of a normalised flat (DRAGONS ``thresholdFlatfield``, plus weak pixels).

    Pixels below ``low`` or above ``high`` (or not finite) that are not already ``BAD_PIXEL``
    get ``UNILLUMINATED``; those and every pixel below ``low`` are set to 1.0 with VAR 0, as in
    DRAGONS. In addition, pixels of response between ``low`` and ``weak`` (dead or weak
    columns when no BPM covers them) get ``BAD_PIXEL`` and keep their value.

    Parameters
    ----------
    frame : Frame
        A normalised flat with DQ.
    low, high : float
        Range of an illuminated pixel.
    weak : float
        Response below which a pixel is flagged bad (0 turns this off).

    Returns
    -------
    Frame
        A copy; ``FLATLOW``, ``FLATHIGH``, ``FLATWEAK`` record the limits.

    Raises
    ------
    ValueError
        Unless ``0 <= low < high`` and ``weak < high``.
    """
    if not (0 <= low < high and weak < high):
        msg = f"threshold_flatfield: need 0 <= low ({low}) < high ({high}) and weak ({weak}) < high"
        raise ValueError(msg)
    out = frame.copy()
    for ext in out:
        if ext.dq is None:
            ext.dq = np.zeros(ext.shape, dtype=np.uint16)
        finite = np.isfinite(ext.sci)
        outside = ~finite | (ext.sci < low) | (ext.sci > high)
        ext.dq[outside & (ext.dq & dq.BAD_PIXEL == 0)] |= dq.UNILLUMINATED
        neutral = (ext.dq & dq.UNILLUMINATED != 0) | ~finite | (ext.sci < low)
        ext.dq[~neutral & (ext.sci < weak)] |= dq.BAD_PIXEL
        ext.sci[neutral] = 1.0
        if ext.var is not None:
            ext.var[neutral] = 0.0
    out.phu["FLATLOW"] = (low, "Flat response below this: unilluminated")
    out.phu["FLATHIGH"] = (high, "Flat response above this: unilluminated")
    out.phu["FLATWEAK"] = (weak, "Flat response below this: bad pixel")
    out.stamp("THRESFLT", "UT time stamp for threshold_flatfield")
    return out
