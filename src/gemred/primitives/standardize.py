"""Standardising raw frames: headers (``prepare``), data quality (``add_dq``), variance (``add_var``).

These are DRAGONS' first three primitives (``geminidr/core/primitives_standardize.py``,
``geminidr/gmos/primitives_gmos.py``, ``geminidr/gsaoi/primitives_gsaoi.py``;
``shared/reference/reduction-steps.md`` sections 1, 3.1 and 4.1) for GMOS-N, GMOS-S and GSAOI.
What differs between the instruments (where gain, read noise and levels come from; averaged
GSAOI coadds) is kept in small per-instrument helpers. Each function copies its input, never
changes it, and stamps a timestamp keyword in the primary header of the copy (``PREPARE``,
``ADDDQ``, ``ADDVAR``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
from astropy.io import fits

from gemred import __version__, dq
from gemred.descriptors import _filter_name
from gemred.frame import Frame
from gemred.instruments import gmos, gsaoi
from gemred.io import GemredInputError

__all__ = [
    "GMOS_EXTENSION_COUNTS",
    "GSAOI_EXTENSION_COUNT",
    "ADC_LIMIT",
    "frame_label",
    "gsaoi_array_index",
    "coadds",
    "prepare",
    "add_dq",
    "add_var",
]

#: Raw extension counts a GMOS file may have (EEV 3, e2vDD 6 or 12 ... with ROIs, Hamamatsu 12).
GMOS_EXTENSION_COUNTS = (1, 2, 3, 4, 6, 12)
#: A raw GSAOI file has one extension per HAWAII-2RG array.
GSAOI_EXTENSION_COUNT = 4
_GMOS = ("GMOS-N", "GMOS-S")
#: Largest value the GMOS 16-bit ADC can record.
ADC_LIMIT = 65535.0

#: Primary-header keyword marking a processed calibration, and the file suffix it gets.
_PROCESSED_SUFFIXES = {"PROCBIAS": "_bias", "PROCFLAT": "_flat", "PROCFRNG": "_fringe"}


def frame_label(frame: Frame) -> str:
    """File name by which a frame is known in messages: ``root.fits`` or ``root_bias.fits`` etc.

    Parameters
    ----------
    frame : Frame
        A raw frame or product.

    Returns
    -------
    str
        The raw file name, or the product name a processed bias, flat or fringe is stored under.

    Examples
    --------
    >>> from astropy.io import fits
    >>> frame_label(Frame(fits.Header({"PROCBIAS": "x"}), [], "N20170613S0180"))
    'N20170613S0180_bias.fits'
    """
    for key, suffix in _PROCESSED_SUFFIXES.items():
        if key in frame.phu:
            return f"{frame.root}{suffix}.fits"
    return f"{frame.root}.fits"


def _obs_date(frame: Frame) -> dt.date:
    """UT date of the observation, from ``DATE-OBS`` (or ``DATE``)."""
    for key in ("DATE-OBS", "DATE"):
        text = str(frame.phu.get(key, "")).strip()
        if text:
            try:
                return dt.date.fromisoformat(text[:10])
            except ValueError:
                continue
    msg = f"{frame_label(frame)}: no valid DATE-OBS or DATE in the primary header; cannot pick the gain table"
    raise GemredInputError(msg)


def _binning(header: fits.Header) -> tuple[int, int]:
    """(x, y) binning from ``CCDSUM``; (1, 1) if absent."""
    parts = str(header.get("CCDSUM", "1 1")).split()
    return int(parts[0]), int(parts[1])


def _gmos_read_mode(frame: Frame) -> tuple[str, str, str]:
    """(gain setting, read speed, read mode) of a raw GMOS frame."""
    settings = Counter(gmos.gain_setting(float(ext.header.get("GAIN", 0.0))) for ext in frame)
    gain = settings.most_common(1)[0][0]
    speed = gmos.read_speed_setting(float(frame.phu.get("AMPINTEG", 0.0)))
    return gain, speed, gmos.read_mode(gain, speed)


def _saturation_adu(dset: gmos.DetectorSet, ccdname: str, gain: float, bias: float, nbin: int) -> float:
    """GMOS saturation level (ADU) of a raw amplifier (``gemini_instruments/gmos/adclass.py``).

    The ADC limit if more than two pixels are binned, else the well depth times the binning
    over the gain plus the bias level, capped at the ADC limit.
    """
    if nbin > 2:
        return ADC_LIMIT
    chips = [name.strip() for name in dset.chip_names]
    well = dset.full_well[chips.index(ccdname.strip())] if ccdname.strip() in chips else np.inf
    return float(min(ADC_LIMIT, well * nbin / gain + bias))


def gsaoi_array_index(header: fits.Header, position: int) -> int:
    """Index (0-3) in :data:`gemred.instruments.gsaoi.ARRAYS` of a GSAOI extension.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The extension header; its ``ARRAYID`` names the array.
    position : int
        0-based position of the extension in the file, used when ``ARRAYID`` is absent.

    Returns
    -------
    int
        The array index.

    Raises
    ------
    ValueError
        If ``ARRAYID`` names no GSAOI array.

    Examples
    --------
    >>> gsaoi_array_index(fits.Header({"ARRAYID": "H2RG-032-064"}), 0)
    1
    """
    array_id = str(header.get("ARRAYID", "")).strip()
    if not array_id:
        return position
    for index, info in enumerate(gsaoi.ARRAYS):
        if info.array_id == array_id:
            return index
    msg = f"ARRAYID {array_id!r} is not a GSAOI array ({', '.join(a.array_id for a in gsaoi.ARRAYS)})"
    raise ValueError(msg)


def coadds(frame: Frame) -> int:
    """Number of *averaged* coadds of a frame: PHU ``COADDS`` for GSAOI, 1 otherwise.

    GSAOI averages its coadds, so the Poisson variance of the data is divided by this number.
    """
    if frame.instrument != "GSAOI":
        return 1
    try:
        return max(int(frame.phu.get("COADDS", 1)), 1)
    except (TypeError, ValueError):
        msg = f"{frame_label(frame)}: COADDS={frame.phu.get('COADDS')!r} is not an integer"
        raise GemredInputError(msg) from None


def _check_extension_count(frame: Frame, counts: tuple[int, ...], what: str) -> None:
    if len(frame) not in counts:
        allowed = counts[0] if len(counts) == 1 else f"one of {counts}"
        msg = f"{frame_label(frame)}: {len(frame)} image extensions; a raw {what} file has {allowed}"
        raise GemredInputError(msg)


def _check_not_prepared(frame: Frame) -> None:
    if "PREPARE" in frame.phu:
        stamp = frame.phu["PREPARE"]
        msg = f"{frame_label(frame)}: already prepared (PREPARE={stamp}); start from the raw file"
        raise GemredInputError(msg)


def _prepare_gmos(frame: Frame) -> Frame:
    """GMOS part of :func:`prepare`: per-amplifier table values in a copy's extension headers."""
    name = frame_label(frame)
    _check_extension_count(frame, GMOS_EXTENSION_COUNTS, "GMOS")
    _check_not_prepared(frame)
    try:
        dset = gmos.detector_set(frame.instrument, _obs_date(frame))
        gainset, _, mode = _gmos_read_mode(frame)
        cals = [gmos.amp_calibration(dset, str(ext.header.get("AMPNAME", "")), mode) for ext in frame]
    except (ValueError, KeyError) as exc:
        msg = f"{name}: {exc}"
        raise GemredInputError(msg) from exc
    out = frame.copy(deep=False)  # headers only: the pixel planes are not changed
    for ext, cal in zip(out, cals, strict=True):
        xbin, ybin = _binning(ext.header)
        sat = _saturation_adu(dset, str(ext.header.get("CCDNAME", "")), cal.gain, cal.bias_level, xbin * ybin)
        hdr = ext.header
        hdr["GAIN"] = (cal.gain, "Gain (electron/ADU), Gemini table")
        hdr["RDNOISE"] = (cal.read_noise, "Read noise (electron), Gemini table")
        hdr["SATLEVEL"] = (sat, "Saturation level (ADU)")
        hdr["NONLINEA"] = (sat, "Non-linear level (ADU)")
        hdr["GAINSET"] = (gainset, "Gain setting (low / high)")
        hdr["PIXSCALE"] = (dset.pixel_scale * ybin, "Pixel scale (arcsec / binned pixel)")
        hdr["BUNIT"] = ("adu", "Physical unit of SCI")
    return out


