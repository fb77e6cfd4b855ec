"""Descriptors and tags of Gemini GMOS and GSAOI files, read from their headers alone.

These are the values DRAGONS' ``astrodata`` exposes (same names, same rules; see
``shared/reference/gemini-raw-format.md`` sections 2, 3.3 and 4), computed without reading a
single pixel so that a folder of a thousand raw files is classified in seconds. Optional
keywords that are missing give ``None`` rather than an error, as in archive data.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gemred.errors import GemredInputError
from gemred.instruments import gmos
from gemred.instruments.gsaoi import READ_MODES
from gemred.sections import parse_section

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = ["DESCRIPTOR_NAMES", "DESCRIPTOR_TYPES", "descriptors", "tags"]

#: Every descriptor returned by :func:`descriptors`, with the Python type of its value
#: (any value may also be ``None`` when the headers do not say).
DESCRIPTOR_TYPES: dict[str, type] = {
    "filename": str,
    "instrument": str,
    "observation_type": str,
    "observation_class": str,
    "object": str,
    "tags": frozenset,
    "filter_name": str,
    "exposure_time": float,
    "binning": str,
    "detector_x_bin": int,
    "detector_y_bin": int,
    "read_mode": str,
    "read_speed_setting": str,
    "gain_setting": str,
    "detector_roi_setting": str,
    "ut_datetime": str,
    "ut_date": str,
    "ut_time": str,
    "ra": float,
    "dec": float,
    "telescope_x_offset": float,
    "telescope_y_offset": float,
    "position_angle": float,
    "data_label": str,
    "observation_id": str,
    "program_id": str,
    "detector": str,
    "detector_name": str,
    "coadds": int,
    "wavefront_sensor": str,
    "is_guided": bool,
    "nextensions": int,
}

#: Descriptor names, in the order :func:`descriptors` returns them.
DESCRIPTOR_NAMES: tuple[str, ...] = tuple(DESCRIPTOR_TYPES)

#: GMOS ROI names and the first-ROI rectangles that define them: (x1, x2, y1, y2), 1-based,
#: inclusive, unbinned (DRAGONS ``gemini_instruments/gmos/lookup.py`` ``gmosRoiSettings``;
#: the first entry of each is for EEV/e2v CCDs, the others for Hamamatsu).
_GMOS_ROIS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "Full Frame": ((1, 6144, 1, 4608), (1, 6144, 1, 4224)),
    "CCD2": ((2049, 4096, 1, 4608), (2049, 4096, 1, 4224)),
    "Central Spectrum": ((1, 6144, 1793, 2816), (1, 6144, 1792, 2815), (1, 6144, 1625, 2648)),
    "Central Stamp": ((2923, 3222, 2155, 2454), (2923, 3222, 1987, 2286), (2923, 3222, 1987, 2294)),
}

#: PHU ``DETTYPE`` -> GMOS detector name (DRAGONS ``detector_name(pretty=True)``).
_GMOS_DETECTOR_NAMES = {
    "SDSU II CCD": "EEV",
    "SDSU II e2v DD CCD42-90": "e2vDD",
    "S10892": "Hamamatsu-S",
    "S10892-N": "Hamamatsu-N",
}

#: GSAOI array size; a smaller DATASEC is a region of interest.
_GSAOI_ARRAY_PIXELS = 2048

#: Wavefront sensors whose ``<name>_ST`` keyword reads ``guiding`` when they guide.
_WFS_STATUS_KEYWORDS = ("AOWFS", "OIWFS", "PWFS1", "PWFS2")

#: PHU keywords marking processed calibrations, and the specific tag each one adds.
_PROCESSED_KEYWORDS = {
    "PROCBIAS": "PROCESSED_BIAS",
    "GBIAS": "PROCESSED_BIAS",
    "PROCFLAT": "PROCESSED_FLAT",
    "GIFLAT": "PROCESSED_FLAT",
    "PROCFRNG": "PROCESSED_FRINGE",
    "GIFRINGE": "PROCESSED_FRINGE",
    "PROCDARK": "PROCESSED_DARK",
    "PROCARC": "PROCESSED_ARC",
    "PROCSTND": "PROCESSED_STANDARD",
    "PROCILLM": "PROCESSED_ILLUM",
    "PROCPNHL": "PROCESSED_PINHOLE",
}

#: Extension names of DRAGONS-style processed files (raw image extensions have none).
_PROCESSED_EXTNAMES = frozenset({"SCI", "VAR", "DQ"})

_COMPONENT_ID = re.compile(r"_G\d+.*$")
_DATE = re.compile(r"^(\d{4})-([01]\d)-([0-3]\d)(?:T([0-2]?\d:[0-5]?\d:\d\d?(?:\.\d*)?))?")
_TIME = re.compile(r"^([0-2]?\d):([0-5]?\d):(\d\d?(?:\.\d*)?)$")
_MJD_ZERO = dt.datetime(1858, 11, 17)


def descriptors(path: str | os.PathLike) -> dict:
    """Read the descriptors of one GMOS or GSAOI file from its headers.

    Parameters
    ----------
    path : path-like
        A raw (or processed) Gemini multi-extension FITS file.

    Returns
    -------
    dict
        One entry per name of :data:`DESCRIPTOR_NAMES`, in that order. ``filename`` is the
        path as given; ``tags`` is a frozenset; values the headers do not give are ``None``.

    Raises
    ------
    gemred.io.GemredInputError
        If the file is missing, truncated or corrupt, not Gemini data, from an instrument
        other than GMOS-N, GMOS-S or GSAOI, or has no image extensions.
    """
    from gemred.io import check_instrument, read_headers  # astropy, only when a file is read

    headers = read_headers(path)
    phu, exts = headers[0], _pixel_extensions(headers[1:])
    check_instrument(path, phu)
    if not exts:
        msg = f"{path}: no image extensions; a Gemini file has one per amplifier or array"
        raise GemredInputError(msg)
    instrument = _str(phu, "INSTRUME")
    is_gsaoi = instrument == "GSAOI"
    file_tags = frozenset(tags(phu, exts))
    xbin, ybin = (1, 1) if is_gsaoi else _ccdsum(exts[0])
    if is_gsaoi:
        speed = READ_MODES.get(_int(phu, "LNRS"), "Unknown") if "LNRS" in phu else None
        gain = "n/a"
        mode = _str(phu, "READMODE")
        roi = _gsaoi_roi_setting(exts[0])
        detector_name = "GSAOI"
        coadds = _int(phu, "COADDS") or 1
    else:
        ampinteg = _float(phu, "AMPINTEG")
        speed = None if ampinteg is None else gmos.read_speed_setting(ampinteg)
        gain = _gmos_gain_setting(exts, prepared="PREPARED" in file_tags)
        mode = None if gain is None or speed is None else gmos.read_mode(gain, speed)
        roi = _gmos_roi_setting(phu, xbin, ybin)
        detector_name = _GMOS_DETECTOR_NAMES.get(_str(phu, "DETTYPE") or "")
        coadds = 1
    ut = _ut_datetime(phu)
    wfs = _wavefront_sensor(phu)
    values = {
        "filename": os.fspath(path),
        "instrument": instrument,
        "observation_type": _str(phu, "OBSTYPE"),
        "observation_class": _str(phu, "OBSCLASS"),
        "object": _str(phu, "OBJECT"),
        "tags": file_tags,
        "filter_name": _filter_name(_str(phu, "FILTER1"), _str(phu, "FILTER2")),
        "exposure_time": _exposure_time(phu, is_gsaoi),
        "binning": None if xbin is None or ybin is None else f"{xbin}x{ybin}",
        "detector_x_bin": xbin,
        "detector_y_bin": ybin,
        "read_mode": mode,
        "read_speed_setting": speed,
        "gain_setting": gain,
        "detector_roi_setting": roi,
        "ut_datetime": None if ut is None else ut.isoformat(timespec="milliseconds"),
        "ut_date": None if ut is None else ut.date().isoformat(),
        "ut_time": None if ut is None else ut.time().isoformat(timespec="milliseconds"),
        "ra": _float(phu, "RA"),
        "dec": _float(phu, "DEC"),
        "telescope_x_offset": _float(phu, "POFFSET"),
        "telescope_y_offset": _float(phu, "QOFFSET"),
        "position_angle": _position_angle(phu, is_gsaoi),
        "data_label": _str(phu, "DATALAB"),
        "observation_id": _str(phu, "OBSID"),
        "program_id": _str(phu, "GEMPRGID"),
        "detector": _str(phu, "DETECTOR"),
        "detector_name": detector_name,
        "coadds": coadds,
        "wavefront_sensor": wfs,
        "is_guided": wfs is not None,
        "nextensions": len(exts),
    }
    return {name: values[name] for name in DESCRIPTOR_NAMES}


def tags(phu: fits.Header, ext_headers: Sequence[fits.Header]) -> set[str]:
    """DRAGONS tags of a GMOS or GSAOI file, from its primary and extension headers.

    Parameters
    ----------
    phu : astropy.io.fits.Header
        Primary header.
    ext_headers : sequence of astropy.io.fits.Header
        Headers of the image extensions, in file order. Raw extensions are unnamed;
        extensions named ``SCI``/``VAR``/``DQ`` mark a processed file, which is never ``RAW``
        even when its writer left out ``GEM-TLM``.

    Returns
    -------
    set of str
        Tags as DRAGONS assigns them, plus ``SKY`` on unguided GSAOI on-sky frames (the
        offset-to-sky frames of a science sequence). Imaging photometric standards get no
        ``STANDARD`` tag.
    """
    instrument = _str(phu, "INSTRUME") or ""
    obstype = (_str(phu, "OBSTYPE") or "").upper()
    obsclass = _str(phu, "OBSCLASS") or ""
    obj = (_str(phu, "OBJECT") or "").upper()
    found = {"GEMINI"}
    blocked: set[str] = set()

    site = (_str(phu, "OBSERVAT") or _str(phu, "TELESCOP") or "").upper()
    if site == "GEMINI-NORTH":
        found.add("NORTH")
    elif site == "GEMINI-SOUTH":
        found.add("SOUTH")

    if instrument.startswith("GMOS"):
        found |= _gmos_tags(phu, obstype, obj)
        if obstype in ("BIAS", "DARK"):
            blocked |= {"IMAGE", "SPECT"}
    elif instrument == "GSAOI":
        found |= _gsaoi_tags(obstype, obj)
        if obstype == "DARK":
            blocked.add("IMAGE")
    if obstype == "DARK":
        found |= {"DARK", "CAL"}

    if obsclass in ("acq", "acqCal"):
        found.add("ACQUISITION")
    found |= _pointing_tags(phu)

    keys = set(phu.keys())
    if obstype == "BPM" or keys & {"BPMASK", "PROCBPM"}:
        found |= {"BPM", "CAL", "PROCESSED"}
        blocked |= {"IMAGE", "SPECT", "NON_SIDEREAL", "AZEL_TARGET", "GCALFLAT", "LAMPON", "DARK"}
    for keyword, tag in _PROCESSED_KEYWORDS.items():
        if keyword in keys:
            found |= {"PROCESSED", tag}
    if keys & {"PROCFRNG", "GIFRINGE"}:
        found |= {"FRINGE", "CAL"}
    if obstype == "OBJECT" and keys & {"PROCSCI", "GMOSAIC"}:
        found |= {"PROCESSED", "PROCESSED_SCIENCE"}
        blocked.add("RAW")
    found |= _gcal_tags(phu, instrument, processed="PROCESSED" in found)

    extnames = {(_str(h, "EXTNAME") or "").upper() for h in ext_headers}
    if "GEM-TLM" not in keys and not extnames & _PROCESSED_EXTNAMES:
        found.add("RAW")
    found.add("PREPARED" if any("PREPAR" in key for key in keys) else "UNPREPARED")

    if (
        instrument == "GSAOI"
        and obstype == "OBJECT"
        and not found & {"CAL", "ACQUISITION", "PROCESSED"}
        and _wavefront_sensor(phu) is None
    ):
        found.add("SKY")
    return found - blocked


def _gmos_tags(phu: fits.Header, obstype: str, obj: str) -> set[str]:
    """GMOS-specific tags: instrument, bias, flats and imaging/spectroscopy mode."""
    found = {"GMOS"}
    if obstype == "BIAS":
        found |= {"BIAS", "CAL"}
    imaging = _str(phu, "GRATING") == "MIRROR"
    if obstype == "FLAT":
        filters = (_str(phu, "FILTER1") or "", _str(phu, "FILTER2") or "")
        if not (imaging and any("Hartmann" in f for f in filters)):
            found |= {"GCALFLAT", "FLAT", "CAL"}
    if obj == "TWILIGHT":
        found |= {"TWILIGHT", "CAL", "FLAT" if imaging else "SLITILLUM"}
    if obj == "DOMEFLAT":
        found |= {"DOMEFLAT", "CAL", "FLAT"}
    found.add("IMAGE" if imaging else "SPECT")
    masktyp = phu.get("MASKTYP")
    if imaging and masktyp is not None and masktyp != 0:
        found.add("THRUSLIT")
    return found


def _gsaoi_tags(obstype: str, obj: str) -> set[str]:
    """GSAOI-specific tags: instrument, imaging, dome/twilight flats, lamp on/off."""
    found = {"GSAOI", "IMAGE"}
    if obstype == "FLAT":
        found |= {"FLAT", "CAL"}
    if "DOMEFLAT" in obj:
        found |= {"DOMEFLAT", "FLAT", "CAL"}
    elif "TWILIGHT" in obj:
        found |= {"TWILIGHT", "FLAT", "CAL"}
    if obj == "DOMEFLAT":
        found.add("LAMPON")
    elif obj == "DOMEFLAT OFF":
        found.add("LAMPOFF")
    return found


def _gcal_tags(phu: fits.Header, instrument: str, processed: bool) -> set[str]:
    """Gemini-level GCAL tags: GCALFLAT from GCALLAMP; LAMPON/LAMPOFF from GCALSHUT.

    The lamp state is not given for GMOS, nor for processed files.
    """
    lamp = _str(phu, "GCALLAMP")
    found: set[str] = set()
    if lamp is not None and (lamp == "IRhigh" or lamp.startswith("QH")):
        found |= {"GCALFLAT", "FLAT", "CAL"}
    if instrument.startswith("GMOS") or processed:
        return found
    shutter = _str(phu, "GCALSHUT")
    if lamp is not None and (lamp in ("IRhigh", "IRlow") or lamp.startswith("QH")):
        if shutter == "OPEN":
            found |= {"GCAL_IR_ON", "LAMPON"}
        elif shutter == "CLOSED":
            found |= {"GCAL_IR_OFF", "LAMPOFF"}
    elif lamp == "No Value" and shutter == "CLOSED":
        found |= {"GCAL_IR_OFF", "LAMPOFF"}
    return found


def _pointing_tags(phu: fits.Header) -> set[str]:
    """SIDEREAL / NON_SIDEREAL from the tracking frame and rates; AZEL_TARGET / AT_ZENITH."""
    found: set[str] = set()
    frames = {_str(phu, "TRKFRAME"), _str(phu, "FRAME")}
    if frames & {"FK5", "APPT"}:
        ratrack, dectrack = _float(phu, "RATRACK"), _float(phu, "DECTRACK")
        found.add("SIDEREAL" if ratrack == 0 and dectrack == 0 else "NON_SIDEREAL")
    if _str(phu, "FRAME") == "AZEL_TOPO":
        found.add("AZEL_TARGET")
        if _float(phu, "AIRMASS") == 1.0:
            found.add("AT_ZENITH")
    return found


def _wavefront_sensor(phu: fits.Header) -> str | None:
    """Guiding wavefront sensors joined by ``&`` (``GEMS`` when GWFS1CFG is present), or None."""
    sensors = [name for name in _WFS_STATUS_KEYWORDS if _str(phu, f"{name}_ST") == "guiding"]
    if "GWFS1CFG" in phu:
        sensors.append("GEMS")
    return "&".join(sorted(sensors)) if sensors else None


def _filter_name(filter1: str | None, filter2: str | None) -> str | None:
    """DRAGONS' pretty filter name: component ids stripped, open/Clear/ND/blank dropped."""
    names = [_COMPONENT_ID.sub("", f) for f in (filter1, filter2) if f]
    if not names:
        return None
    kept = [name for name in names if not _is_open_position(name)]
    return "&".join(kept) if kept else "open"


