"""CCD primitives: overscan subtraction and trimming, bias subtraction, conversion to electrons.

DRAGONS' ``overscanCorrect``, ``biasCorrect`` and ``ADUToElectrons``
(``geminidr/core/primitives_ccd.py``, ``geminidr/gmos/primitives_gmos.py``,
``geminidr/gemini/primitives_gemini.py``; ``shared/reference/reduction-steps.md`` sections 1, 3.1
and 3.2). :func:`overscan_levels` is the numerical core, on plain arrays; the other functions
take a :class:`~gemred.frame.Frame`, work on a copy, and stamp a timestamp keyword
(``SUBOVER``, ``TRIMOVER``, ``BIASCORR``, ``ADUTOELE``).
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
from numpy.polynomial import chebyshev

from gemred.frame import Extension, Frame, copy_header
from gemred.instruments import gmos
from gemred.io import GemredInputError
from gemred.primitives.standardize import _binning, frame_label
from gemred.sections import Section, format_section, parse_section

__all__ = [
    "OVERSCAN_FUNCTIONS",
    "overscan_levels",
    "subtract_overscan",
    "trim_overscan",
    "subtract_bias",
    "adu_to_electrons",
]

OverscanFunction = Literal["none", "chebyshev", "spline3"]
#: Ways of turning per-row overscan means into the level subtracted from each row.
OVERSCAN_FUNCTIONS = ("none", "chebyshev", "spline3")
#: Polynomial order used for ``function='chebyshev'`` when none is given.
DEFAULT_CHEBYSHEV_ORDER = 6
#: Half-width (rows) of the running median that flags deviant overscan rows.
_RUNNING_MEDIAN_HALF_WIDTH = 2


def overscan_levels(
    overscan: np.ndarray,
    *,
    row_sigma: float,
    function: OverscanFunction = "none",
    order: int | None = None,
    lsigma: float = 3.0,
    hsigma: float = 3.0,
    niter: int = 0,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Overscan level of every row from the overscan columns to be used.

    Each row's mean is taken; rows further than ``3 * row_sigma`` from a running median of
    the row means (5 rows) are left out of fits. ``'none'`` returns the row means themselves;
    ``'chebyshev'`` and ``'spline3'`` fit them across rows, with ``niter`` rounds of
    ``lsigma``/``hsigma`` rejection of rows about the fit.

    Parameters
    ----------
    overscan : numpy.ndarray
        Overscan pixels, shape (rows, columns), with contaminated columns already removed.
    row_sigma : float
        Expected noise of one row mean (read noise in data units / sqrt(columns)).
    function : {'none', 'chebyshev', 'spline3'}
        How the per-row levels are smoothed.
    order : int, optional
        Chebyshev degree (default 6), or number of cubic-spline pieces (default: a smoothing
        spline whose chi-square per row is about 1 with weights ``1 / row_sigma``).
    lsigma, hsigma : float
        Rejection thresholds (in residual standard deviations) of the fit iterations.
    niter : int
        Rejection iterations after the first fit.
    exclude : numpy.ndarray of bool, optional
        Rows never used in fits (they still get a level).

    Returns
    -------
    level : numpy.ndarray
        float64 level per row.
    used : numpy.ndarray
        bool per row: rows that constrained the fit (all True for ``'none'``).

    Raises
    ------
    ValueError
        For an unknown function, or too few good rows to fit.

    Examples
    --------
    >>> over = np.full((10, 8), 100.0, dtype=np.float32)
    >>> level, used = overscan_levels(over, row_sigma=1.0)
    >>> float(level[0]), bool(used.all())
    (100.0, True)
    """
    if function not in OVERSCAN_FUNCTIONS:
        msg = f"overscan function must be one of {OVERSCAN_FUNCTIONS}, not {function!r}"
        raise ValueError(msg)
    rows = overscan.mean(axis=1, dtype=np.float64)
    if function == "none":
        return rows, np.ones(rows.shape, dtype=bool)
    from scipy import ndimage  # lazily: slow to import, and only fitted overscans need it

    running = ndimage.median_filter(rows, size=2 * _RUNNING_MEDIAN_HALF_WIDTH + 1, mode="nearest")
    used = np.abs(rows - running) <= 3.0 * row_sigma
    if exclude is not None:
        used &= ~exclude
    y = np.arange(rows.size, dtype=np.float64)
    for iteration in range(niter + 1):
        if used.sum() < 4 + (order or 0):
            msg = f"only {used.sum()} good overscan rows: too few to fit a {function} of order {order}"
            raise ValueError(msg)
        level = _fit_rows(y, rows, used, function=function, order=order, row_sigma=row_sigma)
        if iteration == niter:
            break
        resid = rows - level
        std = float(resid[used].std())
        keep = used & (resid >= -lsigma * std) & (resid <= hsigma * std)
        if keep.sum() == used.sum():
            break
        used = keep
    return level, used


