"""The WCS check of DRAGONS' ``prepare`` (``standardizeWCS``, parameter ``bad_wcs``).

Telescope offsets are known far better than a header WCS can be wrong, so within a sequence
the WCS of every frame must follow the offsets: the sky position of a fixed pixel moves by the
change of the telescope offsets. Frames are grouped as in DRAGONS: a new group starts with a
new observation ID or after more than :data:`GROUP_GAP_SECONDS` of dead time. The first frame
of each group (in time) is its reference; another frame whose WCS puts the reference's
``CRPIX`` of extension 1 more than ``tolerance_arcsec`` from where the reference's WCS and the
offsets put it has a bad WCS (``shared/reference/reduction-steps.md`` section 4.2, step 1).

Offsets are the sky offsets ``RAOFFSET``/``DECOFFSE`` (arcsec East and North); without them
``POFFSET``/``QOFFSET`` turned by ``PA`` (GSAOI's parity: at ``PA = 0``, +p is East and +q
North). Positions are moved on the tangent plane of the starting point.

Modes (``bad_wcs``):

``exit``
    Raise :class:`~gemred.io.GemredInputError` naming every frame with a bad WCS.
``fix``
    Rebuild the WCS of the bad frames from their group's reference: each extension takes the
    reference's ``CRPIX`` and ``CD`` and its ``CRVAL`` moved by the offset difference.
``new``
    Rebuild every frame's WCS from the target position (PHU ``RA``/``DEC``) and its offsets:
    ``CRVAL`` of every extension is the target moved by the offsets (as in Gemini's headers
    and the simulator, ``CRVAL`` is the pointing), ``CRPIX`` and ``CD`` are kept.
``ignore``
    Check nothing, change nothing.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
from astropy.io import fits

from gemred.descriptors import _ut_datetime
from gemred.frame import Extension, Frame, copy_header
from gemred.io import GemredInputError

__all__ = ["BAD_WCS_MODES", "WCS_TOLERANCE_ARCSEC", "GROUP_GAP_SECONDS", "wcs_discrepancies", "check_wcs"]

BAD_WCS_MODES = ("exit", "fix", "new", "ignore")
#: Largest WCS discrepancy (arcsec) accepted within a group.
WCS_TOLERANCE_ARCSEC = 30.0
#: Dead time (seconds) after which a new group, with a new reference, starts.
GROUP_GAP_SECONDS = 60.0
_WCS_KEYS = ("CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")


def _label(frame: Frame) -> str:
    return str(frame.phu.get("ORIGNAME") or f"{frame.root}.fits")


def _offsets(frame: Frame) -> tuple[float, float]:
    """Telescope offset East and North, arcsec (module notes)."""
    phu = frame.phu
    if "RAOFFSET" in phu and "DECOFFSE" in phu:
        return float(phu["RAOFFSET"]), float(phu["DECOFFSE"])
    p, q = float(phu.get("POFFSET", 0.0)), float(phu.get("QOFFSET", 0.0))
    pa = math.radians(float(phu.get("PA", 0.0)))
    return p * math.cos(pa) - q * math.sin(pa), p * math.sin(pa) + q * math.cos(pa)


def _move(ra: float, dec: float, east: float, north: float) -> tuple[float, float]:
    """Position at standard coordinates ``(east, north)`` arcsec on the tangent plane at (ra, dec)."""
    x, y = math.radians(east / 3600.0), math.radians(north / 3600.0)
    a0, d0 = math.radians(ra), math.radians(dec)
    denom = math.cos(d0) - y * math.sin(d0)
    new_ra = a0 + math.atan2(x, denom)
    new_dec = math.atan2(math.sin(d0) + y * math.cos(d0), math.hypot(x, denom))
    return math.degrees(new_ra) % 360.0, math.degrees(new_dec)


def _separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Angle between two positions, arcsec (haversine)."""
    a1, d1, a2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    h = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((a2 - a1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h)))) * 3600.0