def _is_open_position(name: str) -> bool:
    """Filter-wheel positions that do not define the band: open*, Clear, ND*, blank."""
    lower = name.lower()
    return lower.startswith("open") or lower in ("clear", "blank") or name.startswith("ND")


def _exposure_time(phu: fits.Header, is_gsaoi: bool) -> float | None:
    """EXPTIME in seconds; GMOS values below 0 or above 10000 s are not valid (None)."""
    value = _float(phu, "EXPTIME")
    if value is None or value < 0 or (not is_gsaoi and value > 10000):
        return None
    return value


def _position_angle(phu: fits.Header, is_gsaoi: bool) -> float | None:
    """Position angle in degrees: PHU PA for GSAOI, (PA + 180) mod 360 for GMOS."""
    pa = _float(phu, "PA")
    if pa is None or is_gsaoi:
        return pa
    return (pa + 180.0) % 360.0


def _ccdsum(header: fits.Header) -> tuple[int | None, int | None]:
    """(x, y) binning from a GMOS extension's CCDSUM (``'2 2'``)."""
    parts = (_str(header, "CCDSUM") or "").split()
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None, None


def _pixel_extensions(headers: Sequence[fits.Header]) -> list[fits.Header]:
    """One header per amplifier or array: the SCI planes, or every image if none is named SCI.

    Processed files add VAR and DQ planes and tables (OBJCAT, PROVENANCE) that carry none of
    the per-amplifier keywords; a BPM has only DQ planes.
    """
    images = [h for h in headers if (_str(h, "XTENSION") or "IMAGE") == "IMAGE"]
    science = [h for h in images if _str(h, "EXTNAME") == "SCI"]
    return science or images


