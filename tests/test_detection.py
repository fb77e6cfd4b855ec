"""Source detection: OBJCAT columns and conventions, flux and position accuracy, OBJMASK."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from test_mosaic import isolated_matches, noise_free_mosaic, truth_pixels  # noqa: F401 (fixture)

from gemred import dq as dqbits
from gemred.detection import add_objcat, detect_sources, object_mask
from gemred.frame import Extension, Frame
from gemred.simulation.sky import PSF, Moffat, add_stars

COLUMNS = [
    "NUMBER",
    "X_IMAGE",
    "Y_IMAGE",
    "RA",
    "DEC",
    "FLUX_AUTO",
    "FLUXERR_AUTO",
    "FLUX_APER",
    "FLUXERR_APER",
    "ISOAREA_IMAGE",
    "FWHM_IMAGE",
    "FWHM_WORLD",
    "ELLIPTICITY",
    "THETA_IMAGE",
    "BACKGROUND",
    "FLAGS",
]


def _star_field(positions, fluxes, *, shape=(200, 300), sky=200.0, fwhm=4.0, noise=True, seed=0) -> Extension:
    image = np.zeros(shape)
    add_stars(
        image,
        [p[0] for p in positions],
        [p[1] for p in positions],
        fluxes,
        PSF(((1.0, Moffat(fwhm, 4.765)),)),
    )
    image += sky
    var = image + 9.0
    if noise:
        image = image + np.random.default_rng(seed).normal(0.0, np.sqrt(var))
    header = fits.Header(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRPIX1": 150.0,
            "CRPIX2": 100.0,
            "CRVAL1": 30.0,
            "CRVAL2": -10.0,
            "CD1_1": -2.0e-5,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": 2.0e-5,
        }
    )
    return Extension(image, header, var, np.zeros(shape, dtype=np.uint16))


def test_catalogue_columns_and_one_based_positions():
    ext = _star_field([(100.3, 60.7), (220.0, 140.2)], [2e5, 1e5], noise=False)
    cat = detect_sources(ext)
    assert cat.colnames == COLUMNS
    assert len(cat) == 2
    order = np.argsort(cat["X_IMAGE"])
    np.testing.assert_allclose(cat["X_IMAGE"][order], [101.3, 221.0], atol=0.01)
    np.testing.assert_allclose(cat["Y_IMAGE"][order], [61.7, 141.2], atol=0.01)
    # RA/Dec from the WCS at the 1-based position.
    assert cat["RA"][order][0] == pytest.approx(
        30.0 + (150.0 - 101.3) * 2.0e-5 / np.cos(np.radians(10.0)), abs=1e-6
    )
    assert cat["DEC"][order][0] == pytest.approx(-10.0 + (61.7 - 100.0) * 2.0e-5, abs=1e-6)
    np.testing.assert_allclose(cat["FWHM_IMAGE"], 4.0, rtol=0.1)
    np.testing.assert_allclose(cat["FWHM_WORLD"], cat["FWHM_IMAGE"] * 0.072, rtol=1e-6)
    np.testing.assert_allclose(cat["FLUX_APER"][order], [2e5, 1e5], rtol=0.01)
    np.testing.assert_allclose(cat["FLUX_AUTO"][order], [2e5, 1e5], rtol=0.02)
    np.testing.assert_allclose(cat["BACKGROUND"], 200.0, rtol=1e-3)
    assert np.all(cat["ELLIPTICITY"] < 0.05) and np.all(cat["FLAGS"] == 0)


def test_noisy_fluxes_have_honest_errors():
    rng = np.random.default_rng(3)
    positions = [(x, y) for x in range(30, 290, 40) for y in range(30, 190, 40)]
    positions = [(x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5)) for x, y in positions]
    ext = _star_field(positions, np.full(len(positions), 2e4), seed=4)
    cat = detect_sources(ext)
    # At 2 sigma (DRAGONS' default) a few noise peaks are detected too; keep the stars.
    xy = np.column_stack([cat["X_IMAGE"] - 1, cat["Y_IMAGE"] - 1])
    nearest = [int(np.argmin(np.hypot(*(xy - p).T))) for p in positions]
    assert np.all(np.hypot(*(xy[nearest] - np.asarray(positions)).T) < 0.2)
    moffat = Moffat(4.0, 4.765)
    enclosed = 1.0 - (1.0 + cat.meta["APER_RAD"] ** 2 / moffat.alpha**2) ** (1.0 - moffat.beta)
    pull = (cat["FLUX_APER"][nearest] - 2e4 * enclosed) / cat["FLUXERR_APER"][nearest]
    assert abs(np.mean(pull)) < 1.0 and 0.5 < np.std(pull) < 1.6
    # Kron apertures (2.5 Kron radii) miss a few per cent, as SExtractor's MAG_AUTO does.
    auto = cat["FLUX_AUTO"][nearest] / 2e4
    assert 0.93 < np.median(auto) < 1.0


def test_masked_and_gap_pixels_are_ignored():
    ext = _star_field([(100.0, 100.0), (250.0, 100.0)], [1e5, 1e5], noise=False)
    ext.dq[:, 240:] = dqbits.NO_DATA
    ext.sci[:, 240:] = 0.0
    ext.var[:, 240:] = 0.0
    cat = detect_sources(ext)
    assert len(cat) == 1 and cat["X_IMAGE"][0] == pytest.approx(101.0, abs=0.01)
    ext.dq[:, :] = dqbits.NO_DATA
    with pytest.raises(ValueError, match="masked"):
        detect_sources(ext)


def test_saturated_stars_are_found_and_flagged():
    ext = _star_field([(100.0, 100.0)], [1e6], noise=False)
    ext.dq[ext.sci > 0.5 * ext.sci.max()] = dqbits.SATURATED
    cat = detect_sources(ext)
    assert len(cat) == 1 and cat["FLAGS"][0] & 4


def test_empty_image_gives_empty_catalogue():
    ext = _star_field([], [], noise=False)
    cat = detect_sources(ext)
    assert len(cat) == 0 and cat.colnames == COLUMNS


def test_object_mask_covers_sources_and_grows():
    ext = _star_field([(100.0, 100.0)], [1e5], noise=False)
    mask0 = object_mask(ext, dilation=0)
    mask3 = object_mask(ext, dilation=3)
    assert mask0.dtype == bool and mask0.shape == ext.shape
    assert mask0[100, 100] and not mask0[10, 10]
    assert mask3.sum() > mask0.sum() and np.all(mask3[mask0])
    assert mask3[100, 100 + int(np.flatnonzero(mask0[100, 100:] == 0)[0]) + 2]
    with pytest.raises(ValueError, match="dilation"):
        object_mask(ext, dilation=-1)


def test_add_objcat_attaches_catalogues():
    ext = _star_field([(100.0, 100.0)], [1e5], noise=False)
    frame = add_objcat(Frame(fits.Header(), [ext], "x"))
    assert "DETECSRC" in frame.phu and len(frame[0].objcat) == 1
    assert ext.objcat is None


def test_noise_free_mosaic_fluxes_and_positions(noise_free_mosaic, gmos_starfield_small):  # noqa: F811
    ext = noise_free_mosaic[0]
    cat = detect_sources(ext)
    truth_xy, truth_flux = truth_pixels(ext.header, gmos_starfield_small)
    rows, idx = isolated_matches(cat, truth_xy, truth_flux, min_flux=2e4)
    assert rows.size >= 5
    aper = cat["FLUX_APER"][rows] / truth_flux[idx]
    # A 2-FWHM aperture holds 99.1 % of this Moffat (beta 4.765) profile. (FLUX_AUTO is not
    # tested here: noise-free isophotes are huge, so Kron apertures take in the crowded field.)
    assert np.median(aper) == pytest.approx(0.991, abs=0.005) and np.all(np.abs(aper - 0.991) < 0.03)
    offsets = np.hypot(cat["X_IMAGE"][rows] - truth_xy[idx, 0], cat["Y_IMAGE"][rows] - truth_xy[idx, 1])
    assert np.sqrt(np.mean(offsets**2)) < 0.05
    # The simulated seeing is 0.75 arcsec.
    assert np.median(cat["FWHM_WORLD"][rows]) == pytest.approx(0.75, rel=0.1)