def _world(header: fits.Header, x: float, y: float) -> tuple[float, float]:
    """RA, Dec of 1-based pixel (x, y) through a TAN WCS given by CRPIX, CD and CRVAL."""
    dx, dy = x - float(header["CRPIX1"]), y - float(header["CRPIX2"])
    xi = (float(header["CD1_1"]) * dx + float(header["CD1_2"]) * dy) * 3600.0
    eta = (float(header["CD2_1"]) * dx + float(header["CD2_2"]) * dy) * 3600.0
    return _move(float(header["CRVAL1"]), float(header["CRVAL2"]), xi, eta)


def _check_header(frame: Frame) -> fits.Header:
    if not len(frame):
        msg = f"{_label(frame)}: no extensions, so no WCS to check"
        raise GemredInputError(msg)
    header = frame[0].header
    missing = [key for key in (*_WCS_KEYS, "CRVAL1", "CRVAL2") if key not in header]
    if missing:
        msg = f"{_label(frame)}: extension 1 has no {', '.join(missing)}; use prepare:bad_wcs=new or ignore"
        raise GemredInputError(msg)
    return header


def _groups(frames: Sequence[Frame]) -> list[list[int]]:
    """Indices of each group, in time order (module notes)."""
    times = [_ut_datetime(f.phu) for f in frames]
    order = sorted(range(len(frames)), key=lambda i: (times[i] or dt.datetime.min, i))
    groups: list[list[int]] = []
    previous = None
    for i in order:
        obsid = str(frames[i].phu.get("OBSID", ""))
        start = True
        if previous is not None:
            j = previous
            same_obs = obsid == str(frames[j].phu.get("OBSID", ""))
            end = (
                None
                if times[j] is None
                else times[j] + dt.timedelta(seconds=float(frames[j].phu.get("EXPTIME", 0)))
            )
            gap = None if end is None or times[i] is None else (times[i] - end).total_seconds()
            start = not same_obs or (gap is not None and gap > GROUP_GAP_SECONDS)
        if start:
            groups.append([i])
        else:
            groups[-1].append(i)
        previous = i
    return groups


def wcs_discrepancies(frames: Sequence[Frame]) -> tuple[np.ndarray, list[list[int]]]:
    """How far each frame's WCS is from what its group's reference and the offsets predict.

    Parameters
    ----------
    frames : sequence of Frame
        Frames (headers are enough) with a TAN WCS (``CRPIX``, ``CD``, ``CRVAL``) in
        extension 1 and telescope offsets in the primary header.

    Returns
    -------
    discrepancy : numpy.ndarray
        Arcseconds, one per frame (0 for the references).
    groups : list of list of int
        The groups, each in time order, its reference first.

    Raises
    ------
    GemredInputError
        Naming a frame whose extension 1 has no WCS.
    """
    frames = list(frames)
    headers = [_check_header(f) for f in frames]
    discrepancy = np.zeros(len(frames))
    groups = _groups(frames)
    for group in groups:
        ref = group[0]
        x, y = float(headers[ref]["CRPIX1"]), float(headers[ref]["CRPIX2"])
        ref_pos = _world(headers[ref], x, y)
        ref_off = _offsets(frames[ref])
        for i in group[1:]:
            east, north = np.subtract(_offsets(frames[i]), ref_off)
            expected = _move(*ref_pos, east, north)
            discrepancy[i] = _separation(*_world(headers[i], x, y), *expected)
    return discrepancy, groups


def _rebuilt(frame: Frame, headers: list[fits.Header], note: str) -> Frame:
    extensions = [Extension(e.sci, h, e.var, e.dq, e.objcat) for e, h in zip(frame, headers, strict=True)]
    phu = copy_header(frame.phu)
    phu["WCSFIX"] = (note, "How prepare:bad_wcs rebuilt the WCS")
    return Frame(phu, extensions, frame.root, frame.tables)