def _prepare_gsaoi(frame: Frame) -> Frame:
    """GSAOI part of :func:`prepare`: per-array table values in a copy's headers."""
    name = frame_label(frame)
    _check_extension_count(frame, (GSAOI_EXTENSION_COUNT,), "GSAOI")
    _check_not_prepared(frame)
    n_coadds = coadds(frame)
    try:
        indices = [gsaoi_array_index(ext.header, i) for i, ext in enumerate(frame)]
        noise = [gsaoi.read_noise(i, frame.phu.get("LNRS"), n_coadds) for i in indices]
    except (ValueError, TypeError) as exc:
        msg = f"{name}: {exc}"
        raise GemredInputError(msg) from exc
    if len(set(indices)) != len(indices):
        msg = f"{name}: ARRAYID repeats across extensions ({indices}); not a raw GSAOI file"
        raise GemredInputError(msg)
    out = frame.copy(deep=False)  # headers only: the pixel planes are not changed
    for ext, index, rn in zip(out, indices, noise, strict=True):
        info = gsaoi.ARRAYS[index]
        hdr = ext.header
        hdr["ARRAYID"] = (info.array_id, "Array identification")
        hdr["GAIN"] = (info.gain, "Gain (electron/ADU), Gemini table")
        hdr["RDNOISE"] = (float(rn), "Read noise (electron) for LNRS and COADDS")
        hdr["SATLEVEL"] = (info.saturation_adu, "Saturation level (ADU)")
        hdr["NONLINEA"] = (info.nonlinear_adu, "Non-linear level (ADU)")
        hdr["BUNIT"] = ("adu", "Physical unit of SCI")
    band = _filter_name(frame.phu.get("FILTER1"), frame.phu.get("FILTER2"))
    if band is not None:
        out.phu["FILTER"] = (band, "Filter name")
    out.phu["PIXSCALE"] = (gsaoi.PIXEL_SCALE, "Pixel scale (arcsec / pixel)")
    return out


