"""Simulated raw GSAOI imaging: the DRAGONS GSAOI tutorial dataset (NGC 5128 with offset sky).

Geometry
--------
Four HAWAII-2RG arrays placed by Gemini's static distortion polynomials
(:func:`gemred.instruments.gsaoi.static_to_pixel`): a star at standard coordinates
``(xi, eta)`` (arcsec, East and North) about the telescope pointing lands on the static
plane at ``(xi, eta)`` (``PA = 0``, mirrored parity: +x is East, +y is North), and from there
on the array pixel the polynomial gives. Telescope offsets ``(P, Q)`` move the pointing by
``P`` to the East and ``Q`` to the North, so sources move by ``(-P, -Q) / pixel scale`` on
the detector. Each extension carries the best *linear* TAN WCS of its whole array (fitted
to the distortion model), so ignoring the distortion leaves errors of up to ~9 pixels at
the array corners. ``CRVAL`` is the pointing (the origin of the static plane) in every
extension; ``CRPIX`` is where the linear fit puts it, as DRAGONS' WCS check expects.

``size='small'`` keeps a 256 x 256 window at the *outer* corner of each array (the four
corners of the field, where distortion is largest), with DATASEC, CCDSEC, DETSEC and the
WCS describing exactly the pixels kept. All patterns (flat response, bad pixels) are
drawn on the kept pixels only.

Signal model, per pixel and array: true electrons = (sky + stars + dome lamp or thermal)
x flat response x exposure time + hot-pixel dark current, then Poisson noise and cosmic
rays; the array reads ``delinearize(electrons)`` (GSAOI's non-linearity), converted to ADU
by the gain, plus Gaussian read noise for the ``LNRS`` read mode, clipped at the array's
saturation level. Data are float32 ADU with no pedestal and no overscan, as in Fowler
differences. The AO PSF is a Gaussian core (FWHM 0.09", 30 % of the flux) plus a Moffat
halo (FWHM 0.45", beta 3); the core is drawn with sub-pixel stamps and the halo by FFT
convolution.

Truth files (``out/truth``): ``stars.csv``, ``frames.csv``, ``stars_pixels.csv``,
``refcat.csv`` (a reference catalogue for absolute astrometry), ``flat_response_Kshort.fits``
and ``hot_pixels_e_per_s.fits`` (see :func:`simulate_gsaoi_offsetsky`).
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
from astropy.io import fits

from gemred.instruments import gsaoi
from gemred.sections import Section, format_section, parse_section
from gemred.simulation import rawfile
from gemred.simulation.sky import (
    PSF,
    Gaussian,
    Moffat,
    add_cosmic_rays,
    add_stars,
    from_tangent_plane,
    star_catalogue,
    tangent_plane,
)

__all__ = [
    "WINDOW_SIZES",
    "AO_PSF",
    "FrameSpec",
    "Detector",
    "array_regions",
    "observing_plan",
    "star_fields",
    "make_detector",
    "star_pixels",
    "render_electrons",
    "expose",
    "frame_headers",
    "simulate_gsaoi_offsetsky",
]

#: Side (pixels) of the square kept per array: the whole array, or a window at its outer corner.
WINDOW_SIZES = {"full": 2048, "small": 256}
#: GeMS-corrected Kshort PSF: 30 % in a diffraction-limited core, the rest in a seeing halo.
AO_PSF = PSF(
    (
        (0.3, Gaussian(0.09 / gsaoi.PIXEL_SCALE)),
        (0.7, Moffat(0.45 / gsaoi.PIXEL_SCALE, 3.0)),
    )
)
#: PSF components at least this wide (FWHM, pixels) are drawn by FFT convolution.
_FFT_FWHM = 10.0
#: Catalogue zero point: array 2 (H2RG-032-064); the other arrays' QE goes into the flat.
ZERO_POINT = gsaoi.ZERO_POINTS["Kshort"][1]
FILTER1 = "Kshort_G1106"
WAVELENGTH_ANGSTROM = 21500.0

TARGET = ("NGC5128", 201.365063, -43.019113)
STANDARD = ("9132", 208.3847, -33.6452)  # synthetic position for the standard's field
STANDARD_MAG = 13.5
#: Telescope offset (P, Q) of the offset-sky position, arcsec (5 arcmin from the target).
SKY_OFFSET = (-180.0, 240.0)
#: Dither step (arcsec) on target, on sky and on the standard: <= 1.5" in small files so that
#: the same stars stay in the 5" windows.
DITHER_STEP = {"full": 3.0, "small": 1.0}
#: Stars per arcsec^2 of each field: (crowded target, sparse offset-sky field, standard's field).
#: Small files are denser so that every 256 x 256 on-target window holds >= 30 stars. The sky
#: field, chosen for being nearly blank, is only 2.5 times denser there: every sky made from
#: it carries its unresolved faint stars (median 0.1 to 0.5 e per pixel here; 2 to 4 e at
#: 1.2 stars per arcsec^2, which no mask or sky level undoes), while its windows keep a few
#: bright stars for the masks to be tested on.
STAR_DENSITY = {
    "full": {"target": 0.35, "sky": 0.1, "standard": 0.01},
    "small": {"target": 4.0, "sky": 0.25, "standard": 0.2},
}
MAG_RANGE = {"target": (11.0, 22.0), "sky": (11.0, 22.0), "standard": (16.0, 22.0)}
#: No catalogue star within this distance (arcsec) of the standard star.
STANDARD_ISOLATION = 2.5
SKY_E_PER_S = float(10 ** (-0.4 * (gsaoi.SKY_MAG_PER_ARCSEC2["Kshort"] - ZERO_POINT)) * gsaoi.PIXEL_SCALE**2)
DOME_LAMP_E_PER_S = 2600.0
THERMAL_E_PER_S = 55.0
FLAT_EXPTIME = 13.0
#: Cosmic-ray events per second per full 2048 x 2048 array.
COSMIC_RAY_RATE = 0.5
BPM_NAME = "bpm_20121104_gsaoi_gsaoi_11_full_4amp.fits"
UNILLUMINATED = 4
DISTORTION_MODEL = "gemred.instruments.gsaoi.DISTORTION"
#: Sequence of the 16 science frames: O = on target, S = offset sky.
SCIENCE_ROLES = "OOSOSOSOSOSOSOSO"
#: The on-target frame whose WCS is wrong by BAD_WCS_ARCSEC (prepare:bad_wcs=fix needed).
BAD_WCS_FRAME = "S20170505S0108"
BAD_WCS_ARCSEC = 40.0
_DITHERS_9 = ((0, 0), (1, 1), (-1, 1), (-1, -1), (1, -1), (0, 1), (1, 0), (0, -1), (-1, 0))
_DITHERS_4 = ((-1, -1), (1, -1), (-1, 1), (1, 1))


@dataclass(frozen=True)
class FrameSpec:
    """One simulated exposure: identity, timing, pointing and the light falling on the detector.

    ``pointing`` is the true position of the static-plane origin (the telescope pointing,
    RA/Dec degrees); ``wcs_pointing`` is the ``CRVAL`` written in the header (the commanded
    pointing, off by ``BAD_WCS_ARCSEC`` for the bad-WCS frame). ``field`` is ``'target'``,
    ``'sky'``, ``'standard'`` or ``None`` (dome flats, no stars).
    """

    filename: str
    role: str
    field: str | None
    obstype: str
    obsclass: str
    object: str
    program: str
    obsid: str
    datalab: str
    start: dt.datetime
    exptime: float
    lnrs: int
    ra: float
    dec: float
    p_offset: float
    q_offset: float
    pointing: tuple[float, float]
    wcs_pointing: tuple[float, float]
    pointing_error_arcsec: float
    bad_wcs: bool
    sky_e_per_s: float
    lamp_e_per_s: float
    guided: bool
    airmass: float


@dataclass(frozen=True)
class Detector:
    """Static properties of the kept pixels of the four arrays.

    ``response`` is the flat-field response (normalised so its median over the good pixels
    of all four arrays is 1; 0 where no light arrives), ``dark_e_per_s`` the dark current of
    hot pixels and bad columns, ``bad`` the pixels the BPM flags.
    """

    regions: tuple[Section, ...]
    response: tuple[np.ndarray, ...]
    dark_e_per_s: tuple[np.ndarray, ...]
    bad: tuple[np.ndarray, ...]


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator for one purpose, independent of every other purpose for the same seed."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def _check_size(size: str) -> int:
    if size not in WINDOW_SIZES:
        msg = f"size must be one of {sorted(WINDOW_SIZES)}, not {size!r}"
        raise ValueError(msg)
    return WINDOW_SIZES[size]


def array_regions(size: str = "small") -> tuple[Section, ...]:
    """The pixels kept of each array (array coordinates, 0-based, half-open), in extension order.

    ``'full'`` keeps whole arrays; ``'small'`` a 256 x 256 window at the array corner
    farthest from the centre of the field, so the four windows sit at the field corners.

    Parameters
    ----------
    size : {'small', 'full'}
        Preset size.

    Returns
    -------
    tuple of Section
        One region per array, extension 1 first.
    """
    n = _check_size(size)
    full = gsaoi.ARRAY_SHAPE[0]
    corners = np.array([[0, 0], [full - 1, 0], [0, full - 1], [full - 1, full - 1]], dtype=float)
    static = [np.stack(gsaoi.pixel_to_static(i, corners[:, 0], corners[:, 1]), axis=1) for i in range(4)]
    centre = np.mean(np.concatenate(static), axis=0)
    regions = []
    for s in static:
        cx, cy = corners[np.argmax(np.hypot(*(s - centre).T))]
        x1 = 0 if cx == 0 else full - n
        y1 = 0 if cy == 0 else full - n
        regions.append(Section(x1, x1 + n, y1, y1 + n))
    return tuple(regions)


# ----------------------------------------------------------------------------- observing plan
def _offset(ra: float, dec: float, east: float, north: float) -> tuple[float, float]:
    r, d = from_tangent_plane(east, north, ra, dec)
    return float(r), float(d)


#: Reference catalogue (``truth/refcat.csv``): stars brighter than this K magnitude...
REFCAT_MAG_LIMIT = 20.0
#: ... with positions scattered by this much per axis (arcsec), as a Gaia-like catalogue.
REFCAT_SCATTER_ARCSEC = 0.005


def reference_catalog(stars: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A reference catalogue made from the truth: ``RAJ2000``, ``DEJ2000``, ``Kmag``.

    The stars brighter than :data:`REFCAT_MAG_LIMIT`, their positions perturbed by
    :data:`REFCAT_SCATTER_ARCSEC` per axis, as a user would download one for the field.
    """
    bright = stars[stars["mag"] < REFCAT_MAG_LIMIT]
    rng = _rng(seed, "refcat")
    d_ra, d_dec = rng.normal(0.0, REFCAT_SCATTER_ARCSEC / 3600.0, (2, len(bright)))
    return pd.DataFrame(
        {
            "RAJ2000": bright["ra_deg"].to_numpy() + d_ra / np.cos(np.radians(bright["dec_deg"].to_numpy())),
            "DEJ2000": bright["dec_deg"].to_numpy() + d_dec,
            "Kmag": bright["mag"].to_numpy(),
        }
    )


