"""Simulated raw GMOS Hamamatsu imaging frames: biases, twilight flats and science.

Geometry
--------
Three 2048 x 4224 CCDs, each read by four amplifiers 512 unbinned columns wide, with
32 binned overscan columns on the right of odd extensions and on the left of even ones.
CCD2 is the reference; CCD1 and CCD3 sit at Gemini's measured shifts and rotations. The
focal plane is measured in unbinned pixels from the centre of CCD2; the telescope pointing
falls there, and sources move by ``(+P, +Q) / pixel_scale`` for telescope offsets ``(P, Q)``.
At ``PA = 0`` North is up (+y) and East is left (-x).

``size='small'`` keeps, on every amplifier, 64 binned columns next to the boundary it shares
with its neighbour and the central 192 binned rows (and the whole overscan), with every
section keyword and the WCS describing exactly the pixels kept. Static patterns (flat
response, bias structure, bad pixels) are always computed on the full detector and
cropped, so a small file is a true crop of the full one (but for the flat response's
normalisation, see :func:`flat_response`).

Signal model, per binned pixel: electrons = (sky [+ twilight gradient] + fringes + stars)
x flat response + hot-pixel dark current, Poisson noise, cosmic rays; then per amplifier
ADU = electrons / gain + bias level + bias structure + row noise (shared with the
overscan) + read noise, rounded and clipped to 0..65535.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from gemred.instruments import gmos
from gemred.sections import Section, format_section
from gemred.simulation import rawfile
from gemred.simulation.sky import (
    PSF,
    Moffat,
    add_cosmic_rays,
    add_stars,
    from_tangent_plane,
    star_catalogue,
    tangent_plane,
)

__all__ = [
    "AmpWindow",
    "GmosGeometry",
    "FrameSpec",
    "GmosScene",
    "render_ccd_electrons",
    "simulate_frame",
    "write_preset",
]

#: Filter wheel names (FILTER2) per GMOS and filter.
FILTER_IDS = {
    "GMOS-N": {"g": "g_G0301", "r": "r_G0303", "i": "i_G0302", "z": "z_G0304"},
    "GMOS-S": {"g": "g_G0325", "r": "r_G0326", "i": "i_G0327", "z": "z_G0328"},
}
#: Cosmic-ray events per unbinned pixel per second of exposure plus readout (about 1.5 / cm^2 / min).
COSMIC_RAY_RATE = 1.5 / 60.0 * (15e-4) ** 2
READOUT_SECONDS = 40.0
#: Star density of the sparse fields that twilight flats look at.
TWILIGHT_STARS_PER_ARCMIN2 = 3.0
#: Rows and columns (binned) kept per amplifier in small files.
SMALL_COLUMNS = 64
SMALL_ROWS = 192


@dataclass(frozen=True)
class AmpWindow:
    """The pixels one amplifier's extension holds, in unbinned chip coordinates (0-based, half-open)."""

    ext: int
    ccd: int
    position: int
    ampname: str
    chipname: str
    x1: int
    x2: int
    y1: int
    y2: int

    @property
    def overscan_right(self) -> bool:
        """Odd extensions (1-based) have their overscan on the right."""
        return self.ext % 2 == 1


