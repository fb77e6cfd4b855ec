"""Resampling: the affine core (fast and general paths), flux conservation, DQ, common frame."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.wcs import WCS
from test_mosaic import SCIENCE, SKY, isolated_matches, noise_free_frame, truth_pixels

from gemred import dq as dqbits
from gemred.alignment import adjust_wcs_to_reference
from gemred.detection import add_objcat, detect_sources
from gemred.frame import Extension, Frame
from gemred.mosaic import mosaic_gmos
from gemred.resample import (
    fill_flagged,
    noise_factor,
    resample_arrays,
    resample_to_reference,
    variance_correlation,
)
from gemred.simulation.sky import PSF, Gaussian, add_stars


def _smooth(shape=(120, 150)) -> np.ndarray:
    yy, xx = np.indices(shape, dtype=np.float64)
    return (100.0 + 5.0 * np.sin(xx / 9.0) + 3.0 * np.cos(yy / 7.0)).astype(np.float32)


@pytest.mark.parametrize("interpolant", ["poly3", "linear"])
def test_integer_shift_is_exact(interpolant):
    sci = _smooth()
    out = resample_arrays(sci, sci, None, np.eye(2), [3.0, -5.0], (120, 150), interpolant=interpolant)
    full = np.zeros((120, 150), np.float32)
    dq = np.full((120, 150), dqbits.NO_DATA, np.uint16)
    out.paste(full, None, dq)
    np.testing.assert_allclose(full[:117, 5:], sci[3:, :145], atol=1e-4)
    assert np.all(dq[117:] == dqbits.NO_DATA) and np.all(dq[:, :5] == dqbits.NO_DATA)
    assert np.all(full[117:] == 0) and np.all(dq[:117, 5:] == 0)


def test_fast_path_agrees_with_general_path():
    sci = _smooth()
    theta = np.radians(0.01)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    fast = resample_arrays(sci, None, None, rot, [0.3, 0.6], (120, 150))
    # A tiny scale change forces scipy.ndimage; the images must agree.
    general = resample_arrays(sci, None, None, rot * (1 + 1e-5), [0.3, 0.6], (120, 150))
    inner = (slice(5, 110), slice(5, 140))
    np.testing.assert_allclose(fast.sci[inner], general.sci[inner], atol=2e-3)
    big = resample_arrays(sci, None, None, np.array([[0.9, 0.1], [-0.1, 0.9]]), [5.0, 5.0], (150, 180))
    assert big.covered.sum() > 0 and np.all(big.dq[~big.covered] == dqbits.NO_DATA)


def test_dq_bits_spread_to_the_bilinear_footprint():
    sci = _smooth()
    dq = np.zeros(sci.shape, np.uint16)
    dq[50, 60] = dqbits.COSMIC_RAY
    half = resample_arrays(sci, None, dq, np.eye(2), [0.5, 0.5], sci.shape, interpolant="linear")
    assert sorted(map(tuple, np.argwhere(half.dq & dqbits.COSMIC_RAY))) == [
        (49, 59),
        (49, 60),
        (50, 59),
        (50, 60),
    ]
    whole = resample_arrays(sci, None, dq, np.eye(2), [0.0005, 0.0], sci.shape, interpolant="linear")
    assert np.argwhere(whole.dq & dqbits.COSMIC_RAY).tolist() == [[50, 60]]


def test_cubic_spreads_dq_one_pixel_further():
    sci = _smooth()
    dq = np.zeros(sci.shape, np.uint16)
    dq[50, 60] = dqbits.COSMIC_RAY
    half = resample_arrays(sci, None, dq, np.eye(2), [0.5, 0.5], sci.shape)
    flagged = np.argwhere(half.dq & dqbits.COSMIC_RAY)
    assert flagged.min(axis=0).tolist() == [48, 58] and flagged.max(axis=0).tolist() == [51, 61]
    assert len(flagged) == 16
    whole = resample_arrays(sci, None, dq, np.eye(2), [0.0005, 0.0], sci.shape)
    assert len(np.argwhere(whole.dq & dqbits.COSMIC_RAY)) == 9


def test_variance_stays_positive_and_gaps_are_filled_first():
    sci = _smooth()
    var = np.zeros_like(sci)
    var[:, 70] = 1e4  # a spike that makes the spline ring negative
    dq = np.zeros(sci.shape, np.uint16)
    dq[:, 80:90] = dqbits.NO_DATA
    out = resample_arrays(sci, var, dq, np.eye(2), [0.0, 0.5], sci.shape)
    assert out.var.min() >= 0
    (filled,) = fill_flagged([np.where(dq > 0, 0, sci)], dq)
    assert np.all(filled[:, 80:84] == filled[:, 79:80]) and np.all(filled[:, 86:90] == filled[:, 90:91])
    assert np.all(filled[:, 84:86] == 0)  # beyond the 4-pixel band


@pytest.mark.parametrize("matrix", [np.eye(2), [[1.0, 0.0], [0.0, 1.0 + 1e-5]]], ids=["fast", "general"])
def test_dead_column_through_a_star_leaves_the_good_pixels_unbiased(matrix):
    """A flagged dead column in a bright star's wing must not leak into the resampled flux.

    The cubic spline spreads each input over neighbours with weights of both signs: unfilled,
    this 2-column dead column (30% response, 6 pixels from the centre) biased the star's flux
    on the unflagged pixels by half a percent, several times a bright star's noise.
    """
    clean = np.zeros((80, 80))
    add_stars(clean, [40.3], [39.6], [1e6], PSF(((1.0, Gaussian(4.6)),)))
    clean = (clean + 500.0).astype(np.float32)
    dead = clean.copy()
    dead[:, 45:47] *= 0.3
    dq = np.zeros(clean.shape, np.uint16)
    dq[:, 45:47] = dqbits.BAD_PIXEL
    shift = [0.37, 0.5]
    ref = resample_arrays(clean, None, None, matrix, shift, clean.shape)
    out = resample_arrays(dead, None, dq, matrix, shift, clean.shape)
    good = (out.dq == 0) & out.covered
    good[:, :5] = good[:, -5:] = False
    diff = (out.sci - ref.sci)[good] / 1e6
    # Left unfilled, the column biased the good pixels by +0.5% of the star's flux.
    assert abs(diff.sum()) < 5e-4, f"dead column biases the star's flux by {diff.sum():.3%}"
    assert np.abs(diff).sum() < 1e-3


def test_noise_factor_is_the_sum_of_the_squared_interpolation_weights():
    """The interpolation weights of each input pixel, read off the interpolation of unit
    impulses by scipy.ndimage (spline prefilter included), squared and summed."""
    from scipy import ndimage

    positions = np.array([0.0, 0.5, 1e-3, 0.25, 0.37, 0.8, 0.999, 7.62, -3.3, 1234.5])
    size = 41
    for order in (3, 1):
        weights = np.zeros((size, positions.size))
        for k in range(size):
            impulse = np.zeros(size)
            impulse[k] = 1.0
            at = size // 2 + positions % 1.0
            weights[k] = ndimage.map_coordinates(impulse, at[np.newaxis], order=order, mode="mirror")
        expected = (weights**2).sum(axis=0)
        found = noise_factor(positions, order)
        assert found.dtype == np.float32
        np.testing.assert_allclose(found, expected, rtol=2e-6, atol=0)
    assert noise_factor(np.array([0.5]), 3)[0] == pytest.approx(0.7561, abs=1e-4)
    assert noise_factor(np.array([0.5]), 1)[0] == 0.5


@pytest.mark.parametrize("interpolant", ["poly3", "linear"])
@pytest.mark.parametrize("shift", [[0.5, 0.5], [0.3, 0.8], [0.1, 0.0]])
def test_resampled_var_matches_the_noise_of_each_pixel_and_of_sums(shift, interpolant):
    """VAR describes each resampled pixel's noise; VARCORR turns summed VAR into a sum's variance."""
    rng = np.random.default_rng(5)
    n_images, size, var_in = 40, 64, 100.0
    order = 3 if interpolant == "poly3" else 1
    pixels, sums = [], []
    for _ in range(n_images):
        noise = rng.normal(0.0, np.sqrt(var_in), (size, size)).astype(np.float32)
        out = resample_arrays(
            noise, np.full_like(noise, var_in), None, np.eye(2), shift, noise.shape, interpolant=interpolant
        )
        inner = out.sci[8:-8, 8:-8]
        pixels.append(inner / np.sqrt(out.var[8:-8, 8:-8]))
        sums.append(inner.reshape(4, 12, 4, 12).sum(axis=(1, 3)).ravel())
    assert np.std(pixels) == pytest.approx(1.0, abs=0.02)
    summed_var = 144 * float(np.median(out.var[8:-8, 8:-8]))
    varcorr = variance_correlation(np.eye(2), np.asarray(shift), (size, size), order)
    # A sum over 12x12 pixels keeps all but its edges' share of the input's variance.
    assert np.var(sums) / (summed_var * varcorr) == pytest.approx(1.0, abs=0.12)
    if shift != [0.1, 0.0]:
        assert varcorr > 1.2  # without the correction, sums' errors would be underestimated


def _frame(sci: np.ndarray, scale_arcsec: float, crpix) -> Frame:
    cd = scale_arcsec / 3600.0
    header = fits.Header(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": 40.0,
            "CRVAL2": 5.0,
            "CRPIX1": crpix[0],
            "CRPIX2": crpix[1],
            "CD1_1": -cd,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": cd,
        }
    )
    return Frame(fits.Header(), [Extension(sci, header, sci + 1.0, np.zeros(sci.shape, np.uint16))], "r")


def test_flux_is_conserved_across_pixel_scales():
    big = np.zeros((100, 100))
    add_stars(big, [50.2], [49.7], [1e5], PSF(((1.0, Gaussian(3.0)),)))
    ref = _frame(np.zeros((200, 200), np.float32), 0.1, (100.5, 100.5))
    coarse = _frame(big.astype(np.float32), 0.2, (50.5, 50.5))
    out = resample_to_reference([ref, coarse], trim_data=True)
    ext = out[1][0]
    assert ext.shape == (200, 200)
    assert ext.header["JFACTOR"] == pytest.approx(0.25, rel=1e-6)
    assert ext.sci.sum() == pytest.approx(1e5, rel=0.005)
    assert "ALIGN" in out[1].phu


@pytest.fixture(scope="module")
def resampled(gmos_starfield_small):
    names = [SCIENCE[0], SCIENCE[2]]
    mosaics = [add_objcat(mosaic_gmos(noise_free_frame(gmos_starfield_small, n))) for n in names]
    aligned = adjust_wcs_to_reference(mosaics)
    return aligned, resample_to_reference(aligned)


def test_common_frame_keeps_positions_and_fluxes(resampled, gmos_starfield_small):
    aligned, out = resampled
    assert out[0][0].shape == out[1][0].shape
    # The reference is copied into the larger grid; its WCS moves with it.
    ref_in, ref_out = aligned[0][0], out[0][0]
    dx = int(round(ref_out.header["CRPIX1"] - ref_in.header["CRPIX1"]))
    dy = int(round(ref_out.header["CRPIX2"] - ref_in.header["CRPIX2"]))
    np.testing.assert_array_equal(
        ref_out.sci[dy : dy + ref_in.shape[0], dx : dx + ref_in.shape[1]], ref_in.sci
    )
    # Stars of the dithered frame land where the truth says on the common grid.
    ext = out[1][0]
    cat = detect_sources(ext)
    truth_xy, truth_flux = truth_pixels(ext.header, gmos_starfield_small)
    rows, idx = isolated_matches(cat, truth_xy, truth_flux, min_flux=2e4)
    assert rows.size >= 5
    offsets = np.hypot(cat["X_IMAGE"][rows] - truth_xy[idx, 0], cat["Y_IMAGE"][rows] - truth_xy[idx, 1])
    assert np.sqrt(np.mean(offsets**2)) < 0.05
    # Aperture fluxes (sky removed) before and after resampling agree.
    ra, dec = WCS(ext.header).all_pix2world(cat["X_IMAGE"][rows], cat["Y_IMAGE"][rows], 1)
    bx, by = WCS(aligned[1][0].header).all_world2pix(ra, dec, 0)
    radius = 10.0
    before, _, _ = sep.sum_circle(aligned[1][0].sci - np.float32(SKY), bx, by, radius)
    after, _, _ = sep.sum_circle(
        ext.sci - np.float32(SKY), cat["X_IMAGE"][rows] - 1, cat["Y_IMAGE"][rows] - 1, radius
    )
    assert np.all(np.abs(after / before - 1.0) < 0.005)


def test_no_data_outside_each_footprint(resampled):
    aligned, out = resampled
    ext = out[1][0]
    inp = aligned[1][0]
    ny, nx = ext.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = WCS(ext.header).all_pix2world(xx.ravel(), yy.ravel(), 0)
    ix, iy = WCS(inp.header).all_world2pix(ra, dec, 0)
    outside = ((ix < -0.5) | (ix > inp.shape[1] - 0.5) | (iy < -0.5) | (iy > inp.shape[0] - 0.5)).reshape(
        ny, nx
    )
    assert outside.any()
    assert np.all(ext.dq[outside] & dqbits.NO_DATA) and np.all(ext.sci[outside] == 0)
    assert np.all(ext.var >= 0) and ext.sci.dtype == np.float32 and ext.dq.dtype == np.uint16


def test_resample_rejects_bad_input():
    frame = _frame(np.zeros((10, 10), np.float32), 0.1, (5, 5))
    with pytest.raises(ValueError, match="reference_index"):
        resample_to_reference([frame], reference_index=3)
    with pytest.raises(ValueError, match="interpolant"):
        resample_to_reference([frame], interpolant="lanczos")
    with pytest.raises(ValueError, match="single extension"):
        resample_to_reference([Frame(frame.phu, frame.extensions * 2, "two")])


def test_pixels_loaded_one_frame_at_a_time_give_the_same_result(resampled):
    aligned, out = resampled
    # Frames that hold only headers and shapes; the planes come from the loader, in order.
    bare = [
        Frame(f.phu, [Extension(np.broadcast_to(np.float32(0), f[0].shape), f[0].header)], f.root)
        for f in aligned
    ]
    asked = []

    def pixels(index):
        asked.append(index)
        return aligned[index][0]

    lazy = resample_to_reference(bare, pixels=pixels)
    assert asked == [0, 1]
    for a, b in zip(out, lazy, strict=True):
        np.testing.assert_array_equal(a[0].sci, b[0].sci)
        np.testing.assert_array_equal(a[0].var, b[0].var)
        np.testing.assert_array_equal(a[0].dq, b[0].dq)
    with pytest.raises(ValueError, match="pixels of shape"):
        resample_to_reference(bare, pixels=lambda _: Extension(np.zeros((3, 3), np.float32), fits.Header()))