def prepare(frame: Frame) -> Frame:
    """Check a raw GMOS or GSAOI frame and standardise its headers, as DRAGONS' ``prepare`` does.

    Every extension gets ``GAIN`` and ``RDNOISE`` (electrons) from Gemini's tables,
    ``SATLEVEL`` and ``NONLINEA`` (ADU) and ``BUNIT='adu'``:

    * GMOS: per amplifier (``AMPNAME``, read mode, observation date); ``NONLINEA`` equals
      ``SATLEVEL``; also ``GAINSET`` and ``PIXSCALE`` (arcsec per binned pixel).
    * GSAOI: per array (``ARRAYID``); read noise for the PHU ``LNRS`` read mode divided by
      ``sqrt(COADDS)``; ``NONLINEA`` is the array's linear limit. The primary header gets
      ``FILTER`` and ``PIXSCALE``.

    The primary header gets ``ORIGNAME``, ``PROCSOFT``, ``PROCSVER`` and the ``PREPARE``
    timestamp.

    Parameters
    ----------
    frame : Frame
        A raw GMOS-N or GMOS-S frame (one extension per amplifier) or GSAOI frame (one per
        array).

    Returns
    -------
    Frame
        A prepared copy; pixels are unchanged.

    Raises
    ------
    GemredInputError
        If the frame is from another instrument, has an extension count the instrument never
        writes, is already prepared, or is from a detector, read mode, amplifier or array with
        no table entry.
    """
    instrument = frame.instrument
    if instrument in _GMOS:
        out = _prepare_gmos(frame)
    elif instrument == "GSAOI":
        out = _prepare_gsaoi(frame)
    else:
        msg = (
            f"{frame_label(frame)}: instrument {instrument!r} is not GMOS-N, GMOS-S or GSAOI; "
            "prepare() handles these only"
        )
        raise GemredInputError(msg)
    out.phu.setdefault("ORIGNAME", f"{frame.root}.fits")
    out.phu["PROCSOFT"] = ("gemred", "Data reduction software")
    out.phu["PROCSVER"] = (__version__, "gemred version")
    out.stamp("PREPARE", "UT time stamp for prepare")
    return out


def _bpm_mask(bpm: Frame, index: int) -> np.ndarray:
    """The uint16 mask of BPM extension ``index``: its DQ plane, or its pixels if it has none."""
    ext = bpm[index]
    return ext.dq if ext.dq is not None else ext.sci.astype(np.uint16)