def check_wcs(
    frames: Sequence[Frame], *, mode: str = "exit", tolerance_arcsec: float = WCS_TOLERANCE_ARCSEC
) -> list[Frame]:
    """Check (and repair) the WCS of a sequence of frames, as DRAGONS' ``prepare`` ``bad_wcs``.

    Parameters
    ----------
    frames : sequence of Frame
        The frames of one reduction (pixels are not touched; header-only frames will do).
    mode : {'exit', 'fix', 'new', 'ignore'}
        What to do (module notes).
    tolerance_arcsec : float
        Largest accepted discrepancy (:func:`wcs_discrepancies`).

    Returns
    -------
    list of Frame
        The frames in input order: unchanged ones as given, rebuilt ones as new frames
        (shared pixel arrays, new headers) with ``WCSFIX`` in the primary header.

    Raises
    ------
    GemredInputError
        ``exit`` with frames off by more than the tolerance (naming them and their
        discrepancies); ``fix`` when a bad frame's position angle differs from its
        reference's; ``new`` without target ``RA``/``DEC``; any mode but ``ignore`` when a WCS is
        missing.
    ValueError
        For an unknown mode or a tolerance that is not positive.
    """
    if mode not in BAD_WCS_MODES:
        msg = f"bad_wcs must be one of {BAD_WCS_MODES}, not {mode!r}"
        raise ValueError(msg)
    if not tolerance_arcsec > 0:
        msg = f"tolerance_arcsec must be positive, not {tolerance_arcsec}"
        raise ValueError(msg)
    frames = list(frames)
    if mode == "ignore" or not frames:
        return frames
    if mode == "new":
        return [_new_wcs(frame) for frame in frames]
    discrepancy, groups = wcs_discrepancies(frames)
    bad = discrepancy > tolerance_arcsec
    if not bad.any():
        return frames
    if mode == "exit":
        listed = ", ".join(f'{_label(frames[i])} ({discrepancy[i]:.1f}")' for i in np.flatnonzero(bad))
        msg = (
            f'WCS inconsistent with the telescope offsets by more than {tolerance_arcsec}": {listed}; '
            "set prepare: bad_wcs: fix to rebuild them from the offsets (or new, or ignore)"
        )
        raise GemredInputError(msg)
    result = list(frames)
    for group in groups:
        ref = frames[group[0]]
        for i in (i for i in group[1:] if bad[i]):
            result[i] = _fixed_wcs(frames[i], ref)
    return result


def _fixed_wcs(frame: Frame, ref: Frame) -> Frame:
    if float(frame.phu.get("PA", 0.0)) != float(ref.phu.get("PA", 0.0)):
        msg = (
            f"{_label(frame)}: bad WCS, but its position angle differs from that of {_label(ref)}, "
            "from which it would be rebuilt; use prepare:bad_wcs=new"
        )
        raise GemredInputError(msg)
    east, north = np.subtract(_offsets(frame), _offsets(ref))
    headers = []
    for ext, ref_ext in zip(frame, ref, strict=True):
        header = copy_header(ext.header)
        for key in _WCS_KEYS:
            header[key] = ref_ext.header[key]
        header["CRVAL1"], header["CRVAL2"] = _move(
            float(ref_ext.header["CRVAL1"]), float(ref_ext.header["CRVAL2"]), east, north
        )
        headers.append(header)
    return _rebuilt(frame, headers, f"fix: from {_label(ref)} and the offsets")


def _new_wcs(frame: Frame) -> Frame:
    try:
        ra, dec = float(frame.phu["RA"]), float(frame.phu["DEC"])
    except (KeyError, TypeError, ValueError) as err:
        msg = f"{_label(frame)}: no target RA/DEC in the primary header; bad_wcs=new cannot rebuild the WCS"
        raise GemredInputError(msg) from err
    crval = _move(ra, dec, *_offsets(frame))
    headers = []
    for ext in frame:
        header = copy_header(ext.header)
        header["CRVAL1"], header["CRVAL2"] = crval
        headers.append(header)
    return _rebuilt(frame, headers, "new: target RA/DEC and the offsets")
