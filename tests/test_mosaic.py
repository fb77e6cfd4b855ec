"""Mosaicking GMOS amplifiers: geometry against the simulator, gaps, DQ, WCS against the truth.

The helpers here (trimmed-electron frames made the quick way, noise-free frames rendered from
the simulator's own scene, truth positions) are shared by the detection, alignment and
resampling tests.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from gemred import dq as dqbits
from gemred.frame import Extension, Frame
from gemred.instruments import gmos
from gemred.io import read_frame
from gemred.mosaic import ccd_transform, mosaic_gmos
from gemred.sections import format_section, parse_section
from gemred.simulation.gmos import GmosGeometry, render_ccd_electrons
from gemred.simulation.presets import gmos_starfield_plan

SCIENCE = [f"N20170614S{n:04d}" for n in range(201, 206)]
#: Binned pixel scale of the 2x2 GMOS-N frames (arcsec).
SCALE = 0.0807 * 2
#: Constant sky (electrons) under the noise-free stars.
SKY = 500.0


# ----------------------------------------------------------------------------- helpers
def trimmed_electrons(path: Path, *, truth: Path | None = None) -> Frame:
    """A raw GMOS frame overscan-subtracted (row means), trimmed and converted to electrons.

    With ``truth`` (the simulation's truth folder) the true bias structure is subtracted and
    the true flat response divided out too, giving a frame "calibrated with the truth". VAR is
    read noise plus Poisson; DQ flags ADC saturation.
    """
    raw = read_frame(path)
    bias = flat = None
    if truth is not None:
        with fits.open(truth / "bias_structure_adu.fits") as hdul:
            bias = [h.data.astype(np.float64) for h in hdul[1:]]
        with fits.open(truth / "flat_response_i.fits") as hdul:
            flat = [h.data.astype(np.float64) for h in hdul[1:]]
    exts = []
    for i, ext in enumerate(raw):
        hdr = ext.header.copy()
        data, over = parse_section(hdr["DATASEC"]), parse_section(hdr["BIASSEC"])
        level = ext.sci[:, over.x1 + 2 : over.x2 - 2].mean(axis=1, keepdims=True)
        adu = ext.sci[data.slices()].astype(np.float64)
        sci = adu - level
        if bias is not None:
            sci = sci - bias[i]
        sci *= float(hdr["GAIN"])
        if flat is not None:
            sci /= np.where(flat[i] > 0.05, flat[i], 1.0)
        hdr["CRPIX1"] = float(hdr["CRPIX1"]) - data.x1
        hdr["CRPIX2"] = float(hdr["CRPIX2"]) - data.y1
        hdr["DATASEC"] = format_section((0, data.x2 - data.x1, 0, data.y2 - data.y1))
        var = float(hdr["RDNOISE"]) ** 2 + np.maximum(sci, 0.0)
        dq = np.where(adu >= 65535, dqbits.SATURATED, 0).astype(np.uint16)
        if flat is not None:
            dq[flat[i] <= 0.05] |= dqbits.BAD_PIXEL
        hdr["GAIN"] = 1.0
        exts.append(Extension(sci, hdr, var, dq))
    return Frame(raw.phu, exts, raw.root)


@functools.lru_cache(maxsize=2)
def starfield_plan(size: str = "small", seed: int = 1):
    """The simulator's plan (scene and frame specs) behind ``simulate('gmos-starfield', seed)``."""
    return gmos_starfield_plan(size, np.random.default_rng(seed))


def noise_free_frame(raw_dir: Path, name: str, *, sky: float = SKY) -> Frame:
    """Trimmed 12-amp frame of noise-free star light (electrons) plus a constant sky.

    Headers (sections, WCS) come from the raw file made with seed 1; the pixels are the
    simulator's own rendering of the truth stars for that exposure (true pointing).
    """
    plan = starfield_plan("small", 1)
    spec = next(f for f in plan.frames if f.name == name)
    geom = plan.scene.geom
    ccds = [render_ccd_electrons(plan.scene, spec, k, sky=False) for k in range(3)]
    frame = trimmed_electrons(raw_dir / f"{name}.fits")
    for ext, amp in zip(frame, geom.amps, strict=True):
        ext.sci = (ccds[amp.ccd][:, geom.image_columns(amp)] + sky).astype(np.float32)
        ext.var = (ext.sci + 16.0).astype(np.float32)
        ext.dq = np.zeros(ext.sci.shape, dtype=np.uint16)
    return frame


def truth_pixels(header: fits.Header, raw_dir: Path, exptime: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Truth star positions (1-based pixels, via ``header``'s WCS) and total electrons."""
    stars = pd.read_csv(raw_dir / "truth" / "stars.csv")
    x, y = WCS(header).all_world2pix(stars.ra_deg, stars.dec_deg, 1)
    return np.column_stack([x, y]), stars.flux_e_per_s.to_numpy() * exptime


def isolated_matches(
    cat, truth_xy: np.ndarray, truth_flux: np.ndarray, *, min_flux: float, isolation: float = 15.0
) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue rows matched (< 1 pixel) to truth stars with no other star of >= 2 % their
    flux within ``isolation`` pixels, not deblended or truncated; returns (rows, truth index)."""
    tree = cKDTree(truth_xy)
    dist, idx = tree.query(np.column_stack([cat["X_IMAGE"], cat["Y_IMAGE"]]))
    rows = []
    for row, (d, i) in enumerate(zip(dist, idx, strict=True)):
        if d > 1.0 or truth_flux[i] < min_flux or cat["FLAGS"][row] & (2 | 4 | 8):
            continue
        near = tree.query_ball_point(truth_xy[i], isolation)
        if any(j != i and truth_flux[j] > 0.02 * truth_flux[i] for j in near):
            continue
        rows.append(row)
    rows = np.asarray(rows, dtype=int)
    return rows, idx[rows]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def noise_free_mosaic(gmos_starfield_small) -> Frame:
    return mosaic_gmos(noise_free_frame(gmos_starfield_small, SCIENCE[0]))


def _full_frame(dset: gmos.DetectorSet) -> Frame:
    """A blank full-frame trimmed GMOS-N frame (headers as the simulator writes them)."""
    geom = GmosGeometry(dset, 2, 2, "full")
    phu = fits.Header({"INSTRUME": dset.instrument, "DETID": dset.detid, "DATE-OBS": "2017-06-14"})
    exts = []
    for amp in geom.amps:
        hdr = fits.Header()
        for key, value in geom.sections(amp).items():
            hdr[key] = value
        hdr["CCDSUM"] = "2 2"
        ny, nx = geom.data_shape
        hdr["DATASEC"] = format_section((0, nx, 0, ny))
        hdr.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 20.0})
        hdr.update({"CRPIX1": 512.5 - amp.x1 // 2, "CRPIX2": 1056.5, "CD1_1": -4.5e-5, "CD2_2": 4.5e-5})
        hdr.update({"CD1_2": 0.0, "CD2_1": 0.0})
        exts.append(Extension(np.full((ny, nx), 100.0 + amp.ext), hdr, np.full((ny, nx), 4.0), None))
    return Frame(phu, exts, "blank")


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("ccd", [0, 2])
@pytest.mark.parametrize("binning", [1, 2, 4])
def test_ccd_transform_is_the_simulator_geometry(ccd, binning):
    dset = gmos.detector_set("GMOS-N")
    geom = GmosGeometry(dset, binning, binning, "full")
    matrix, offset = ccd_transform(dset, ccd, binning, binning)
    xb = np.array([0.0, 500.0, 1000.0 / binning, 3.0])
    yb = np.array([0.0, 2000.0 / binning, 17.0, 1000.0])
    fx, fy = geom.chip_to_focal(ccd, *geom.image_to_chip(xb, yb))
    # CCD2 chip pixels are the focal plane shifted by the chip centre.
    x2, y2 = geom.chip_to_image(*geom.focal_to_chip(1, fx, fy))
    placed = matrix @ np.stack([xb, yb]) + offset[:, None]
    np.testing.assert_allclose(placed, np.stack([x2, y2]), atol=1e-9)


def test_full_frame_mosaic_shape_wcs_and_gaps():
    dset = gmos.detector_set("GMOS-N")
    frame = _full_frame(dset)
    mosaic = mosaic_gmos(frame)
    ext = mosaic[0]
    assert len(mosaic) == 1 and "MOSAIC" in mosaic.phu
    assert ext.sci.dtype == np.float32 and ext.var.dtype == np.float32 and ext.dq.dtype == np.uint16
    # Three 1024-column CCDs and two 34-column gaps.
    assert ext.shape == (2112, 3140)
    # CCD2 is copied, not interpolated: its amplifiers' values sit unchanged where its WCS says.
    first = int(round(float(ext.header["CRPIX1"]) - 512.5))
    assert first == 1058
    for k in range(4):
        assert np.all(ext.sci[:, first + 256 * k : first + 256 * (k + 1)] == 105.0 + k)
    # The gaps between the CCDs are NO_DATA with zero SCI and VAR.
    gap_cols = np.flatnonzero(np.all(ext.dq == dqbits.NO_DATA, axis=0))
    assert gap_cols.size == 68
    assert np.all(ext.sci[:, gap_cols] == 0) and np.all(ext.var[:, gap_cols] == 0)
    # Everywhere else there is data.
    good = ext.dq == 0
    assert good.sum() == pytest.approx(3 * 1024 * 2112, abs=2 * 2112 + 4 * 1024)
    # (the cubic spline overshoots a step between amplifiers by up to ~11 % of it)
    assert np.all((ext.sci[good] >= 101.0 - 0.15) & (ext.sci[good] <= 112.0 + 0.15))
    # VAR 4 everywhere: copied on CCD2; on CCD1 and CCD3 times the noise the interpolation
    # keeps at their sub-pixel placement (between 0.57 and 1).
    ccd2 = slice(first, first + 1024)
    assert np.all(ext.var[:, ccd2][good[:, ccd2]] == 4.0)
    assert np.all((ext.var[good] > 4.0 * 0.57) & (ext.var[good] < 4.0 + 1e-3))


def test_tile_places_ccds_without_interpolation():
    dset = gmos.detector_set("GMOS-N")
    mosaic = mosaic_gmos(_full_frame(dset), tile=True)
    ext = mosaic[0]
    gap = dset.tile_gap // 2
    assert ext.shape == (2112, 3 * 1024 + 2 * gap)
    assert np.all(ext.sci[:, :256] == 101.0)
    assert np.all(ext.dq[:, 1024 : 1024 + gap] == dqbits.NO_DATA)
    assert np.all(ext.sci[:, 1024 + gap : 1024 + gap + 256] == 105.0)


def test_mosaic_places_truth_stars_on_all_ccds(noise_free_mosaic, gmos_starfield_small):
    from gemred.detection import detect_sources

    ext = noise_free_mosaic[0]
    cat = detect_sources(ext)
    truth_xy, truth_flux = truth_pixels(ext.header, gmos_starfield_small)
    rows, idx = isolated_matches(cat, truth_xy, truth_flux, min_flux=3000.0)
    dx = cat["X_IMAGE"][rows] - truth_xy[idx, 0]
    dy = cat["Y_IMAGE"][rows] - truth_xy[idx, 1]
    # Stars on each of the three CCDs (CCD2 spans mosaic columns ~1058-2082).
    x = truth_xy[idx, 0]
    for lo, hi in ((0, 1040), (1040, 2100), (2100, 4000)):
        on_ccd = (x > lo) & (x < hi)
        assert on_ccd.sum() >= 3
        assert np.sqrt(np.mean(dx[on_ccd] ** 2 + dy[on_ccd] ** 2)) < 0.1
    assert np.sqrt(np.mean(dx**2 + dy**2)) < 0.05


def test_calibrated_mosaic_places_bright_stars(gmos_starfield_small):
    from gemred.detection import detect_sources

    frame = trimmed_electrons(
        gmos_starfield_small / f"{SCIENCE[0]}.fits", truth=gmos_starfield_small / "truth"
    )
    ext = mosaic_gmos(frame)[0]
    cat = detect_sources(ext)
    truth_xy, truth_flux = truth_pixels(ext.header, gmos_starfield_small)
    rows, idx = isolated_matches(cat, truth_xy, truth_flux, min_flux=1e4)
    assert rows.size >= 5
    dx = np.asarray(cat["X_IMAGE"][rows]) - truth_xy[idx, 0]
    dy = np.asarray(cat["Y_IMAGE"][rows]) - truth_xy[idx, 1]
    # On one noisy frame the centroids scatter by a few hundredths of a pixel (more for a star
    # with faint neighbours); a misplaced CCD would show as a common offset.
    assert np.hypot(np.mean(dx), np.mean(dy)) < 0.05
    assert np.sqrt(np.mean(dx**2 + dy**2)) < 0.15


def test_small_frame_holes_are_no_data_and_ccd2_is_copied(gmos_starfield_small):
    frame = noise_free_frame(gmos_starfield_small, SCIENCE[0])
    ext = mosaic_gmos(frame)[0]
    assert ext.shape[0] == 192
    # CCD2's first amplifier (ext 5) lands unchanged at its CCDSEC, moved by the mosaic origin.
    amp = frame[4]
    x1 = int(round(float(ext.header["CRPIX1"]) - float(amp.header["CRPIX1"])))
    np.testing.assert_array_equal(ext.sci[:, x1 : x1 + amp.shape[1]], amp.sci)
    # Between the two strips of each CCD, and between CCDs, nothing was read.
    nodata_cols = np.all(ext.dq & dqbits.NO_DATA, axis=0)
    assert nodata_cols.sum() > 0.5 * ext.shape[1]
    assert np.all(ext.sci[:, nodata_cols] == 0) and np.all(ext.var[:, nodata_cols] == 0)
    assert (ext.dq == 0).sum() == pytest.approx(12 * amp.sci.size, rel=0.02)


def test_dq_bits_follow_their_pixels():
    dset = gmos.detector_set("GMOS-N")
    frame = _full_frame(dset)
    for ext in frame:
        ext.dq = np.zeros(ext.shape, dtype=np.uint16)
    frame[1].dq[1000, 100] = dqbits.BAD_PIXEL  # CCD1, interpolated
    frame[5].dq[500, 50] = dqbits.COSMIC_RAY  # CCD2, copied
    ext = mosaic_gmos(frame)[0]
    bad = np.argwhere(ext.dq & dqbits.BAD_PIXEL)
    # The cubic spline's reach: the 3x3 around the pixel, spread over a 2x2 footprint.
    assert 9 <= len(bad) <= 16
    assert np.all(np.abs(bad - bad.mean(axis=0)) <= 2)
    assert (ext.dq & dqbits.COSMIC_RAY).sum() == dqbits.COSMIC_RAY


def test_linear_interpolant_and_errors(gmos_starfield_small):
    frame = noise_free_frame(gmos_starfield_small, SCIENCE[0])
    linear = mosaic_gmos(frame, interpolant="linear")[0]
    cubic = mosaic_gmos(frame)[0]
    both = (linear.dq == 0) & (cubic.dq == 0)
    assert np.median(np.abs(linear.sci[both] - cubic.sci[both])) < 1.0
    with pytest.raises(ValueError, match="interpolant"):
        mosaic_gmos(frame, interpolant="sinc")
    untrimmed = read_frame(gmos_starfield_small / f"{SCIENCE[0]}.fits")
    with pytest.raises(ValueError, match="trim the overscan"):
        mosaic_gmos(untrimmed)
    gsaoi = Frame(fits.Header({"INSTRUME": "GSAOI"}), frame.extensions, "x")
    with pytest.raises(ValueError, match="needs GMOS"):
        mosaic_gmos(gsaoi)