def _fit_rows(
    y: np.ndarray, rows: np.ndarray, used: np.ndarray, *, function: str, order: int | None, row_sigma: float
) -> np.ndarray:
    """Evaluate at every row a Chebyshev or cubic-spline fit to the ``used`` row means."""
    yg, vg = y[used], rows[used]
    if function == "chebyshev":
        fit = chebyshev.Chebyshev.fit(yg, vg, deg=DEFAULT_CHEBYSHEV_ORDER if order is None else order)
        return fit(y)
    from scipy import interpolate  # lazily: slow to import, only for spline3

    if order is None:
        spline = interpolate.UnivariateSpline(yg, vg, w=np.full(yg.size, 1.0 / row_sigma), k=3, s=yg.size)
    else:
        knots = np.linspace(yg[0], yg[-1], order + 1)[1:-1]
        spline = interpolate.LSQUnivariateSpline(yg, vg, knots, k=3)
    return spline(y)


def _sections(frame: Frame, index: int) -> tuple[Section, Section]:
    """DATASEC and BIASSEC of extension ``index``, checked."""
    hdr = frame[index].header
    name = frame_label(frame)
    if str(hdr.get("TRIMMED", "")).lower() == "yes" or "BIASSEC" not in hdr:
        msg = f"{name}: extension {index + 1} has no overscan (already trimmed, or no BIASSEC)"
        raise GemredInputError(msg)
    try:
        return parse_section(hdr["DATASEC"]), parse_section(hdr["BIASSEC"])
    except (KeyError, ValueError) as exc:
        msg = f"{name}: extension {index + 1}: bad DATASEC/BIASSEC ({exc})"
        raise GemredInputError(msg) from exc


def _usable_overscan(data: Section, bias: Section, nbiascontam: int) -> Section:
    """BIASSEC without ``nbiascontam`` columns next to the data and 1 column at the far edge."""
    if bias.x1 >= data.x2:  # overscan on the right of the data
        x1, x2 = bias.x1 + nbiascontam, bias.x2 - 1
    else:
        x1, x2 = bias.x1 + 1, bias.x2 - nbiascontam
    if x2 <= x1:
        msg = f"nbiascontam={nbiascontam} leaves no overscan columns in {format_section(bias)}"
        raise ValueError(msg)
    return Section(x1, x2, bias.y1, bias.y2)


def _excluded_rows(frame: Frame, index: int, nrows: int) -> np.ndarray | None:
    """Hamamatsu rows in the bottom 48 unbinned chip rows, left out of overscan fits."""
    hdr = frame[index].header
    if "Hamamatsu" not in str(frame.phu.get("DETECTOR", "")) or "CCDSEC" not in hdr:
        return None
    ybin = _binning(hdr)[1]
    chip_row = parse_section(hdr["CCDSEC"]).y1 + ybin * np.arange(nrows)
    return chip_row < gmos.BOTTOM_ROWS_EXCLUDED