def _random_offset(rng: np.random.Generator, low: float, high: float) -> tuple[float, float, float]:
    """A displacement (east, north, length) of random direction and length in [low, high]."""
    length = rng.uniform(low, high)
    angle = rng.uniform(0.0, 2 * np.pi)
    return length * np.cos(angle), length * np.sin(angle), length


def _sky_rate(start: dt.datetime, t0: dt.datetime, phase: float, level: float) -> float:
    """Sky level drifting by a few per cent over the night."""
    minutes = (start - t0).total_seconds() / 60.0
    return float(level * (1.0 + 0.03 * np.sin(2 * np.pi * minutes / 40.0 + phase) + 0.0005 * minutes))


def observing_plan(size: str = "small", seed: int = 0) -> list[FrameSpec]:
    """All 50 exposures of the GSAOI tutorial dataset, in file-name order.

    The standard star (4 x 30 s, 2017-05-04) is observed full frame (the real one may have
    used the central 1k ROI; one geometry keeps one code path), offset so that it falls at
    the centre of array 4's kept region. The dome flats (15 lamp-on, 15 lamp-off, 13 s)
    come next; then the 16 science frames (60 s), nine on target and seven unguided on the
    offset-sky position, interleaved as :data:`SCIENCE_ROLES`.

    Parameters
    ----------
    size : {'small', 'full'}
        Sets the dither step and where the standard star is put.
    seed : int
        Random seed (pointing errors, sky and lamp variations).

    Returns
    -------
    list of FrameSpec
    """
    regions = array_regions(size)
    rng = _rng(seed, "plan")
    step = DITHER_STEP[size]
    frames = _standard_frames(regions, step, rng)
    frames += _flat_frames(rng)
    frames += _science_frames(step, rng)
    return frames