def _gmos_gain_setting(exts: Sequence[fits.Header], prepared: bool) -> str | None:
    """``low``/``high`` shared by all extensions but at most one (DRAGONS' majority rule).

    Raw files give it through the raw GAIN (< 3 is low); prepared files through GAINSET.
    """
    settings: list[str | None] = []
    for header in exts:
        if prepared:
            settings.append(_str(header, "GAINSET"))
        else:
            gain = _float(header, "GAIN")
            settings.append(None if gain is None else gmos.gain_setting(gain))
    for setting in settings:
        if setting is not None and settings.count(setting) >= len(settings) - 1:
            return setting
    return None


def _gmos_roi_setting(phu: fits.Header, xbin: int | None, ybin: int | None) -> str:
    """Name of the first GMOS ROI (DETRO1X/XS/Y/YS; sizes in binned pixels)."""
    x1, xs, y1, ys = (_int(phu, f"DETRO1{axis}") for axis in ("X", "XS", "Y", "YS"))
    if not (x1 and xs and y1 and ys) or xbin is None or ybin is None:
        return "Undefined"
    roi = (x1, x1 + xs * xbin - 1, y1, y1 + ys * ybin - 1)
    for name, rectangles in _GMOS_ROIS.items():
        if roi in rectangles:
            return name
    return "Custom"