def subtract_overscan(
    frame: Frame,
    *,
    function: OverscanFunction = "none",
    order: int | None = None,
    lsigma: float = 3.0,
    hsigma: float = 3.0,
    niter: int = 0,
    nbiascontam: int = 4,
) -> Frame:
    """Subtract from every row the overscan level of that row (DRAGONS ``subtractOverscan``).

    Uses ``BIASSEC`` less ``nbiascontam`` columns next to the data and one column at the far
    edge; see :func:`overscan_levels`. The per-row noise used to flag deviant rows is
    ``RDNOISE / GAIN / sqrt(columns)`` (in ADU). Hamamatsu rows among the bottom 48 unbinned
    chip rows are left out of fits. Writes ``OVERSEC`` (columns used), ``OVERSCAN`` (median
    level), ``OVERRMS`` (rms of the overscan pixels about the level subtracted), ``OVERRDNS``
    (that rms in electrons) and lowers ``SATLEVEL``/``NONLINEA`` by the median level.

    Parameters
    ----------
    frame : Frame
        A prepared, untrimmed frame in ADU.
    function, order, lsigma, hsigma, niter
        See :func:`overscan_levels`.
    nbiascontam : int
        Overscan columns next to the data left out (charge trailing from the data).

    Returns
    -------
    Frame
        A copy with the level subtracted from every pixel of each row (data and overscan).

    Raises
    ------
    GemredInputError
        If the frame is trimmed or lacks overscan/section keywords, or is not prepared.
    """
    name = frame_label(frame)
    out = frame.copy(deep=False)  # SCI is replaced by a new array below
    for i, ext in enumerate(out):
        data, bias = _sections(out, i)
        hdr = ext.header
        if "GAIN" not in hdr or "RDNOISE" not in hdr:
            msg = f"{name}: extension {i + 1} lacks GAIN/RDNOISE; run prepare() first"
            raise GemredInputError(msg)
        used_cols = _usable_overscan(data, bias, nbiascontam)
        pixels = ext.sci[used_cols.slices()]
        gain = float(hdr["GAIN"]) if str(hdr.get("BUNIT", "adu")).lower() == "adu" else 1.0
        rn = float(hdr["RDNOISE"]) / gain
        level, _ = overscan_levels(
            pixels,
            row_sigma=rn / np.sqrt(pixels.shape[1]),
            function=function,
            order=order,
            lsigma=lsigma,
            hsigma=hsigma,
            niter=niter,
            exclude=_excluded_rows(out, i, pixels.shape[0]),
        )
        full = np.zeros(ext.shape[0], dtype=np.float32)
        full[used_cols.y1 : used_cols.y2] = level
        ext.sci = ext.sci - full[:, None]
        rms = float(np.sqrt(np.mean(np.square(ext.sci[used_cols.slices()], dtype=np.float64))))
        median = float(np.median(level))
        hdr["OVERSEC"] = (format_section(used_cols), "Overscan columns used")
        hdr["OVERSCAN"] = (median, "Overscan level subtracted (median, ADU)")
        hdr["OVERRMS"] = (rms, "Overscan rms about the level subtracted")
        hdr["OVERRDNS"] = (rms * gain, "Read noise from overscan (electron)")
        for key in ("SATLEVEL", "NONLINEA"):
            if key in hdr:
                hdr[key] = float(hdr[key]) - median
    out.stamp("SUBOVER", "UT time stamp for subtract_overscan")
    return out


def trim_overscan(frame: Frame) -> Frame:
    """Keep only the data section of every extension (DRAGONS ``trimOverscan``).

    ``DATASEC`` becomes the whole trimmed array, ``BIASSEC`` is deleted, ``TRIMMED='yes'``, and
    ``CRPIX1``/``CRPIX2`` shift with the section origin so the WCS still maps the same pixels
    to the same sky positions.

    Parameters
    ----------
    frame : Frame
        An untrimmed frame (with ``DATASEC``).

    Returns
    -------
    Frame
        A trimmed copy with contiguous arrays (only the kept pixels are copied).

    Raises
    ------
    GemredInputError
        If the frame is already trimmed or a ``DATASEC`` is missing or outside the array.
    """
    name = frame_label(frame)
    out = Frame(copy_header(frame.phu), [], frame.root, copy.deepcopy(frame.tables))
    for i, source in enumerate(frame):
        hdr = copy_header(source.header)
        if str(hdr.get("TRIMMED", "")).lower() == "yes":
            msg = f"{name}: extension {i + 1} is already trimmed"
            raise GemredInputError(msg)
        try:
            sec = parse_section(hdr["DATASEC"])
        except (KeyError, ValueError) as exc:
            msg = f"{name}: extension {i + 1}: no valid DATASEC ({exc})"
            raise GemredInputError(msg) from exc
        if sec.y2 > source.shape[0] or sec.x2 > source.shape[1]:
            msg = f"{name}: extension {i + 1}: DATASEC {hdr['DATASEC']} exceeds the array {source.shape}"
            raise GemredInputError(msg)
        cut = sec.slices()
        out.extensions.append(
            Extension(
                source.sci[cut].copy(),
                hdr,
                None if source.var is None else source.var[cut].copy(),
                None if source.dq is None else source.dq[cut].copy(),
                copy.deepcopy(source.objcat),
            )
        )
        hdr["DATASEC"] = format_section((0, sec.x2 - sec.x1, 0, sec.y2 - sec.y1))
        hdr.remove("BIASSEC", ignore_missing=True)
        hdr["TRIMMED"] = ("yes", "Overscan trimmed")
        for key, offset in (("CRPIX1", sec.x1), ("CRPIX2", sec.y1)):
            if key in hdr:
                hdr[key] = float(hdr[key]) - offset
    out.stamp("TRIMOVER", "UT time stamp for trim_overscan")
    return out