def _pointed(
    rng: np.random.Generator, ra: float, dec: float, p: float, q: float, *, error: bool, bad: bool
) -> dict[str, object]:
    """True and header pointing for offsets (P, Q); optional pointing error and bad WCS."""
    nominal = _offset(ra, dec, p, q)
    east, north, err = _random_offset(rng, 0.1, 0.3) if error else (0.0, 0.0, 0.0)
    wcs = nominal
    if bad:
        be, bn, _ = _random_offset(rng, BAD_WCS_ARCSEC, BAD_WCS_ARCSEC)
        wcs = _offset(*nominal, be, bn)
    return {
        "p_offset": p,
        "q_offset": q,
        "pointing": _offset(*nominal, east, north),
        "wcs_pointing": wcs,
        "pointing_error_arcsec": float(err),
        "bad_wcs": bad,
    }


def _standard_frames(regions: Sequence[Section], step: float, rng: np.random.Generator) -> list[FrameSpec]:
    name, ra, dec = STANDARD
    reg = regions[3]
    sx, sy = gsaoi.pixel_to_static(3, (reg.x1 + reg.x2 - 1) / 2, (reg.y1 + reg.y2 - 1) / 2)
    t0 = dt.datetime(2017, 5, 4, 5, 40, 0)
    phase = rng.uniform(0, 2 * np.pi)
    frames = []
    for k, (dp, dq) in enumerate(_DITHERS_4):
        start = t0 + dt.timedelta(seconds=k * (30.0 + 15.0))
        p, q = round(float(-sx) + dp * step, 2), round(float(-sy) + dq * step, 2)
        frames.append(
            FrameSpec(
                filename=f"S20170504S{114 + k:04d}",
                role="standard",
                field="standard",
                obstype="OBJECT",
                obsclass="partnerCal",
                object=name,
                program="GS-CAL20170504",
                obsid="GS-CAL20170504-7",
                datalab=f"GS-CAL20170504-7-{k + 1:03d}",
                start=start,
                exptime=30.0,
                lnrs=8,
                ra=ra,
                dec=dec,
                **_pointed(rng, ra, dec, p, q, error=True, bad=False),
                sky_e_per_s=_sky_rate(start, t0, phase, 0.9 * SKY_E_PER_S),
                lamp_e_per_s=0.0,
                guided=True,
                airmass=round(1.08 + 0.002 * k, 3),
            )
        )
    return frames


def _flat_frames(rng: np.random.Generator) -> list[FrameSpec]:
    ra, dec = 150.0, -30.0  # where the telescope looks at the dome screen; no stars
    frames = []
    for lamp, first, obs, t0 in (
        (True, 30, 1, dt.datetime(2017, 5, 4, 21, 10, 0)),
        (False, 60, 2, dt.datetime(2017, 5, 4, 21, 40, 0)),
    ):
        for k in range(15):
            thermal = THERMAL_E_PER_S * (1.0 + 0.01 * rng.standard_normal())
            level = thermal + (DOME_LAMP_E_PER_S * (1.0 + 0.002 * rng.standard_normal()) if lamp else 0.0)
            frames.append(
                FrameSpec(
                    filename=f"S20170505S{first + k:04d}",
                    role="lamp_on" if lamp else "lamp_off",
                    field=None,
                    obstype="FLAT",
                    obsclass="dayCal",
                    object="Domeflat" if lamp else "Domeflat OFF",
                    program="GS-CAL20170505",
                    obsid=f"GS-CAL20170505-{obs}",
                    datalab=f"GS-CAL20170505-{obs}-{k + 1:03d}",
                    start=t0 + dt.timedelta(seconds=k * (FLAT_EXPTIME + 10.0)),
                    exptime=FLAT_EXPTIME,
                    lnrs=2,
                    ra=ra,
                    dec=dec,
                    **_pointed(rng, ra, dec, 0.0, 0.0, error=False, bad=False),
                    sky_e_per_s=0.0,
                    lamp_e_per_s=float(level),
                    guided=False,
                    airmass=1.305,
                )
            )
    return frames


def _science_frames(step: float, rng: np.random.Generator) -> list[FrameSpec]:
    name, ra, dec = TARGET
    t0 = dt.datetime(2017, 5, 5, 3, 5, 0)
    phase = rng.uniform(0, 2 * np.pi)
    start, previous = t0, None
    n_obj = n_sky = 0
    frames = []
    for k, role in enumerate(SCIENCE_ROLES):
        filename = f"S20170505S{95 + k:04d}"
        if role == "O":
            dp, dq = _DITHERS_9[n_obj]
            base, n_obj = (0.0, 0.0), n_obj + 1
        else:
            dp, dq = _DITHERS_9[n_sky + 1]
            base, n_sky = SKY_OFFSET, n_sky + 1
        p, q = round(base[0] + dp * step, 2), round(base[1] + dq * step, 2)
        if previous is not None:
            start += dt.timedelta(seconds=60.0 + (15.0 if role == previous else 45.0))
        previous = role
        frames.append(
            FrameSpec(
                filename=filename,
                role="science_object" if role == "O" else "science_sky",
                field="target" if role == "O" else "sky",
                obstype="OBJECT",
                obsclass="science",
                object=name,
                program="GS-2017A-Q-29",
                obsid="GS-2017A-Q-29-13",
                datalab=f"GS-2017A-Q-29-13-{k + 1:03d}",
                start=start,
                exptime=60.0,
                lnrs=8,
                ra=ra,
                dec=dec,
                **_pointed(rng, ra, dec, p, q, error=k > 0, bad=filename == BAD_WCS_FRAME),
                sky_e_per_s=_sky_rate(start, t0, phase, SKY_E_PER_S),
                lamp_e_per_s=0.0,
                guided=role == "O",
                airmass=round(1.035 + 0.0004 * k, 4),
            )
        )
    return frames


