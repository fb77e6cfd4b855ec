"""Catalogue matching and WCS alignment: synthetic lists, then the simulated pointing errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from test_mosaic import SCALE, SCIENCE, trimmed_electrons

from gemred.alignment import adjust_wcs_to_reference, chance_match_limit, fit_transform, match_catalogs
from gemred.detection import add_objcat
from gemred.frame import Extension, Frame
from gemred.mosaic import mosaic_gmos


def test_chance_limit_holds_against_the_best_of_the_search():
    """Unrelated catalogues like the small GSAOI preset's sparse standard field (33 sources a
    frame in four 5" windows, 0.02" pixels): the best shift of the search reaches the trusted
    count by chance in under 1 % of frames (never in 300 here), where three matches, nine
    times what one shift expects, are reached in over a third (five times one shift's
    expectation, the former rule, trusted them)."""
    window, n = 256 * 0.02, 33
    expected = n * n / (4 * window**2) * np.pi * 0.1**2
    limit = chance_match_limit(expected, 5.0, 0.1)
    assert 3 >= 5 * expected and limit > 3
    corners = np.array([[-40.0, -40.0], [35.0, -40.0], [-40.0, 35.0], [35.0, 35.0]])
    rng = np.random.default_rng(11)

    def field():
        return np.concatenate(
            [c + rng.uniform(0, window, (n // 4 + (i < n % 4), 2)) for i, c in enumerate(corners)]
        )

    best = np.array(
        [len(match_catalogs(field(), field(), search_radius=5.0, match_radius=0.1)[0]) for _ in range(300)]
    )
    assert np.mean(best >= 3) > 0.3
    assert best.max() < limit


def test_chance_limit_is_never_under_five_times_one_shift():
    """In a crowded field, where the Poisson tail alone would ask for less."""
    assert chance_match_limit(10.0, 5.0, 0.1) == 50
    assert chance_match_limit(0.0, 5.0, 0.1) == 1


def test_match_catalogs_finds_shift_despite_clutter():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1000, (300, 2))
    order = rng.permutation(250)
    xy = ref[order] + [7.3, -4.1] + rng.normal(0, 0.05, (250, 2))
    xy = np.vstack([xy, rng.uniform(0, 1000, (60, 2))])
    iref, ixy = match_catalogs(ref, xy, search_radius=15.0, match_radius=1.0)
    truth = dict(zip(order, range(250), strict=True))
    good = sum(truth.get(i) == j for i, j in zip(iref, ixy, strict=True))
    assert good >= 245 and len(iref) - good <= 3


def test_match_catalogs_edge_cases():
    assert [
        len(a) for a in match_catalogs(np.zeros((0, 2)), np.ones((3, 2)), search_radius=5, match_radius=1)
    ] == [0, 0]
    far = match_catalogs([[0.0, 0.0]], [[100.0, 100.0]], search_radius=5, match_radius=1)
    assert len(far[0]) == 0
    with pytest.raises(ValueError, match="positive"):
        match_catalogs([[0.0, 0.0]], [[0.0, 0.0]], search_radius=0, match_radius=1)


def test_fit_transform_rotation_scale_and_outliers():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0, 2000, (200, 2))
    theta = np.radians(0.05)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    obs = pred @ (1.0002 * rot).T + [1.5, -2.0] + rng.normal(0, 0.02, (200, 2))
    obs[:5] += 3.0
    matrix, shift, keep = fit_transform(pred, obs, rotate=True, scale=True)
    np.testing.assert_allclose(matrix, 1.0002 * rot, atol=2e-6)
    np.testing.assert_allclose(shift, [1.5, -2.0], atol=0.01)
    assert not keep[:5].any() and keep[5:].mean() > 0.97
    matrix, shift, _ = fit_transform(pred[5:], obs[5:] - pred[5:] @ (1.0002 * rot).T + pred[5:])
    np.testing.assert_array_equal(matrix, np.eye(2))
    np.testing.assert_allclose(shift, [1.5, -2.0], atol=0.01)


def _synthetic(xy: np.ndarray, crpix, cd, *, poff=(0.0, 0.0)) -> Frame:
    header = fits.Header(
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": 150.0,
            "CRVAL2": 2.0,
            "CRPIX1": crpix[0],
            "CRPIX2": crpix[1],
            "CD1_1": cd[0][0],
            "CD1_2": cd[0][1],
            "CD2_1": cd[1][0],
            "CD2_2": cd[1][1],
        }
    )
    cat = Table({"X_IMAGE": xy[:, 0], "Y_IMAGE": xy[:, 1], "FLAGS": np.zeros(len(xy), dtype=np.int16)})
    ext = Extension(np.zeros((1000, 1000)), header, None, None, cat)
    phu = fits.Header({"POFFSET": poff[0], "QOFFSET": poff[1]})
    return Frame(phu, [ext], f"f{poff[0]}")


def test_rotation_is_recovered_when_asked():
    rng = np.random.default_rng(2)
    scale = 0.16 / 3600
    cd = [[-scale, 0.0], [0.0, scale]]
    sky = rng.uniform(50, 950, (80, 2))
    ref = _synthetic(sky, (500.0, 500.0), cd)
    # The second frame's sources are rotated by 0.1 deg about (500, 500) and shifted.
    theta = np.radians(0.1)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (sky - 500.0) @ rot.T + 500.0 + [3.0, -2.0]
    other = _synthetic(moved, (500.0, 500.0), cd)
    shifted, rotated = (
        adjust_wcs_to_reference([ref, other], rotate=flag)[1][0].header for flag in (False, True)
    )
    x, y = WCS(rotated).all_world2pix(*WCS(ref[0].header).all_pix2world(sky[:, 0], sky[:, 1], 1), 1)
    np.testing.assert_allclose(np.column_stack([x, y]), moved, atol=1e-3)
    assert rotated["NMATCHED"] == 80 and rotated["ALIGNMTH"] == "sources"
    assert rotated["ALIGNDX"] == pytest.approx(3.0, abs=0.01)
    assert shifted["ALIGNDX"] == pytest.approx(3.0, abs=0.1)


def test_too_few_matches_fall_back_to_offsets():
    scale = 0.16 / 3600
    cd = [[-scale, 0.0], [0.0, scale]]
    ref = _synthetic(np.array([[100.0, 100.0], [600.0, 300.0]]), (500.0, 500.0), cd)
    other = _synthetic(np.array([[900.0, 900.0]]), (480.0, 510.0), cd, poff=(1.6, -0.8))
    with pytest.warns(UserWarning, match="telescope offsets"):
        out = adjust_wcs_to_reference([ref, other])
    hdr = out[1][0].header
    assert hdr["ALIGNMTH"] == "offsets"
    # Sources move by (+P, +Q) / pixel scale: 10 and -5 pixels.
    assert hdr["CRPIX1"] == pytest.approx(510.0) and hdr["CRPIX2"] == pytest.approx(495.0)


def test_alignment_needs_catalogues_and_single_extensions():
    frame = _synthetic(np.zeros((3, 2)), (1.0, 1.0), [[1e-5, 0], [0, 1e-5]])
    frame[0].objcat = None
    with pytest.raises(ValueError, match="OBJCAT"):
        adjust_wcs_to_reference([frame])
    with pytest.raises(ValueError, match="no frames"):
        adjust_wcs_to_reference([])


@pytest.fixture(scope="module")
def aligned(gmos_starfield_small) -> list[Frame]:
    truth = gmos_starfield_small / "truth"
    mosaics = [
        add_objcat(mosaic_gmos(trimmed_electrons(gmos_starfield_small / f"{name}.fits", truth=truth)))
        for name in SCIENCE
    ]
    return adjust_wcs_to_reference(mosaics)


def test_alignment_recovers_injected_pointing_errors(aligned, gmos_starfield_small):
    frames = pd.read_csv(gmos_starfield_small / "truth" / "frames.csv").set_index("filename")
    for frame in aligned[1:]:
        hdr = frame[0].header
        row = frames.loc[f"{frame.root}.fits"]
        # At PA 0 East is -x: a pointing error (east, north) moves stars by (+east, -north) / scale.
        expected = np.array([row.pointing_error_east_arcsec, -row.pointing_error_north_arcsec]) / SCALE
        assert hdr["ALIGNMTH"] == "sources" and hdr["NMATCHED"] >= 20
        assert np.hypot(hdr["ALIGNDX"] - expected[0], hdr["ALIGNDY"] - expected[1]) < 0.05
    assert aligned[0][0].header["ALIGNDX"] == 0.0 and "ADJWCS" in aligned[0].phu
