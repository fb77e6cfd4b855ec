"""Distortion-corrected GSAOI geometry against the simulator's truth: sky positions of the four
arrays, alignment of dithered frames, the North-up grid and flux-conserving resampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from gemred import dq as dqbits
from gemred.distortion import (
    align_geometries,
    common_grid,
    frame_geometry,
    pixel_to_sky,
    resample_to_grid,
    sky_to_pixel,
    to_tangent,
)
from gemred.frame import Extension, Frame
from gemred.instruments import gsaoi
from gemred.io import GemredInputError, read_frame

PIX = gsaoi.PIXEL_SCALE


@pytest.fixture(scope="module")
def truth(gsaoi_offsetsky_small):
    raw = gsaoi_offsetsky_small
    stars = pd.read_csv(raw / "truth" / "stars.csv").set_index("star_id")
    pixels = pd.read_csv(raw / "truth" / "stars_pixels.csv")
    frames = pd.read_csv(raw / "truth" / "frames.csv").set_index("filename")
    return raw, stars, pixels, frames


def _truth_offsets(geom, pixels, stars, name):
    """Per extension, (model - truth) tangent-plane offsets in pixels of every star on it."""
    out = []
    rows = pixels[pixels["filename"] == f"{name}.fits"]
    for ext in range(4):
        on = rows[rows["ext"] == ext + 1]
        ra, dec = pixel_to_sky(geom, ext, on["x"].to_numpy(), on["y"].to_numpy())
        true = stars.loc[on["star_id"]]
        centre = geom.pointing
        xi, eta = to_tangent(ra, dec, centre)
        txi, teta = to_tangent(true["ra_deg"].to_numpy(), true["dec_deg"].to_numpy(), centre)
        out.append(np.column_stack([xi - txi, eta - teta]) / PIX)
    return out


def test_model_puts_stars_where_truth_does_on_all_arrays(truth):
    raw, stars, pixels, _ = truth
    frame = read_frame(raw / "S20170505S0095.fits")  # the first science frame has no pointing error
    geom = frame_geometry(frame)
    assert np.allclose(geom.rotation, np.eye(2), atol=1e-6)  # PA = 0
    offsets = _truth_offsets(geom, pixels, stars, "S20170505S0095")
    assert all(len(o) > 30 for o in offsets)
    for o in offsets:
        assert np.sqrt((o**2).sum(axis=1).max()) < 0.01
    # The header's linear WCS alone is pixels off at the field corners: the model is needed.
    rows = pixels[pixels["filename"] == "S20170505S0095.fits"]
    worst = 0.0
    for ext in range(4):
        on = rows[rows["ext"] == ext + 1]
        ra, dec = WCS(frame[ext].header).all_pix2world(on["x"], on["y"], 0)
        true = stars.loc[on["star_id"]]
        d = np.hypot(
            *(
                np.array(to_tangent(ra, dec, geom.pointing))
                - to_tangent(true["ra_deg"], true["dec_deg"], geom.pointing)
            )
        )
        worst = max(worst, float(d.max()) / PIX)
    assert worst > 2.0


def test_sky_to_pixel_inverts_pixel_to_sky(truth):
    raw = truth[0]
    geom = frame_geometry(read_frame(raw / "S20170505S0100.fits"))
    x, y = np.meshgrid(np.linspace(0, 255, 7), np.linspace(0, 255, 7))
    for ext in range(4):
        bx, by = sky_to_pixel(geom, ext, *pixel_to_sky(geom, ext, x, y))
        assert np.abs(bx - x).max() < 1e-6 and np.abs(by - y).max() < 1e-6


def _truth_catalogs(pixels, name):
    """Catalogues (1-based X_IMAGE, Y_IMAGE) of the true star positions of a frame."""
    rows = pixels[pixels["filename"] == f"{name}.fits"]
    return [
        Table({"X_IMAGE": on["x"].to_numpy() + 1.0, "Y_IMAGE": on["y"].to_numpy() + 1.0})
        for on in (rows[rows["ext"] == ext + 1] for ext in range(4))
    ]


def test_alignment_removes_pointing_errors_and_bad_wcs(truth):
    raw, stars, pixels, frames = truth
    names = ["S20170505S0095", "S20170505S0096", "S20170505S0108"]  # 0108 has a WCS 40" off
    loaded = [read_frame(raw / f"{name}.fits") for name in names]
    geoms = [frame_geometry(f) for f in loaded]
    offsets = [(float(f.phu["POFFSET"]), float(f.phu["QOFFSET"])) for f in loaded]
    before = [
        np.sqrt(np.mean(np.concatenate(_truth_offsets(g, pixels, stars, n)) ** 2))
        for g, n in zip(geoms, names, strict=True)
    ]
    assert before[1] > 3.0 and before[2] > 1000.0  # 0.1-0.3" pointing error; 40" bad WCS
    aligned = align_geometries(geoms, [_truth_catalogs(pixels, n) for n in names], offsets=offsets)
    assert [g.method for g in aligned] == ["reference", "sources", "sources"]
    for geom, name in zip(aligned, names, strict=True):
        residual = np.concatenate(_truth_offsets(geom, pixels, stars, name))
        assert np.sqrt(np.mean((residual**2).sum(axis=1))) < 0.02, name
    # Without the offsets the 40" error cannot be found within first_pass and is reported.
    with pytest.raises(ValueError, match="S20170505S0108.*telescope offsets"):
        align_geometries(geoms, [_truth_catalogs(pixels, n) for n in names])


def _decoys(ref_geom, ref_cat, geom, count, north_arcsec):
    """Per extension of ``geom``, ``count`` sources where reference sources moved ``north_arcsec``
    north fall on it: a false match that lies that far from the true pointing."""
    ra, dec = [], []
    for ext, cat in enumerate(ref_cat):
        r, d = pixel_to_sky(ref_geom, ext, cat["X_IMAGE"] - 1.0, cat["Y_IMAGE"] - 1.0)
        ra.append(r)
        dec.append(d)
    ra, dec = np.concatenate(ra), np.concatenate(dec) + north_arcsec / 3600.0
    out = []
    for ext in range(4):
        x, y = sky_to_pixel(geom, ext, ra, dec)
        on = np.flatnonzero((x > 5) & (x < 250) & (y > 5) & (y < 250))[: count - sum(len(c) for c in out)]
        out.append(Table({"X_IMAGE": x[on] + 1.0, "Y_IMAGE": y[on] + 1.0}))
    return out


def test_alignment_trusts_the_offsets_over_a_few_distant_matches(truth):
    """Four sources that match the reference 2.5" away from where the telescope offsets put
    the frame (as fragments of a bright star's halo can in a sparse standard field) do not
    overrule the offsets; ten or more do."""
    raw, _, pixels, _ = truth
    names = ["S20170505S0095", "S20170505S0096"]
    loaded = [read_frame(raw / f"{name}.fits") for name in names]
    geoms = [frame_geometry(f) for f in loaded]
    offsets = [(float(f.phu["POFFSET"]), float(f.phu["QOFFSET"])) for f in loaded]
    reference = _truth_catalogs(pixels, names[0])
    few = _decoys(geoms[0], reference, geoms[1], 4, 2.5)
    assert sum(len(c) for c in few) == 4
    aligned = align_geometries(geoms, [reference, few], offsets=offsets)
    assert aligned[1].method == "offsets"
    many = _decoys(geoms[0], reference, geoms[1], 12, 2.5)
    assert sum(len(c) for c in many) >= 10
    aligned = align_geometries(geoms, [reference, many], offsets=offsets)
    assert aligned[1].method == "sources" and aligned[1].nmatched >= 10
    # Without offsets the four are all there is, and four of four sources agreeing with some
    # of the reference's 400 happens by chance at one of the search's shifts: not enough.
    with pytest.raises(GemredInputError, match="S20170505S0096.*telescope offsets"):
        align_geometries(geoms, [reference, few])


def _star_frame(geom, root, flux, positions):
    """A 4-array frame with Gaussian stars at the given 0-based pixel positions (per extension)."""
    exts = []
    yy, xx = np.mgrid[0:256, 0:256]
    for ext in range(4):
        sci = np.zeros((256, 256), np.float32)
        for x, y in positions[ext]:
            sci += flux / (2 * np.pi * 2.0**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
        dq = np.zeros((256, 256), np.uint16)
        dq[100, 100] = dqbits.BAD_PIXEL
        exts.append(Extension(sci, {}, var=np.ones((256, 256), np.float32), dq=dq))
    return Frame({}, exts, root)


def test_resampling_is_north_up_and_conserves_flux(truth):
    raw = truth[0]
    geom = frame_geometry(read_frame(raw / "S20170505S0095.fits"))
    grid = common_grid([geom])
    assert len(grid.tiles) == 4  # the four corner windows of the small preset
    positions = [[(60.0, 70.0), (180.0, 150.0)] for _ in range(4)]
    frame = _star_frame(geom, "S20170505S0095", 1e4, positions)
    out = resample_to_grid(frame, geom, grid)
    assert len(out) == 4
    for ext in out:
        wcs = WCS(ext.header)
        cd = wcs.wcs.cd
        assert cd[0, 0] < 0 and cd[1, 1] > 0 and cd[0, 1] == 0 and cd[1, 0] == 0  # North up, East left
        assert np.any(ext.dq & dqbits.NO_DATA) and np.any(ext.dq == 0)
    # Each star lands where the model puts it, with its flux.
    for ext_in in range(4):
        for x, y in positions[ext_in]:
            ra, dec = pixel_to_sky(geom, ext_in, np.array([x]), np.array([y]))
            found = False
            for ext in out:
                ox, oy = WCS(ext.header).all_world2pix(ra, dec, 0)
                ox, oy = float(ox[0]), float(oy[0])
                if 15 < ox < ext.shape[1] - 15 and 15 < oy < ext.shape[0] - 15:
                    iy, ix = int(round(oy)), int(round(ox))
                    box = ext.sci[iy - 14 : iy + 15, ix - 14 : ix + 15].astype(np.float64)
                    assert box.sum() == pytest.approx(1e4, rel=2e-3)
                    cy, cx = np.indices(box.shape)
                    assert (box * cx).sum() / box.sum() + ix - 14 == pytest.approx(ox, abs=0.02)
                    assert (box * cy).sum() / box.sum() + iy - 14 == pytest.approx(oy, abs=0.02)
                    found = True
            assert found
    # Without the Jacobian the counts would be off by the pixel-area change (~1-3 % here).
    plain = resample_to_grid(frame, geom, grid, conserve=False)
    ratio = [float(p.sci.sum() / c.sci.sum()) for p, c in zip(plain, out, strict=True)]
    assert max(abs(r - 1.0) for r in ratio) > 0.005
    # The bad pixel is carried into DQ.
    assert any(np.any(ext.dq & dqbits.BAD_PIXEL) for ext in out)