# ----------------------------------------------------------------------------- stars
@lru_cache(maxsize=16)
def _static_bounds(array_index: int, region: Section) -> tuple[float, float, float, float]:
    """Bounding box (arcsec) of a region's pixels on the static plane."""
    t = np.linspace(0.0, 1.0, 33)
    xs = np.concatenate(
        [
            region.x1 + t * (region.x2 - 1 - region.x1),
            np.full(33, region.x1),
            region.x1 + t * (region.x2 - 1 - region.x1),
            np.full(33, region.x2 - 1),
        ]
    )
    ys = np.concatenate(
        [
            np.full(33, region.y1),
            region.y1 + t * (region.y2 - 1 - region.y1),
            np.full(33, region.y2 - 1),
            region.y1 + t * (region.y2 - 1 - region.y1),
        ]
    )
    sx, sy = gsaoi.pixel_to_static(array_index, xs, ys)
    return float(sx.min()), float(sx.max()), float(sy.min()), float(sy.max())


def _margin_pixels() -> int:
    """How far outside a region a star still puts light into it (the widest PSF stamp)."""
    return max(int(np.ceil(p.radius_enclosing(AO_PSF.enclosed))) for _, p in AO_PSF.components)


def star_fields(plan: Sequence[FrameSpec], size: str = "small", seed: int = 0) -> pd.DataFrame:
    """Truth stars of the three fields: crowded target, sparser sky field, standard star.

    Each field's catalogue covers every frame pointed at it (kept regions plus the PSF
    reach); magnitudes follow ``10**(0.3 m)`` counts, fluxes use the array-2 zero point.
    The standard star (``mag`` :data:`STANDARD_MAG`) sits at the standard's ``RA``/``DEC``
    with no other star within :data:`STANDARD_ISOLATION` arcsec.

    Parameters
    ----------
    plan : sequence of FrameSpec
        The frames (see :func:`observing_plan`).
    size : {'small', 'full'}
        Sets the kept regions and the star densities.
    seed : int
        Random seed.

    Returns
    -------
    pandas.DataFrame
        Columns ``ra_deg``, ``dec_deg``, ``mag``, ``flux_e_per_s``, ``field``.
    """
    regions = array_regions(size)
    rng = _rng(seed, "stars")
    pad = _margin_pixels() * gsaoi.PIXEL_SCALE * 1.05 + 0.5
    tables = []
    for field in ("target", "sky", "standard"):
        frames = [f for f in plan if f.field == field]
        ref = frames[0].pointing
        boxes = []
        for frame in frames:
            dx, dy = tangent_plane(frame.pointing[0], frame.pointing[1], *ref)
            for i, region in enumerate(regions):
                x1, x2, y1, y2 = _static_bounds(i, region)
                boxes.append((x1 + dx, x2 + dx, y1 + dy, y2 + dy))
        b = np.array(boxes)
        x1, x2, y1, y2 = b[:, 0].min() - pad, b[:, 1].max() + pad, b[:, 2].min() - pad, b[:, 3].max() + pad
        half = max(x2 - x1, y2 - y1) / 2
        ra0, dec0 = _offset(*ref, (x1 + x2) / 2, (y1 + y2) / 2)
        n = int(rng.poisson(STAR_DENSITY[size][field] * (2 * half) ** 2))
        table = star_catalogue(rng, ra0, dec0, half, n, MAG_RANGE[field], ZERO_POINT)
        if field == "standard":
            ra, dec = frames[0].ra, frames[0].dec
            xi, eta = tangent_plane(table["ra_deg"].to_numpy(), table["dec_deg"].to_numpy(), ra, dec)
            table = table[np.hypot(xi, eta) > STANDARD_ISOLATION]
            star = {
                "ra_deg": ra,
                "dec_deg": dec,
                "mag": STANDARD_MAG,
                "flux_e_per_s": 10 ** (-0.4 * (STANDARD_MAG - ZERO_POINT)),
            }
            table = pd.concat([pd.DataFrame([star]), table], ignore_index=True)
        tables.append(table.assign(field=field))
    return pd.concat(tables, ignore_index=True)


def star_pixels(
    frame: FrameSpec, stars: pd.DataFrame, regions: Sequence[Section], *, margin: float = 0.0
) -> pd.DataFrame:
    """Where the stars fall on the kept pixels in ``frame`` (true pointing + static distortion).

    Parameters
    ----------
    frame : FrameSpec
        The exposure; dome flats (``field`` None) have no stars.
    stars : pandas.DataFrame
        Catalogue with ``ra_deg``, ``dec_deg``.
    regions : sequence of Section
        Kept region of each array.
    margin : float
        Also return stars up to this many pixels outside a region.

    Returns
    -------
    pandas.DataFrame
        ``star`` (row position in ``stars``), ``ext`` (1-4), ``x``, ``y``: 0-based pixel in the
        extension's data array (pixel centres at integers).
    """
    if frame.field is None:
        empty = np.array([], dtype=np.int64)
        return pd.DataFrame({"star": empty, "ext": empty, "x": empty * 0.0, "y": empty * 0.0})
    xi, eta = tangent_plane(stars["ra_deg"].to_numpy(), stars["dec_deg"].to_numpy(), *frame.pointing)
    pad = margin * gsaoi.PIXEL_SCALE * 1.05 + 0.5
    parts = []
    for i, region in enumerate(regions):
        x1, x2, y1, y2 = _static_bounds(i, region)
        near = np.flatnonzero((xi > x1 - pad) & (xi < x2 + pad) & (eta > y1 - pad) & (eta < y2 + pad))
        x, y = gsaoi.static_to_pixel(i, xi[near], eta[near])
        x, y = x - region.x1, y - region.y1
        ny, nx = region.shape
        keep = (x >= -0.5 - margin) & (x < nx - 0.5 + margin) & (y >= -0.5 - margin) & (y < ny - 0.5 + margin)
        parts.append(pd.DataFrame({"star": near[keep], "ext": i + 1, "x": x[keep], "y": y[keep]}))
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------- rendering
@lru_cache(maxsize=8)
def _kernel_fft(profile: Moffat, shape: tuple[int, int]) -> np.ndarray:
    """Real FFT of a unit-sum, pixel-sampled profile, centred on pixel (0, 0) with wrap-around."""
    radius = int(np.ceil(profile.radius_enclosing(AO_PSF.enclosed)))
    d = np.arange(-radius, radius + 1)
    kernel = profile(d[:, None] ** 2 + d[None, :] ** 2)
    full = np.zeros(shape)
    full[np.ix_(d % shape[0], d % shape[1])] = kernel / kernel.sum()
    return scipy.fft.rfft2(full, workers=-1)