def _gsaoi_roi_setting(header: fits.Header) -> str:
    """``Full Frame`` when DATASEC covers a whole 2048 x 2048 array, else ``Custom``."""
    datasec = _str(header, "DATASEC")
    if datasec is None:
        return "Undefined"
    try:
        section = parse_section(datasec)
    except ValueError:
        return "Undefined"
    full = section.shape == (_GSAOI_ARRAY_PIXELS, _GSAOI_ARRAY_PIXELS)
    return "Full Frame" if full else "Custom"


def _ut_datetime(phu: fits.Header) -> dt.datetime | None:
    """Start of the exposure, following DRAGONS' ``ut_datetime`` keyword order.

    Date from DATE-OBS, then DATE, then UTDATE (a full date-time is used as it is); time
    from UT, TIME-OBS or UTSTART; else MJD-OBS; a date without any time gives midnight.
    """
    date = None
    for key in ("DATE-OBS", "DATE", "UTDATE"):
        match = _DATE.match(_str(phu, key) or "")
        if match is None:
            continue
        try:
            date = dt.datetime(*(int(v) for v in match.group(1, 2, 3)))
        except ValueError:
            continue
        if match.group(4):
            return date + _time_of_day(match.group(4))
        break
    if date is not None:
        for key in ("UT", "TIME-OBS", "UTSTART"):
            text = _str(phu, key) or ""
            if _TIME.match(text):
                return date + _time_of_day(text)
    mjd = _float(phu, "MJD-OBS")
    if mjd is not None and mjd > 1:
        return _MJD_ZERO + dt.timedelta(days=mjd)
    return date


def _time_of_day(text: str) -> dt.timedelta:
    """``'HH:MM:SS[.fff]'`` as a time since midnight."""
    hours, minutes, seconds = text.split(":")
    return dt.timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def _str(header: fits.Header, key: str) -> str | None:
    """Keyword value as a stripped string; None if absent, undefined or blank."""
    from astropy.io.fits.card import Undefined  # loaded with the header

    value = header.get(key)
    if value is None or isinstance(value, Undefined):
        return None
    text = str(value).strip()
    return text or None


def _float(header: fits.Header, key: str) -> float | None:
    """Keyword value as a float; None if absent, not a number or a boolean."""
    value = header.get(key)
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(header: fits.Header, key: str) -> int | None:
    """Keyword value as an integer; None if absent or not a whole number."""
    value = _float(header, key)
    if value is None or not value.is_integer():
        return None
    return int(value)