def subtract_bias(frame: Frame, bias: Frame) -> Frame:
    """Subtract a processed bias: SCI subtracts, VAR adds, DQ ORs (DRAGONS ``biasCorrect``).

    Parameters
    ----------
    frame : Frame
        Overscan-corrected, trimmed frame.
    bias : Frame
        Processed bias with the same extensions, shapes, binning and unit.

    Returns
    -------
    Frame
        A copy; ``BIASIM`` names the bias.

    Raises
    ------
    GemredInputError
        If the extension counts, shapes, binning or units differ (both files are named).
    """
    name, bias_name = frame_label(frame), frame_label(bias)
    if len(bias) != len(frame):
        msg = f"{name} has {len(frame)} extensions but the bias {bias_name} has {len(bias)}"
        raise GemredInputError(msg)
    out = frame.copy(deep=False)  # SCI, VAR and DQ are replaced by new arrays below
    for i, (ext, bext) in enumerate(zip(out, bias, strict=True)):
        unit = str(ext.header.get("BUNIT", "adu")).lower()
        bunit = str(bext.header.get("BUNIT", "adu")).lower()
        problems = []
        if ext.shape != bext.shape:
            problems.append(f"shape {ext.shape} vs {bext.shape}")
        if _binning(ext.header) != _binning(bext.header):
            problems.append(f"binning {_binning(ext.header)} vs {_binning(bext.header)}")
        if unit != bunit:
            problems.append(f"unit {unit!r} vs {bunit!r}")
        if problems:
            msg = (
                f"{name} and bias {bias_name} do not match in extension {i + 1}: {'; '.join(problems)}; "
                "use a bias with the same binning, read-out area and processing state"
            )
            raise GemredInputError(msg)
        ext.sci = ext.sci - bext.sci
        if bext.var is not None:
            ext.var = bext.var.copy() if ext.var is None else ext.var + bext.var
        if bext.dq is not None:
            ext.dq = bext.dq.copy() if ext.dq is None else ext.dq | bext.dq
    out.phu["BIASIM"] = (bias_name, "Processed bias subtracted")
    out.stamp("BIASCORR", "UT time stamp for subtract_bias")
    return out


def adu_to_electrons(frame: Frame) -> Frame:
    """Multiply by the gain: SCI * GAIN, VAR * GAIN**2, ``BUNIT='electron'``, ``GAIN=1``.

    ``SATLEVEL`` and ``NONLINEA`` are scaled by the gain too.

    Parameters
    ----------
    frame : Frame
        A prepared frame in ADU.

    Returns
    -------
    Frame
        A copy in electrons.

    Raises
    ------
    GemredInputError
        If an extension is not in ADU or has no ``GAIN``.
    """
    name = frame_label(frame)
    out = frame.copy(deep=False)  # SCI and VAR are replaced by new arrays below
    for i, ext in enumerate(out):
        hdr = ext.header
        if str(hdr.get("BUNIT", "")).lower() != "adu" or "GAIN" not in hdr:
            msg = f"{name}: extension {i + 1} is not in ADU with a GAIN (BUNIT={hdr.get('BUNIT')!r})"
            raise GemredInputError(msg)
        gain = float(hdr["GAIN"])
        ext.sci = ext.sci * np.float32(gain)
        if ext.var is not None:
            ext.var = ext.var * np.float32(gain * gain)
        for key in ("SATLEVEL", "NONLINEA"):
            if key in hdr:
                hdr[key] = float(hdr[key]) * gain
        hdr["GAIN"] = (1.0, "Gain (electron/ADU): data in electrons")
        hdr["BUNIT"] = ("electron", "Physical unit of SCI")
    out.stamp("ADUTOELE", "UT time stamp for adu_to_electrons")
    return out