def add_dq(frame: Frame, bpm: Frame | None = None) -> Frame:
    """Build the DQ plane: static bad pixels, saturated and non-linear pixels.

    ``BAD_PIXEL`` (and any other bits) from the BPM; ``SATURATED`` where SCI >= ``SATLEVEL``;
    ``NON_LINEAR`` where ``NONLINEA`` <= SCI < ``SATLEVEL`` (GSAOI; for GMOS the two levels
    are equal, so no pixel is non-linear). DRAGONS' GSAOI extras, "hidden" saturation (small
    regions that read low) and latency flagging, are not done.

    Parameters
    ----------
    frame : Frame
        A prepared frame (``SATLEVEL`` on every extension), before or after trimming.
    bpm : Frame, optional
        Static bad-pixel mask with one extension per frame extension, matched by order, each of
        the same shape and binning (its DQ plane, or its pixels, hold the bits). None: no
        static mask.

    Returns
    -------
    Frame
        A copy whose extensions have a uint16 DQ plane (any existing bits are kept).

    Raises
    ------
    GemredInputError
        If the frame is not prepared, or the BPM has another extension count, shape or binning.
    """
    name = frame_label(frame)
    if bpm is not None and len(bpm) != len(frame):
        msg = f"{name}: the BPM {frame_label(bpm)} has {len(bpm)} extensions, the frame {len(frame)}"
        raise GemredInputError(msg)
    out = frame.copy(deep=False)  # DQ is built as a new array below
    for i, ext in enumerate(out):
        if "SATLEVEL" not in ext.header:
            msg = f"{name}: extension {i + 1} has no SATLEVEL; run prepare() before add_dq()"
            raise GemredInputError(msg)
        mask = np.zeros(ext.shape, dtype=np.uint16) if ext.dq is None else ext.dq.copy()
        if bpm is not None:
            bits = _bpm_mask(bpm, i)
            if bits.shape != ext.shape or _binning(bpm[i].header) != _binning(ext.header):
                msg = (
                    f"{name}: extension {i + 1} has shape {ext.shape} and binning {_binning(ext.header)}, "
                    f"but the BPM {frame_label(bpm)} has {bits.shape} and {_binning(bpm[i].header)}; "
                    "use the BPM made for this binning and read-out area"
                )
                raise GemredInputError(msg)
            mask |= bits
        saturation = float(ext.header["SATLEVEL"])
        nonlinear = float(ext.header.get("NONLINEA", saturation))
        mask[ext.sci >= saturation] |= dq.SATURATED
        if nonlinear < saturation:
            mask[(ext.sci >= nonlinear) & (ext.sci < saturation)] |= dq.NON_LINEAR
        ext.dq = mask
    out.stamp("ADDDQ", "UT time stamp for add_dq")
    return out


def add_var(frame: Frame, *, read_noise: bool = True, poisson: bool = False) -> Frame:
    """Add read-noise and/or Poisson variance terms to the VAR plane, each at most once.

    In ADU the read term is ``(RDNOISE / GAIN)**2`` and the Poisson term ``max(SCI, 0) / GAIN``;
    in electrons ``RDNOISE**2`` and ``max(SCI, 0)``. GSAOI averages its coadds, so there the
    Poisson term is divided by ``COADDS`` (see :func:`coadds`; its ``RDNOISE`` already
    includes the ``1/sqrt(COADDS)``). Terms already present (header ``VARNOISE``) are not added
    again.

    Parameters
    ----------
    frame : Frame
        A prepared frame (``GAIN``, ``RDNOISE``, ``BUNIT`` on every extension).
    read_noise, poisson : bool
        Which terms to add.

    Returns
    -------
    Frame
        A copy with float32 VAR planes; ``VARNOISE`` lists the terms included.

    Raises
    ------
    ValueError
        If neither term is requested.
    GemredInputError
        If the frame is not prepared.
    """
    if not (read_noise or poisson):
        msg = "add_var: ask for read_noise and/or poisson"
        raise ValueError(msg)
    name = frame_label(frame)
    n_coadds = coadds(frame)
    out = frame.copy(deep=False)  # VAR is built as a new array below
    for i, ext in enumerate(out):
        hdr = ext.header
        if "GAIN" not in hdr or "RDNOISE" not in hdr or "BUNIT" not in hdr:
            msg = f"{name}: extension {i + 1} lacks GAIN/RDNOISE/BUNIT; run prepare() before add_var()"
            raise GemredInputError(msg)
        terms = [t for t in str(hdr.get("VARNOISE", "")).split(",") if t]
        gain = float(hdr["GAIN"]) if str(hdr["BUNIT"]).lower() == "adu" else 1.0
        var = np.zeros(ext.shape, dtype=np.float32) if ext.var is None else ext.var.copy()
        if read_noise and "read" not in terms:
            var += np.float32((float(hdr["RDNOISE"]) / gain) ** 2)
            terms.append("read")
        if poisson and "Poisson" not in terms:
            var += np.maximum(ext.sci, np.float32(0)) / np.float32(gain * n_coadds)
            terms.append("Poisson")
        ext.var = var
        hdr["VARNOISE"] = (",".join(terms), "Variance terms included")
    out.stamp("ADDVAR", "UT time stamp for add_var")
    return out