def _add_wide(image: np.ndarray, x: np.ndarray, y: np.ndarray, counts: np.ndarray, profile: Moffat) -> None:
    """Add a broad profile by FFT convolution of bilinearly split point sources (exact centroids)."""
    radius = int(np.ceil(profile.radius_enclosing(AO_PSF.enclosed)))
    ny, nx = image.shape
    shape = tuple(scipy.fft.next_fast_len(n + 2 * radius, real=True) for n in (ny, nx))
    xs, ys = x + radius, y + radius
    ok = (xs >= 0) & (xs < shape[1] - 1) & (ys >= 0) & (ys < shape[0] - 1)
    xs, ys, counts = xs[ok], ys[ok], counts[ok]
    ix, iy = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - ix, ys - iy
    points = np.zeros(shape)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(points, (iy + dy, ix + dx), counts * wx * wy)
    spectrum = scipy.fft.rfft2(points, workers=-1) * _kernel_fft(profile, shape)
    spread = scipy.fft.irfft2(spectrum, s=shape, workers=-1)
    image += spread[radius : radius + ny, radius : radius + nx]


def _add_psf(image: np.ndarray, x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> None:
    for weight, profile in AO_PSF.components:
        if profile.fwhm >= _FFT_FWHM and isinstance(profile, Moffat):
            _add_wide(image, x, y, weight * counts, profile)
        else:
            add_stars(image, x, y, weight * counts, PSF(((1.0, profile),), AO_PSF.enclosed))


def render_electrons(
    frame: FrameSpec,
    stars: pd.DataFrame,
    regions: Sequence[Section],
    *,
    response: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Noise-free electrons collected by each array's kept pixels during ``frame``.

    Sky, dome lamp / thermal background and stars (:data:`AO_PSF`), times the exposure time,
    optionally times the flat-field response. Dark current, Poisson noise, cosmic rays and
    the detector response to charge are added by :func:`expose`.

    Parameters
    ----------
    frame : FrameSpec
        The exposure (true pointing, exposure time, sky and lamp rates).
    stars : pandas.DataFrame
        Catalogue with ``ra_deg``, ``dec_deg``, ``flux_e_per_s``.
    regions : sequence of Section
        Kept region of each array.
    response : sequence of numpy.ndarray, optional
        Flat response per array; None renders flat-free (response 1).

    Returns
    -------
    list of numpy.ndarray
        Float64 electrons per array, shaped like the regions.
    """
    placed = star_pixels(frame, stars, regions, margin=_margin_pixels())
    flux = stars["flux_e_per_s"].to_numpy()
    images = []
    for i, region in enumerate(regions):
        image = np.full(region.shape, (frame.sky_e_per_s + frame.lamp_e_per_s) * frame.exptime)
        on = placed[placed["ext"] == i + 1]
        if len(on):
            counts = flux[on["star"].to_numpy()] * frame.exptime
            _add_psf(image, on["x"].to_numpy(), on["y"].to_numpy(), counts)
        if response is not None:
            image *= response[i]
        images.append(image)
    return images


# ----------------------------------------------------------------------------- detector
def make_detector(size: str = "small", seed: int = 0) -> Detector:
    """Flat response, hot pixels and bad pixels of the kept regions of the four arrays.

    Response = relative QE of the array (from the zero points, array 2 = 1) x vignetting
    (5 % at 60" from the pointing centre) x a 1 % gradient along each array x 1.5 %
    pixel-to-pixel noise. Bad pixels: the outer 4 rows and columns of every array
    (unilluminated, response 0), 0.1 % dead pixels (response 0), 0.04 % hot pixels
    (20-2000 e-/s), two partial bad columns per array (response 0.25, 5 e-/s). The response
    is divided by its median over the good pixels of all four arrays.

    Parameters
    ----------
    size : {'small', 'full'}
        Kept regions (see :func:`array_regions`).
    seed : int
        Random seed.

    Returns
    -------
    Detector
    """
    regions = array_regions(size)
    rng = _rng(seed, "detector")
    zps = gsaoi.ZERO_POINTS["Kshort"]
    full = gsaoi.ARRAY_SHAPE[0]
    responses, darks, bads = [], [], []
    for i, region in enumerate(regions):
        ny, nx = region.shape
        yy, xx = np.mgrid[region.y1 : region.y2, region.x1 : region.x2]
        sx, sy = gsaoi.pixel_to_static(i, xx, yy)
        qe = 10 ** (-0.4 * (ZERO_POINT - zps[i]))
        response = qe * (1.0 - 0.05 * (sx**2 + sy**2) / 60.0**2) * (1.0 + 0.01 * (xx - full / 2) / full)
        response *= 1.0 + 0.015 * rng.standard_normal((ny, nx))
        dark = np.zeros((ny, nx))
        edge = UNILLUMINATED
        unlit = (xx < edge) | (xx >= full - edge) | (yy < edge) | (yy >= full - edge)
        dead = rng.random((ny, nx)) < 1e-3
        hot = rng.random((ny, nx)) < 4e-4
        dark[hot] = 10 ** rng.uniform(np.log10(20.0), np.log10(2000.0), int(hot.sum()))
        column = np.zeros((ny, nx), dtype=bool)
        for _ in range(2):
            cx = rng.integers(edge, nx - edge)
            column[rng.integers(0, ny // 2) :, cx] = True
        response[column] *= 0.25
        dark[column] += 5.0
        response[unlit | dead] = 0.0
        responses.append(response)
        darks.append(dark)
        bads.append(unlit | dead | hot | column)
    norm = np.median(np.concatenate([r[~b] for r, b in zip(responses, bads, strict=True)]))
    return Detector(regions, tuple(r / norm for r in responses), tuple(darks), tuple(bads))


@lru_cache(maxsize=4)
def _delinearize_table(array_index: int) -> tuple[np.ndarray, np.ndarray]:
    """``gsaoi.delinearize`` tabulated every 8 e- (linear interpolation errs by < 1e-4 e-).

    The table reaches 1.5 x saturation; larger counts map to its last value, still above
    saturation, so they are clipped like the rest.
    """
    info = gsaoi.ARRAYS[array_index]
    true = np.arange(0.0, 1.5 * info.saturation_adu * info.gain + 8.0, 8.0)
    return true, gsaoi.delinearize(true, array_index)


def expose(
    electrons: Sequence[np.ndarray], frame: FrameSpec, detector: Detector, rng: np.random.Generator
) -> list[np.ndarray]:
    """Turn collected electrons into raw GSAOI data (float32 ADU) for each array.

    Adds dark current and Poisson noise, cosmic rays, then GSAOI's non-linearity
    (``gsaoi.delinearize``, through a fine table for speed), the gain, read noise for the
    frame's ``LNRS`` (one coadd) and clipping at the saturation level.

    Parameters
    ----------
    electrons : sequence of numpy.ndarray
        Output of :func:`render_electrons` with the detector's response.
    frame : FrameSpec
        The exposure.
    detector : Detector
        Dark current per pixel.
    rng : numpy.random.Generator
        Random source.

    Returns
    -------
    list of numpy.ndarray
        float32 ADU per array.
    """
    full_pixels = gsaoi.ARRAY_SHAPE[0] * gsaoi.ARRAY_SHAPE[1]
    out = []
    for i, (image, dark) in enumerate(zip(electrons, detector.dark_e_per_s, strict=True)):
        info = gsaoi.ARRAYS[i]
        counts = rng.poisson(image + dark * frame.exptime).astype(np.float64)
        n_events = rng.poisson(COSMIC_RAY_RATE * frame.exptime * counts.size / full_pixels)
        add_cosmic_rays(counts, rng, int(n_events))
        true, raw = _delinearize_table(i)
        adu = np.interp(counts, true, raw) / info.gain
        sigma = gsaoi.read_noise(i, frame.lnrs) / info.gain
        adu += rng.standard_normal(adu.shape, dtype=np.float32) * sigma
        out.append(np.minimum(adu, info.saturation_adu).astype(np.float32))
    return out


# ----------------------------------------------------------------------------- headers
@lru_cache(maxsize=4)
def _linear_fit(array_index: int) -> tuple[tuple[float, float], np.ndarray]:
    """Best affine approximation of an array's distortion: static origin (0-based px), CD (deg/px)."""
    g = np.linspace(0.0, gsaoi.ARRAY_SHAPE[0] - 1.0, 65)
    xx, yy = (a.ravel() for a in np.meshgrid(g, g))
    sx, sy = gsaoi.pixel_to_static(array_index, xx, yy)
    design = np.column_stack([np.ones_like(xx), xx, yy])
    (ax, bx, cx), *_ = np.linalg.lstsq(design, sx, rcond=None)
    (ay, by, cy), *_ = np.linalg.lstsq(design, sy, rcond=None)
    matrix = np.array([[bx, cx], [by, cy]])
    x0, y0 = np.linalg.solve(matrix, [-ax, -ay])
    return (float(x0), float(y0)), matrix / 3600.0


def _sections(array_index: int, region: Section) -> dict[str, str]:
    det = parse_section(gsaoi.ARRAYS[array_index].detsec)
    ny, nx = region.shape
    return {
        "DATASEC": format_section((0, nx, 0, ny)),
        "CCDSEC": format_section(region),
        "DETSEC": format_section(
            (det.x1 + region.x1, det.x1 + region.x2, det.y1 + region.y1, det.y1 + region.y2)
        ),
    }


def _ext_header(frame: FrameSpec, array_index: int, region: Section) -> fits.Header:
    info = gsaoi.ARRAYS[array_index]
    hdr = fits.Header()
    hdr["ARRAYID"] = (info.array_id, "Array identification")
    for key, value in _sections(array_index, region).items():
        hdr[key] = value
    hdr["GAIN"] = (info.gain, "Gain (e-/ADU)")
    hdr["RDNOISE"] = (round(gsaoi.read_noise(array_index, frame.lnrs), 2), "Read noise (e-)")
    (x0, y0), cd = _linear_fit(array_index)
    hdr["WCSAXES"] = 2
    hdr["CTYPE1"] = "RA---TAN"
    hdr["CTYPE2"] = "DEC--TAN"
    hdr["CUNIT1"] = "deg"
    hdr["CUNIT2"] = "deg"
    hdr["CRPIX1"] = (x0 + 1.0 - region.x1, "Pointing position (linear fit), 1-based")
    hdr["CRPIX2"] = (y0 + 1.0 - region.y1, "Pointing position (linear fit), 1-based")
    hdr["CRVAL1"] = frame.wcs_pointing[0]
    hdr["CRVAL2"] = frame.wcs_pointing[1]
    for (row, col), value in np.ndenumerate(cd):
        hdr[f"CD{row + 1}_{col + 1}"] = float(value)
    hdr["RADESYS"] = "FK5"
    hdr["EQUINOX"] = 2000.0
    return hdr


def _phu(frame: FrameSpec, size: str, seed: int) -> fits.Header:
    end = frame.start + dt.timedelta(seconds=frame.exptime)
    date = frame.start.date().isoformat()
    hms = frame.start.strftime("%H:%M:%S.%f")[:12]
    h = fits.Header()
    h["INSTRUME"] = ("GSAOI", "Instrument used to acquire data")
    h["OBSERVAT"] = ("Gemini-South", "Name of telescope (Gemini-North|Gemini-South)")
    h["TELESCOP"] = ("Gemini-South", "Gemini-South")
    h["OBSTYPE"] = (frame.obstype, "Observation type")
    h["OBSCLASS"] = (frame.obsclass, "Observe class")
    h["OBJECT"] = (frame.object, "Object Name")
    h["GEMPRGID"] = (frame.program, "Gemini programme ID")
    h["OBSID"] = (frame.obsid, "Observation ID / Data label")
    h["DATALAB"] = (frame.datalab, "DHS data label")
    h["DATE"] = (date, "UT date of the observation")
    h["DATE-OBS"] = (date, "UT date at observation start")
    h["TIME-OBS"] = (hms, "UT time at observation start")
    h["UT"] = (hms, "UT time at observation start")
    h["UTSTART"] = (hms, "UT at observation start")
    h["UTEND"] = (end.strftime("%H:%M:%S.%f")[:12], "UT at observation end")
    h["EXPTIME"] = (frame.exptime, "Exposure time (s) per coadd")
    h["COADDS"] = (1, "Number of coadds (averaged)")
    h["LNRS"] = (frame.lnrs, "Number of non-destructive reads")
    h["READMODE"] = ("FOWLER", "Read mode")
    h["FILTER1"] = (FILTER1, "Filter 1")
    h["FILTER2"] = ("Clear", "Filter 2")
    h["WAVELENG"] = (WAVELENGTH_ANGSTROM, "Effective wavelength (Angstrom)")
    h["DETECTOR"] = ("GSAOI", "Detector")
    h["INPORT"] = (1, "ISS port (1 = up-looking)")
    h["AOFOLD"] = ("IN", "AO pick-off mirror")
    h["RA"] = (frame.ra, "Target right ascension (deg)")
    h["DEC"] = (frame.dec, "Target declination (deg)")
    h["EQUINOX"] = 2000.0
    h["PA"] = (0.0, "Position angle (deg)")
    h["POFFSET"] = (frame.p_offset, "Telescope offset in p (arcsec)")
    h["QOFFSET"] = (frame.q_offset, "Telescope offset in q (arcsec)")
    h["RAOFFSET"] = (frame.p_offset, "Telescope offset in RA (arcsec)")
    h["DECOFFSE"] = (frame.q_offset, "Telescope offset in Dec (arcsec)")
    if frame.obstype == "FLAT":
        # Fixed in Az/El on the dome screen: AZEL_TARGET and NON_SIDEREAL, as in the tutorial.
        h["FRAME"] = ("AZEL_TOPO", "Target coordinate system")
        h["TRKFRAME"] = ("FK5", "Tracking coordinate system")
        h["RATRACK"] = (-15.041, "Tracking rate in RA (arcsec/s)")
        h["DECTRACK"] = (0.0, "Tracking rate in Dec (arcsec/s)")
        h["ELEVATIO"] = (50.0, "Telescope elevation (deg)")
        h["GCALSHUT"] = ("CLOSED", "GCAL shutter (dome lamps used)")
    else:
        h["FRAME"] = ("FK5", "Target coordinate system")
        h["TRKFRAME"] = ("FK5", "Tracking coordinate system")
        h["RATRACK"] = (0.0, "Tracking rate in RA")
        h["DECTRACK"] = (0.0, "Tracking rate in Dec")
    h["AIRMASS"] = (frame.airmass, "Mean airmass")
    state = "guiding" if frame.guided else "parked"
    h["AOWFS_ST"] = (state, "AO wavefront sensor state")
    h["OIWFS_ST"] = (state, "On-detector guide window state")
    h["PWFS1_ST"] = ("parked", "PWFS1 state")
    h["PWFS2_ST"] = ("parked", "PWFS2 state")
    if frame.guided:
        h["GWFS1CFG"] = ("NGS", "GeMS wavefront sensor 1 configuration")
    h["BUNIT"] = ("adu", "Units of the data")
    h["SIMSIZE"] = (size, "gemred simulation size (small: corner windows)")
    h["SIMSEED"] = (int(seed), "gemred simulation seed")
    return h


def frame_headers(
    frame: FrameSpec, size: str = "small", seed: int = 0
) -> tuple[fits.Header, list[fits.Header]]:
    """Primary header and the four extension headers of a raw frame (no pixels needed).

    Parameters
    ----------
    frame : FrameSpec
        The exposure.
    size : {'small', 'full'}
        Sets the kept regions (sections and ``CRPIX``).
    seed : int
        Recorded as ``SIMSEED``.

    Returns
    -------
    (astropy.io.fits.Header, list of astropy.io.fits.Header)
    """
    regions = array_regions(size)
    return _phu(frame, size, seed), [_ext_header(frame, i, r) for i, r in enumerate(regions)]


def _array_headers(regions: Sequence[Section], *, distortion: bool = False) -> list[fits.Header]:
    """Array identity and sections of each kept region (BPM and truth-image extensions)."""
    headers = []
    for i, region in enumerate(regions):
        hdr = fits.Header()
        hdr["ARRAYID"] = gsaoi.ARRAYS[i].array_id
        for key, value in _sections(i, region).items():
            hdr[key] = value
        if distortion:
            hdr["DISTMODL"] = (DISTORTION_MODEL, "distortion placing stars")
        headers.append(hdr)
    return headers


# ----------------------------------------------------------------------------- the preset
def simulate_gsaoi_offsetsky(out: Path, size: str = "small", seed: int = 0) -> list[Path]:
    """Write the raw files of the DRAGONS GSAOI tutorial dataset, and the truth, into ``out``.

    Files (names, counts, exposure times as in the tutorial, filter Kshort):
    science ``S20170505S0095``-``0110`` (60 s; nine on the crowded NGC 5128-like field,
    guided, dithered by up to one dither step, and seven unguided frames on a sparser field
    5' away, interleaved as :data:`SCIENCE_ROLES`), lamp-on dome flats
    ``S20170505S0030``-``0044`` and lamp-off ``S20170505S0060``-``0074`` (13 s), the standard
    ``S20170504S0114``-``0117`` (30 s, object ``9132``, partnerCal; full frame here), and the
    static BPM :data:`BPM_NAME`. Every science and standard frame except the first has a
    0.1-0.3" pointing error; :data:`BAD_WCS_FRAME` has its WCS off by 40".

    Truth, in ``out/truth``: ``stars.csv`` (``star_id``, ``ra_deg``, ``dec_deg``, ``mag``,
    ``flux_e_per_s`` before the flat response, ``field``); ``frames.csv`` (one row per raw
    file: role, exposure, start, offsets, true pointing ``ra_centre_true``/``dec_centre_true``
    of the static-plane origin, header ``CRVAL``, pointing error, ``bad_wcs``, sky and
    lamp/thermal rates per pixel before the flat response); ``stars_pixels.csv`` (per
    science/standard frame and star on the kept pixels: extension and exact 0-based pixel);
    ``refcat.csv`` (:func:`reference_catalog`); ``flat_response_Kshort.fits`` and
    ``hot_pixels_e_per_s.fits`` (one extension per array,
    shaped like the raw data; header ``DISTMODL`` names the distortion model).

    Parameters
    ----------
    out : pathlib.Path
        Output folder, created if needed.
    size : {'small', 'full'}
        ``'full'``: 4 x 2048 x 2048 per file (3.4 GB in all). ``'small'``: a 256 x 256 window
        at the outer corner of each array (about 53 MB), denser star fields and dithers of
        at most 1.5" so the windows keep the same stars.
    seed : int
        Random seed; the same seed gives byte-identical files.

    Returns
    -------
    list of pathlib.Path
        The 50 raw files and the BPM.
    """
    out = Path(out)
    regions = array_regions(size)
    plan = observing_plan(size, seed)
    detector = make_detector(size, seed)
    catalogue = star_fields(plan, size, seed)
    margin = _margin_pixels()
    used = np.unique(
        np.concatenate([star_pixels(f, catalogue, regions, margin=margin)["star"].to_numpy() for f in plan])
    )
    stars = catalogue.iloc[used].reset_index(drop=True)

    def write(frame: FrameSpec) -> Path:
        electrons = render_electrons(frame, stars, regions, response=detector.response)
        data = expose(electrons, frame, detector, _rng(seed, frame.filename))
        phu, ext_headers = frame_headers(frame, size, seed)
        hdus = [rawfile.raw_extension(d, h) for d, h in zip(data, ext_headers, strict=True)]
        return rawfile.write_raw(out / f"{frame.filename}.fits", phu, hdus)

    # Frames are independent (one random generator each), so threads give identical files;
    # numpy releases the GIL in the heavy steps.
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        paths = list(pool.map(write, plan))

    pixel_rows = []
    for frame in plan:
        if frame.field is not None:
            placed = star_pixels(frame, stars, regions)
            counts = stars["flux_e_per_s"].to_numpy()[placed["star"].to_numpy()] * frame.exptime
            pixel_rows.append(
                placed.rename(columns={"star": "star_id"})
                .assign(counts_e=counts)
                .assign(filename=f"{frame.filename}.fits")
            )

    reference = _phu(plan[0], size, seed)
    bpm_phu = fits.Header()
    for key in ("INSTRUME", "OBSERVAT", "TELESCOP", "DETECTOR", "SIMSIZE", "SIMSEED"):
        bpm_phu[key] = reference[key]
    bpm_phu["OBJECT"] = "BPM"
    bpm_phu["OBSCLASS"] = "dayCal"
    bpm_phu["DATE"] = bpm_phu["DATE-OBS"] = "2012-11-04"
    masks = [b.astype(np.uint16) for b in detector.bad]
    paths.append(rawfile.write_bpm(out / BPM_NAME, bpm_phu, masks, _array_headers(regions)))

    rawfile.write_truth_table(stars.rename_axis("star_id").reset_index(), out, "stars")
    rawfile.write_truth_table(reference_catalog(stars, seed), out, "refcat")
    frame_rows = pd.DataFrame([_frame_row(frame) for frame in plan])
    rawfile.write_truth_table(frame_rows, out, "frames")
    pixels = pd.concat(pixel_rows, ignore_index=True)[["filename", "star_id", "ext", "x", "y", "counts_e"]]
    rawfile.write_truth_table(pixels, out, "stars_pixels")
    headers = _array_headers(regions, distortion=True)
    rawfile.write_truth_image(
        detector.response, headers, out, "flat_response_Kshort", "Kshort flat response, median 1"
    )
    rawfile.write_truth_image(
        detector.dark_e_per_s, headers, out, "hot_pixels_e_per_s", "hot pixel dark current (e-/s)"
    )
    return paths


def _frame_row(frame: FrameSpec) -> dict[str, object]:
    return {
        "filename": f"{frame.filename}.fits",
        "role": frame.role,
        "field": frame.field or "",
        "object": frame.object,
        "exptime": frame.exptime,
        "ut_start": frame.start.isoformat(timespec="milliseconds"),
        "p_offset": frame.p_offset,
        "q_offset": frame.q_offset,
        "ra_centre_true": frame.pointing[0],
        "dec_centre_true": frame.pointing[1],
        "crval1": frame.wcs_pointing[0],
        "crval2": frame.wcs_pointing[1],
        "pointing_error_arcsec": frame.pointing_error_arcsec,
        "bad_wcs": frame.bad_wcs,
        "sky_e_per_s_per_pixel": frame.sky_e_per_s,
        "lamp_e_per_s_per_pixel": frame.lamp_e_per_s,
        "lnrs": frame.lnrs,
    }