@dataclass(frozen=True)
class GmosGeometry:
    """Readout layout and focal-plane geometry of one GMOS Hamamatsu configuration."""

    dset: gmos.DetectorSet
    xbin: int = 2
    ybin: int = 2
    size: str = "full"
    amps: tuple[AmpWindow, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.size not in ("small", "full"):
            msg = f"size must be 'small' or 'full', not {self.size!r}"
            raise ValueError(msg)
        width, height = gmos.CHIP_SHAPE[1], gmos.CHIP_SHAPE[0]
        if self.size == "full":
            cols, y1, y2 = gmos.AMP_WIDTH, 0, height
        else:
            cols = SMALL_COLUMNS * self.xbin
            rows = SMALL_ROWS * self.ybin
            y1 = (height - rows) // 2 // self.ybin * self.ybin
            y2 = y1 + rows
        names = self.dset.amp_names()
        amps = []
        for ext in range(1, 13):
            ccd, pos = divmod(ext - 1, 4)
            # Small windows hug the boundary an amplifier shares with its neighbour, so each CCD
            # keeps two contiguous strips, each read by two amplifiers.
            x1 = pos * gmos.AMP_WIDTH + (gmos.AMP_WIDTH - cols if pos % 2 == 0 else 0)
            amps.append(
                AmpWindow(ext, ccd, pos, names[ext - 1], self.dset.chip_names[ccd], x1, x1 + cols, y1, y2)
            )
        assert amps[-1].x2 <= width
        object.__setattr__(self, "amps", tuple(amps))

    @property
    def rows(self) -> tuple[int, int]:
        """Unbinned chip rows kept (0-based, half-open), the same on every amplifier."""
        return self.amps[0].y1, self.amps[0].y2

    @property
    def ccd_shape(self) -> tuple[int, int]:
        """Binned shape of a rendered CCD image: the kept rows, every column of the chip."""
        y1, y2 = self.rows
        return (y2 - y1) // self.ybin, gmos.CHIP_SHAPE[1] // self.xbin

    @property
    def data_shape(self) -> tuple[int, int]:
        """Binned shape of one amplifier's data section."""
        a = self.amps[0]
        return (a.y2 - a.y1) // self.ybin, (a.x2 - a.x1) // self.xbin

    @property
    def pixel_scale(self) -> float:
        """Binned pixel scale in arcsec."""
        return self.dset.pixel_scale * self.ybin

    def ccd_transform(self, ccd: int) -> tuple[np.ndarray, np.ndarray]:
        """Rotation matrix and shift placing CCD ``ccd`` in the focal plane."""
        if ccd == 1:
            return np.eye(2), np.zeros(2)
        k = 0 if ccd == 0 else 1
        theta = np.radians(self.dset.ccd_rotations[k])
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        return rot, np.asarray(self.dset.ccd_shifts[k], dtype=np.float64)

    def chip_to_focal(self, ccd: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unbinned chip coordinates (0-based pixel centres) to focal-plane coordinates."""
        rot, shift = self.ccd_transform(ccd)
        centre = np.array([(gmos.CHIP_SHAPE[1] - 1) / 2, (gmos.CHIP_SHAPE[0] - 1) / 2])
        d = np.stack([np.asarray(u, float) - centre[0], np.asarray(v, float) - centre[1]])
        f = np.tensordot(rot, d, axes=1)
        return f[0] + shift[0], f[1] + shift[1]

    def focal_to_chip(self, ccd: int, fx: np.ndarray, fy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`chip_to_focal`."""
        rot, shift = self.ccd_transform(ccd)
        centre = np.array([(gmos.CHIP_SHAPE[1] - 1) / 2, (gmos.CHIP_SHAPE[0] - 1) / 2])
        d = np.stack([np.asarray(fx, float) - shift[0], np.asarray(fy, float) - shift[1]])
        c = np.tensordot(rot.T, d, axes=1)
        return c[0] + centre[0], c[1] + centre[1]

    def image_to_chip(self, xi: np.ndarray, yi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Binned CCD-image pixel coordinates to unbinned chip coordinates (pixel centres)."""
        y1, _ = self.rows
        return (
            np.asarray(xi, float) * self.xbin + (self.xbin - 1) / 2,
            y1 + np.asarray(yi, float) * self.ybin + (self.ybin - 1) / 2,
        )

    def chip_to_image(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`image_to_chip`."""
        y1, _ = self.rows
        return (
            (np.asarray(u, float) - (self.xbin - 1) / 2) / self.xbin,
            (np.asarray(v, float) - y1 - (self.ybin - 1) / 2) / self.ybin,
        )

    def image_columns(self, amp: AmpWindow) -> slice:
        """Columns of the rendered CCD image that belong to ``amp``'s data section."""
        return slice(amp.x1 // self.xbin, amp.x2 // self.xbin)

    def sections(self, amp: AmpWindow) -> dict[str, str]:
        """DATASEC, BIASSEC, CCDSEC, DETSEC and CCDSIZE of one extension."""
        ny, nx = self.data_shape
        over = gmos.OVERSCAN_COLUMNS
        if amp.overscan_right:
            data, bias = Section(0, nx, 0, ny), Section(nx, nx + over, 0, ny)
        else:
            data, bias = Section(over, nx + over, 0, ny), Section(0, over, 0, ny)
        xoff = amp.ccd * gmos.CHIP_SHAPE[1]
        return {
            "DATASEC": format_section(data),
            "BIASSEC": format_section(bias),
            "CCDSEC": format_section((amp.x1, amp.x2, amp.y1, amp.y2)),
            "DETSEC": format_section((amp.x1 + xoff, amp.x2 + xoff, amp.y1, amp.y2)),
            "CCDSIZE": "[1:2048,1:4224]",
        }

    def data_offset(self, amp: AmpWindow) -> int:
        """Column index of the first data column in the raw extension array."""
        return 0 if amp.overscan_right else gmos.OVERSCAN_COLUMNS


def sky_matrix(position_angle: float) -> np.ndarray:
    """Matrix taking focal-plane unit vectors to (East, North) on the sky at a position angle."""
    pa = np.radians(position_angle)
    rot = np.array([[np.cos(pa), -np.sin(pa)], [np.sin(pa), np.cos(pa)]])
    return rot @ np.diag([-1.0, 1.0])


@dataclass
class FrameSpec:
    """Everything that varies from one simulated exposure to the next."""

    name: str
    obstype: str
    obsclass: str
    object: str
    exptime: float
    ut_start: dt.datetime
    filter_name: str
    program: str
    obsid: str
    datalab: str
    base_ra: float = 0.0
    base_dec: float = 0.0
    p_offset: float = 0.0
    q_offset: float = 0.0
    pointing_error: tuple[float, float] = (0.0, 0.0)
    sky_rate: float = 0.0
    gradient: tuple[float, float] = (0.0, 0.0)
    fringe_rate: float = 0.0
    tracking: str = "SIDEREAL"
    with_stars: bool = True
    field: str = "science"

    def pointing(self, position_angle: float, *, true: bool) -> tuple[float, float]:
        """RA, Dec on which the focal-plane origin lies; ``true=False`` gives the header's value."""
        offset = -sky_matrix(position_angle) @ np.array([self.p_offset, self.q_offset])
        if true:
            offset = offset + np.asarray(self.pointing_error)
        ra, dec = from_tangent_plane(offset[0], offset[1], self.base_ra, self.base_dec)
        return float(ra), float(dec)


@dataclass
class GmosScene:
    """The fixed ingredients shared by all frames of a preset."""

    geom: GmosGeometry
    stars: pd.DataFrame
    psf: PSF
    position_angle: float = 0.0
    twilight_stars: pd.DataFrame | None = None
    response: dict[str, list[np.ndarray]] = field(default_factory=dict)
    bias_structure: list[np.ndarray] = field(default_factory=list)
    fringe_pattern: list[np.ndarray] = field(default_factory=list)
    hot_rate: list[np.ndarray] = field(default_factory=list)
    bad_pixels: list[np.ndarray] = field(default_factory=list)


# ----------------------------------------------------------------------------- static patterns
def _full_geometry(geom: GmosGeometry) -> GmosGeometry:
    return GmosGeometry(geom.dset, geom.xbin, geom.ybin, "full")


def _crop_rows(geom: GmosGeometry, full_image: np.ndarray) -> np.ndarray:
    """Crop a full-chip binned image to the rows kept by ``geom``."""
    y1, y2 = geom.rows
    return full_image[y1 // geom.ybin : y2 // geom.ybin]


def static_defects(geom: GmosGeometry) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Bad pixels of the detector, per CCD image: (bad mask, response factor, hot rate e-/s).

    The defects are a fixed property of the detector (their random draws do not depend on the
    simulation seed), so the shipped BPM file agrees with every simulated frame.
    """
    full = _full_geometry(geom)
    ny, nx = full.ccd_shape
    rng = np.random.default_rng(20170306)
    masks, factors, hots = [], [], []
    # Bad columns (binned column index per CCD); chosen to fall inside the small windows too.
    bad_columns = {0: [230], 1: [790], 2: [270, 800]}
    for ccd in range(3):
        mask = np.zeros((ny, nx), dtype=bool)
        factor = np.ones((ny, nx))
        hot = np.zeros((ny, nx))
        for col in bad_columns[ccd]:
            col = col * 2 // geom.xbin
            mask[:, col] = True
            factor[:, col] = 0.25
        n_dead = ny * nx // 4000
        ys, xs = rng.integers(0, ny, n_dead), rng.integers(0, nx, n_dead)
        mask[ys, xs] = True
        factor[ys, xs] = 0.0
        n_hot = ny * nx // 6000
        ys, xs = rng.integers(0, ny, n_hot), rng.integers(0, nx, n_hot)
        mask[ys, xs] = True
        hot[ys, xs] = rng.uniform(5.0, 200.0, n_hot)
        masks.append(_crop_rows(geom, mask))
        factors.append(_crop_rows(geom, factor))
        hots.append(_crop_rows(geom, hot))
    return masks, factors, hots


def flat_response(geom: GmosGeometry, filter_name: str, factors: list[np.ndarray]) -> list[np.ndarray]:
    """True relative response per CCD image: QE per CCD, vignetting, pixel-to-pixel, defects.

    ``factors`` are the defect response factors of :func:`static_defects`. The result is
    normalised so that the median of the CCD2 pixels that the files keep is 1, as DRAGONS
    normalises GMOS flats by CCD2, so the truth star fluxes hold in a flat-fielded frame
    (small files therefore differ from a crop of full ones by this one constant).
    """
    full = _full_geometry(geom)
    ny, nx = full.ccd_shape
    rng = np.random.default_rng(1000 + sum(map(ord, filter_name)))
    qe = (0.965, 1.0, 1.035)
    yy, xx = np.mgrid[0:ny, 0:nx]
    responses = []
    for ccd in range(3):
        fx, fy = full.chip_to_focal(ccd, *full.image_to_chip(xx, yy))
        vignetting = 1.0 - 0.05 * (fx**2 + fy**2) / 3200.0**2
        ripple = 1.0 + 0.01 * np.sin(fx / 900.0 + 0.5 * ccd)
        responses.append(qe[ccd] * vignetting * ripple * (1.0 + 0.012 * rng.standard_normal((ny, nx))))
    ccd2 = _crop_rows(geom, responses[1])
    kept = np.concatenate([ccd2[:, geom.image_columns(amp)] for amp in geom.amps if amp.ccd == 1], axis=1)
    norm = float(np.median(kept))
    return [_crop_rows(geom, r / norm) * f for r, f in zip(responses, factors, strict=True)]


def bias_structure(geom: GmosGeometry) -> list[np.ndarray]:
    """Fixed 2-D bias pattern (ADU) of each amplifier's data section, relative to its overscan.

    A ramp of a few ADU next to the readout edge, a gentle vertical gradient, a per-amplifier
    offset between data and overscan, and a weak fixed pattern. Fixed for the detector.
    """
    full = _full_geometry(geom)
    ny, nx = full.data_shape
    rng = np.random.default_rng(4224)
    out = []
    for amp, full_amp in zip(geom.amps, full.amps, strict=True):
        cols = np.arange(nx, dtype=np.float64)
        edge = (nx - 1 - cols) if amp.overscan_right else cols
        rows = np.arange(ny, dtype=np.float64)[:, None]
        pattern = (
            rng.uniform(-2.0, 2.0)
            + 4.0 * np.exp(-edge / 15.0)[None, :]
            + 0.8 * rows / ny
            + 0.4 * rng.standard_normal((ny, nx))
        )
        x0 = (amp.x1 - full_amp.x1) // geom.xbin
        y1, y2 = geom.rows
        out.append(pattern[y1 // geom.ybin : y2 // geom.ybin, x0 : x0 + geom.data_shape[1]])
    return out


def fringe_pattern(geom: GmosGeometry) -> list[np.ndarray]:
    """Fringe pattern per CCD image, amplitude about +-1, fixed to the focal plane."""
    ny, nx = geom.ccd_shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    out = []
    for ccd in range(3):
        fx, fy = geom.chip_to_focal(ccd, *geom.image_to_chip(xx, yy))
        phase = 2 * np.pi * (0.7 * fx + 0.7 * fy) / 180.0 + 2.0 * np.sin(fx / 700.0) * np.cos(fy / 900.0)
        out.append(np.sin(phase) * (0.7 + 0.3 * np.cos(fy / 1500.0)))
    return out


# ----------------------------------------------------------------------------- rendering
def star_pixels(scene: GmosScene, frame: FrameSpec, ccd: int) -> pd.DataFrame:
    """Where each truth star falls on CCD ``ccd`` (binned CCD-image pixels, 0-based) in ``frame``."""
    geom = scene.geom
    ra0, dec0 = frame.pointing(scene.position_angle, true=True)
    stars = scene.stars if frame.field == "science" else scene.twilight_stars
    xi, eta = tangent_plane(stars["ra_deg"].to_numpy(), stars["dec_deg"].to_numpy(), ra0, dec0)
    f = np.linalg.solve(sky_matrix(scene.position_angle), np.stack([xi, eta])) / geom.dset.pixel_scale
    u, v = geom.focal_to_chip(ccd, f[0], f[1])
    x, y = geom.chip_to_image(u, v)
    return pd.DataFrame({"x": x, "y": y, "flux_e_per_s": stars["flux_e_per_s"].to_numpy()})


def render_ccd_electrons(
    scene: GmosScene, frame: FrameSpec, ccd: int, *, sky: bool = True, stars: bool = True
) -> np.ndarray:
    """Noise-free electrons reaching CCD ``ccd`` during ``frame``, before the flat-field response.

    Parameters
    ----------
    scene : GmosScene
        Fixed ingredients of the preset.
    frame : FrameSpec
        The exposure.
    ccd : int
        0, 1 or 2.
    sky, stars : bool
        Include the sky (with gradient and fringes) and the stars.

    Returns
    -------
    numpy.ndarray
        Binned CCD image (rows kept by the geometry, all columns), float64 electrons.
    """
    geom = scene.geom
    image = np.zeros(geom.ccd_shape)
    t = frame.exptime
    if t <= 0:
        return image
    if sky and frame.sky_rate > 0:
        ny, nx = geom.ccd_shape
        yy, xx = np.mgrid[0:ny, 0:nx]
        fx, fy = geom.chip_to_focal(ccd, *geom.image_to_chip(xx, yy))
        gx, gy = frame.gradient
        image += frame.sky_rate * t * (1.0 + (gx * fx + gy * fy) / 3000.0)
        if frame.fringe_rate:
            image += frame.fringe_rate * t * scene.fringe_pattern[ccd]
    if stars and frame.with_stars:
        pix = star_pixels(scene, frame, ccd)
        margin = 4 * scene.psf.fwhm + 10
        ny, nx = geom.ccd_shape
        keep = (pix.x > -margin) & (pix.x < nx + margin) & (pix.y > -margin) & (pix.y < ny + margin)
        pix = pix[keep]
        add_stars(image, pix.x.to_numpy(), pix.y.to_numpy(), pix.flux_e_per_s.to_numpy() * t, scene.psf)
    return image


def simulate_frame(scene: GmosScene, frame: FrameSpec, rng: np.random.Generator) -> tuple[list, list]:
    """Simulate the 12 raw extensions of one exposure.

    Returns
    -------
    (list of numpy.ndarray, list of int)
        The uint16 raw arrays in extension order, and the number of cosmic rays per CCD.
    """
    geom = scene.geom
    mode = "Normal"
    ny, nx = geom.data_shape
    over = gmos.OVERSCAN_COLUMNS
    is_bias = frame.obstype == "BIAS"
    arrays, n_cosmic = [], []
    for ccd in range(3):
        if is_bias:
            electrons = np.zeros(geom.ccd_shape)
        else:
            electrons = render_ccd_electrons(scene, frame, ccd) * scene.response[frame.filter_name][ccd]
            electrons += scene.hot_rate[ccd] * frame.exptime
        counts = rng.poisson(np.clip(electrons, 0, None)).astype(np.float64)
        kept_area = geom.ccd_shape[0] * geom.ccd_shape[1] * geom.xbin * geom.ybin
        n_cr = rng.poisson(COSMIC_RAY_RATE * kept_area * (frame.exptime + READOUT_SECONDS))
        add_cosmic_rays(counts, rng, int(n_cr))
        n_cosmic.append(int(n_cr))
        for amp in geom.amps[4 * ccd : 4 * ccd + 4]:
            cal = gmos.amp_calibration(geom.dset, amp.ampname, mode)
            rn_adu = cal.read_noise / cal.gain
            row_noise = rng.normal(0.0, 1.2, (ny, 1))
            raw = np.empty((ny, nx + over))
            data = counts[:, geom.image_columns(amp)] / cal.gain
            d0 = geom.data_offset(amp)
            raw[:, d0 : d0 + nx] = data + scene.bias_structure[amp.ext - 1]
            o0 = nx if amp.overscan_right else 0
            raw[:, o0 : o0 + over] = 0.0
            # Charge left behind by the last data column trails into the first overscan columns.
            if amp.overscan_right:
                edge, trail = data[:, -1], (o0, o0 + 1)
            else:
                edge, trail = data[:, 0], (over - 1, over - 2)
            raw[:, trail[0]] += 2e-3 * edge
            raw[:, trail[1]] += 5e-4 * edge
            raw += cal.bias_level + row_noise + rng.normal(0.0, rn_adu, raw.shape)
            arrays.append(np.clip(np.rint(raw), 0, 65535).astype(np.uint16))
    return arrays, n_cosmic


# ----------------------------------------------------------------------------- headers
def _wcs_cards(scene: GmosScene, frame: FrameSpec, amp: AmpWindow) -> dict[str, object]:
    """Linear TAN WCS of one raw extension, in that extension's pixel frame."""
    geom = scene.geom
    ra, dec = frame.pointing(scene.position_angle, true=False)
    rot, _ = geom.ccd_transform(amp.ccd)
    binning = np.diag([geom.xbin, geom.ybin])
    cd = geom.dset.pixel_scale / 3600.0 * sky_matrix(scene.position_angle) @ rot @ binning
    u0, v0 = geom.focal_to_chip(amp.ccd, 0.0, 0.0)
    x0, y0 = geom.chip_to_image(u0, v0)
    crpix1 = float(x0) - amp.x1 / geom.xbin + geom.data_offset(amp) + 1.0
    crpix2 = float(y0) + 1.0
    return {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRPIX1": crpix1,
        "CRPIX2": crpix2,
        "CRVAL1": ra,
        "CRVAL2": dec,
        "CD1_1": cd[0, 0],
        "CD1_2": cd[0, 1],
        "CD2_1": cd[1, 0],
        "CD2_2": cd[1, 1],
        "RADESYS": "FK5",
        "EQUINOX": 2000.0,
    }


def _ext_header(scene: GmosScene, frame: FrameSpec, amp: AmpWindow) -> fits.Header:
    geom = scene.geom
    cal = gmos.amp_calibration(geom.dset, amp.ampname, "Normal")
    hdr = fits.Header()
    hdr["CCDNAME"] = (amp.chipname, "CCD name")
    hdr["AMPNAME"] = (amp.ampname, "Amplifier name")
    hdr["CCDSUM"] = (f"{geom.xbin} {geom.ybin}", "CCD pixel summing (x y)")
    for key, value in geom.sections(amp).items():
        hdr[key] = value
    hdr["GAIN"] = (cal.gain, "Amplifier gain (e-/ADU)")
    hdr["RDNOISE"] = (cal.read_noise, "Read noise (e-)")
    for key, value in _wcs_cards(scene, frame, amp).items():
        hdr[key] = value
    return hdr


def _phu(scene: GmosScene, frame: FrameSpec) -> fits.Header:
    geom = scene.geom
    dset = geom.dset
    north = dset.instrument == "GMOS-N"
    ut_end = frame.ut_start + dt.timedelta(seconds=frame.exptime)
    hdr = fits.Header()
    cards = [
        ("INSTRUME", dset.instrument, "Instrument used to acquire data"),
        ("OBSERVAT", "Gemini-North" if north else "Gemini-South", "Name of telescope"),
        ("TELESCOP", "Gemini-North" if north else "Gemini-South", ""),
        ("OBJECT", frame.object, "Object Name"),
        ("OBSTYPE", frame.obstype, "Observation type"),
        ("OBSCLASS", frame.obsclass, "Observe class"),
        ("GEMPRGID", frame.program, "Gemini programme ID"),
        ("OBSID", frame.obsid, "Observation ID / Data label"),
        ("DATALAB", frame.datalab, "DHS Data label"),
        ("DATE", frame.ut_start.strftime("%Y-%m-%d"), "UT date of observation"),
        ("DATE-OBS", frame.ut_start.strftime("%Y-%m-%d"), "UTC date at start of exposure"),
        ("TIME-OBS", frame.ut_start.strftime("%H:%M:%S.%f")[:-3], "UTC time at start of exposure"),
        ("UT", frame.ut_start.strftime("%H:%M:%S.%f")[:-3], "UT at observation start"),
        ("UTSTART", frame.ut_start.strftime("%H:%M:%S.%f")[:-3], "UT at observation start"),
        ("UTEND", ut_end.strftime("%H:%M:%S.%f")[:-3], "UT at observation end"),
        ("EXPTIME", float(frame.exptime), "Exposure time in seconds"),
        ("RA", float(frame.base_ra), "Target Right Ascension"),
        ("DEC", float(frame.base_dec), "Target Declination"),
        ("RAOFFSET", 0.0, "Telescope offset in RA (arcsec)"),
        ("DECOFFSE", 0.0, "Telescope offset in Dec (arcsec)"),
        ("POFFSET", float(frame.p_offset), "Telescope offset in p (arcsec)"),
        ("QOFFSET", float(frame.q_offset), "Telescope offset in q (arcsec)"),
        ("PA", float(scene.position_angle), "Instrument position angle"),
        ("INPORT", 1, "ISS port of the instrument"),
        ("FRAME", "AZEL_TOPO" if frame.tracking == "AZEL" else "FK5", "Target coordinate system"),
        ("TRKFRAME", "AZEL_TOPO" if frame.tracking == "AZEL" else "FK5", "Tracking coordinate system"),
        ("RATRACK", 0.0, "Differential tracking rate RA"),
        ("DECTRACK", 0.0, "Differential tracking rate Dec"),
        ("AIRMASS", 1.0 if frame.tracking == "AZEL" else 1.12, "Mean airmass"),
        ("OIWFS_ST", "guiding" if frame.obstype == "OBJECT" else "parked", "OIWFS state"),
        ("PWFS1_ST", "parked", "PWFS1 state"),
        ("PWFS2_ST", "parked", "PWFS2 state"),
        ("GRATING", "MIRROR", "Grating name"),
        ("MASKTYP", 0, "Mask type"),
        ("MASKNAME", "None", "Mask name"),
        ("FILTER1", "open1-6", "Filter 1 name"),
        ("FILTER2", _filter_id(dset.instrument, frame.filter_name), "Filter 2 name"),
        ("DETTYPE", dset.dettype, "Detector array type"),
        ("DETID", dset.detid, "Chip IDs"),
        ("DETECTOR", dset.detector, "Detector name"),
        ("NAMPS", 4, "Number of amplifiers per CCD"),
        ("AMPINTEG", 9000, "Amplifier integration time (slow read)"),
        ("DETRO1X", 1, "ROI 1 X start (unbinned)"),
        ("DETRO1XS", 6144 // geom.xbin, "ROI 1 X size (binned)"),
        ("DETRO1Y", 1, "ROI 1 Y start (unbinned)"),
        ("DETRO1YS", 4224 // geom.ybin, "ROI 1 Y size (binned)"),
        ("NEXTEND", 12, "Number of extensions"),
        ("SIMSIZE", geom.size, "gemred simulation: full or cropped"),
    ]
    for key, value, comment in cards:
        hdr[key] = (value, comment)
    return hdr


def _filter_id(instrument: str, filter_name: str) -> str:
    return FILTER_IDS[instrument].get(filter_name, "open2-8")


def _raw_hdus(scene: GmosScene, frame: FrameSpec, arrays: list[np.ndarray]) -> list[fits.ImageHDU]:
    return [
        rawfile.raw_extension(a, _ext_header(scene, frame, amp))
        for a, amp in zip(arrays, scene.geom.amps, strict=True)
    ]


def bpm_masks(geom: GmosGeometry, bad: list[np.ndarray]) -> list[np.ndarray]:
    """Per-extension BPM arrays (raw layout, overscan included) from per-CCD bad-pixel masks."""
    ny, nx = geom.data_shape
    out = []
    for amp in geom.amps:
        mask = np.zeros((ny, nx + gmos.OVERSCAN_COLUMNS), dtype=np.uint16)
        d0 = geom.data_offset(amp)
        mask[:, d0 : d0 + nx] = bad[amp.ccd][:, geom.image_columns(amp)]
        out.append(mask)
    return out


def per_amp(geom: GmosGeometry, ccd_images: list[np.ndarray]) -> list[np.ndarray]:
    """Cut per-CCD images into the data sections of the 12 amplifiers."""
    return [ccd_images[amp.ccd][:, geom.image_columns(amp)] for amp in geom.amps]


def _truth_headers(geom: GmosGeometry) -> list[fits.Header]:
    """Headers for truth images laid out as trimmed data sections."""
    ny, nx = geom.data_shape
    headers = []
    for amp in geom.amps:
        hdr = fits.Header()
        secs = geom.sections(amp)
        hdr["AMPNAME"] = amp.ampname
        hdr["CCDNAME"] = amp.chipname
        hdr["CCDSUM"] = f"{geom.xbin} {geom.ybin}"
        hdr["DATASEC"] = format_section((0, nx, 0, ny))
        hdr["CCDSEC"] = secs["CCDSEC"]
        hdr["DETSEC"] = secs["DETSEC"]
        headers.append(hdr)
    return headers


# ----------------------------------------------------------------------------- presets
@dataclass
class PresetPlan:
    """A whole GMOS dataset to simulate: its scene, frames and BPM."""

    scene: GmosScene
    frames: list[FrameSpec]
    bpm_name: str
    bpm_date: dt.date


def make_scene(
    dset: gmos.DetectorSet,
    size: str,
    rng: np.random.Generator,
    *,
    base: tuple[float, float],
    filters: list[str],
    seeing_arcsec: float,
    mag_range: tuple[float, float],
    density_per_arcmin2: float,
    margin_arcsec: tuple[float, float],
    slope: float = 0.3,
    twilight_base: tuple[float, float] | None = None,
) -> GmosScene:
    """Build the fixed parts of a preset: geometry, truth stars, PSF and detector patterns.

    The truth stars cover the kept detector area plus ``margin_arcsec`` (East-West,
    North-South), enough for every dither and twilight offset of the preset. Twilight flats
    look at a sparse field of their own around ``twilight_base``, as observers choose for them:
    a crowded field would leave star light in the flat that min/max rejection cannot remove.
    """
    geom = GmosGeometry(dset, 2, 2, size)
    scale = dset.pixel_scale
    half_x = 3 * 2048 * scale / 2 + 150 * scale + margin_arcsec[0]
    rows = geom.rows
    half_y = (rows[1] - rows[0]) * scale / 2 + margin_arcsec[1]
    n_stars = int(density_per_arcmin2 * (2 * half_x) * (2 * half_y) / 3600.0)
    zp = gmos.ZERO_POINTS[dset.name][filters[0]]
    stars = star_catalogue(rng, base[0], base[1], (half_x, half_y), n_stars, mag_range, zp, slope=slope)
    # A few bright stars that saturate, as any real field has, whatever the window kept.
    bright = star_catalogue(
        rng, base[0], base[1], (half_x, half_y), 80 if size == "small" else 25, (12.0, 14.5), zp, slope=0.0
    )
    stars = pd.concat([bright, stars], ignore_index=True).sort_values("mag", ignore_index=True)
    psf = PSF(((1.0, Moffat(seeing_arcsec / geom.pixel_scale, 4.765)),))
    bad, factors, hot = static_defects(geom)
    scene = GmosScene(geom, stars, psf, 0.0)
    if twilight_base is not None:
        n_twilight = int(TWILIGHT_STARS_PER_ARCMIN2 * (2 * half_x) * (2 * half_y) / 3600.0)
        scene.twilight_stars = star_catalogue(
            rng, twilight_base[0], twilight_base[1], (half_x, half_y), n_twilight, (13.0, 21.0), zp
        )
    scene.bad_pixels, scene.hot_rate = bad, hot
    scene.response = {f: flat_response(geom, f, factors) for f in filters}
    scene.bias_structure = bias_structure(geom)
    scene.fringe_pattern = fringe_pattern(geom)
    return scene


def sky_rate(dset: gmos.DetectorSet, filter_name: str, pixel_scale: float) -> float:
    """Dark-sky electrons per second per pixel of side ``pixel_scale`` arcsec."""
    mag = gmos.SKY_MAG_PER_ARCSEC2[filter_name] - 2.5 * np.log10(pixel_scale**2)
    return float(10 ** (-0.4 * (mag - gmos.ZERO_POINTS[dset.name][filter_name])))


def write_preset(plan: PresetPlan, out: Path, rng: np.random.Generator) -> list[Path]:
    """Write every raw frame, the BPM and the truth files of a preset into ``out``."""
    out = Path(out)
    scene, geom = plan.scene, plan.scene.geom
    paths, rows = [], []
    for frame in plan.frames:
        arrays, n_cr = simulate_frame(scene, frame, rng)
        hdus = _raw_hdus(scene, frame, arrays)
        path = rawfile.write_raw(out / f"{frame.name}.fits", _phu(scene, frame), hdus)
        paths.append(path)
        ra_true, dec_true = frame.pointing(scene.position_angle, true=True)
        rows.append(
            {
                "filename": path.name,
                "obstype": frame.obstype,
                "object": frame.object,
                "filter_name": frame.filter_name,
                "exptime": frame.exptime,
                "ut_start": frame.ut_start.isoformat(),
                "p_offset": frame.p_offset,
                "q_offset": frame.q_offset,
                "ra_centre_true": ra_true,
                "dec_centre_true": dec_true,
                "pointing_error_east_arcsec": frame.pointing_error[0],
                "pointing_error_north_arcsec": frame.pointing_error[1],
                "sky_e_per_s_per_pixel": frame.sky_rate,
                "sky_gradient_x": frame.gradient[0],
                "sky_gradient_y": frame.gradient[1],
                "fringe_e_per_s_per_pixel": frame.fringe_rate,
                "cosmic_rays": sum(n_cr),
            }
        )
    phu = _phu(scene, plan.frames[0])
    phu["DATE"] = phu["DATE-OBS"] = plan.bpm_date.isoformat()
    phu["OBJECT"] = "BPM"
    phu["OBSCLASS"] = "dayCal"
    ext_headers = [_ext_header(scene, plan.frames[0], amp) for amp in geom.amps]
    paths.append(rawfile.write_bpm(out / plan.bpm_name, phu, bpm_masks(geom, scene.bad_pixels), ext_headers))

    truth_headers = _truth_headers(geom)
    rawfile.write_truth_table(scene.stars, out, "stars")
    if scene.twilight_stars is not None:
        rawfile.write_truth_table(scene.twilight_stars, out, "twilight_stars")
    rawfile.write_truth_table(pd.DataFrame(rows), out, "frames")
    for f, resp in scene.response.items():
        rawfile.write_truth_image(
            per_amp(geom, resp),
            truth_headers,
            out,
            f"flat_response_{f}",
            f"true flat response, filter {f}, trimmed amps",
        )
    rawfile.write_truth_image(
        scene.bias_structure,
        truth_headers,
        out,
        "bias_structure_adu",
        "bias pattern (ADU) above the overscan level, trimmed amps",
    )
    rawfile.write_truth_image(
        per_amp(geom, scene.hot_rate),
        truth_headers,
        out,
        "hot_pixels_e_per_s",
        "hot pixel dark current (e-/s), trimmed amps",
    )
    fringed = {fr.filter_name for fr in plan.frames if fr.fringe_rate}
    for f in sorted(fringed):
        rate = max(fr.fringe_rate for fr in plan.frames if fr.filter_name == f)
        rawfile.write_truth_image(
            [p * rate for p in per_amp(geom, scene.fringe_pattern)],
            truth_headers,
            out,
            f"fringe_pattern_{f}",
            f"fringe (e-/s/pixel, before flat), filter {f}",
        )
    return paths
