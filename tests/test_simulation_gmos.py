"""The GMOS simulator writes archive-like raw files whose pixels agree with the truth files."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from gemred.instruments import gmos
from gemred.sections import parse_section
from gemred.simulation import gmos as gmos_sim
from gemred.simulation.presets import gmos_starfield_plan, simulate

BIASES = [f"N20170613S{n:04d}.fits" for n in range(180, 185)] + [
    f"N20170615S{n:04d}.fits" for n in range(534, 539)
]
FLATS = [f"N20170702S{n:04d}.fits" for n in range(178, 183)]
SCIENCE = [f"N20170614S{n:04d}.fits" for n in range(201, 206)]
BPM = "bpm_20170306_gmos-n_Ham_22_full_12amp.fits"


def _overscan_corrected(hdu: fits.ImageHDU) -> np.ndarray:
    """Data section minus the per-row mean of the overscan (simple, for checking the simulator)."""
    data = hdu.data.astype(np.float64)
    dsec = parse_section(hdu.header["DATASEC"])
    bsec = parse_section(hdu.header["BIASSEC"])
    over = data[bsec.slices()]
    # Leave out the columns that carry charge trailed from the data, as DRAGONS does.
    over = over[:, :-4] if bsec.x1 == 0 else over[:, 4:]
    return data[dsec.slices()] - over.mean(axis=1, keepdims=True)


def test_files_names_and_counts(gmos_starfield_small: Path) -> None:
    names = sorted(p.name for p in gmos_starfield_small.glob("*.fits"))
    assert names == sorted(BIASES + FLATS + SCIENCE + [BPM])
    truth = sorted(p.name for p in (gmos_starfield_small / "truth").iterdir())
    for expected in ("stars.csv", "frames.csv", "flat_response_i.fits", "bias_structure_adu.fits"):
        assert expected in truth


def test_raw_layout_is_archive_like(gmos_starfield_small: Path) -> None:
    with fits.open(gmos_starfield_small / SCIENCE[0], do_not_scale_image_data=True) as hdul:
        assert hdul[0].header["NAXIS"] == 0
        assert len(hdul) == 13
        for ext, hdu in enumerate(hdul[1:], start=1):
            hdr = hdu.header
            assert hdr["BITPIX"] == 16 and hdr["BZERO"] == 32768
            assert "EXTNAME" not in hdr
            ny, nx = hdu.data.shape
            dsec, bsec = parse_section(hdr["DATASEC"]), parse_section(hdr["BIASSEC"])
            ccdsec, detsec = parse_section(hdr["CCDSEC"]), parse_section(hdr["DETSEC"])
            assert bsec.shape == (ny, 32)
            assert dsec.shape[1] + bsec.shape[1] == nx and dsec.y2 == ny
            # Overscan on the right of odd extensions, on the left of even ones.
            assert (bsec.x1 == nx - 32) if ext % 2 else (bsec.x1 == 0)
            # DETSEC and CCDSEC are unbinned; DATASEC binned 2x2.
            assert hdr["CCDSUM"] == "2 2"
            assert ccdsec.shape == (2 * dsec.shape[0], 2 * dsec.shape[1]) == detsec.shape
            ccd = (ext - 1) // 4
            assert detsec.x1 == ccdsec.x1 + 2048 * ccd
            assert ccdsec.x1 // 512 == (ext - 1) % 4
            assert hdr["AMPNAME"].startswith(hdr["CCDNAME"])
        with fits.open(gmos_starfield_small / SCIENCE[0]) as scaled:
            assert scaled[1].data.dtype == np.uint16


def test_small_headers_are_a_crop_of_full_headers() -> None:
    rng = np.random.default_rng(0)
    plan = gmos_starfield_plan("small", rng)
    frame = plan.frames[-1]
    full = gmos_sim.GmosScene(
        gmos_sim.GmosGeometry(plan.scene.geom.dset, 2, 2, "full"), plan.scene.stars, plan.scene.psf
    )
    for small_amp, full_amp in zip(plan.scene.geom.amps, full.geom.amps, strict=True):
        hs = gmos_sim._ext_header(plan.scene, frame, small_amp)
        hf = gmos_sim._ext_header(full, frame, full_amp)
        assert hs["AMPNAME"] == hf["AMPNAME"]
        cs, cf = parse_section(hs["CCDSEC"]), parse_section(hf["CCDSEC"])
        assert cf.x1 <= cs.x1 < cs.x2 <= cf.x2 and cf.y1 <= cs.y1 < cs.y2 <= cf.y2
        # The same chip pixel has the same sky position in both headers.
        ws, wf = WCS(hs), WCS(hf)
        ds, df = parse_section(hs["DATASEC"]), parse_section(hf["DATASEC"])
        xs, ys = ds.x1 + 10, 7
        xf = df.x1 + (cs.x1 - cf.x1) // 2 + 10
        yf = (cs.y1 - cf.y1) // 2 + 7
        a = ws.pixel_to_world_values(xs, ys)
        b = wf.pixel_to_world_values(xf, yf)
        assert np.allclose(a, b, atol=1e-9)


def test_bias_levels_and_read_noise_match_the_tables(gmos_starfield_small: Path) -> None:
    dset = gmos.detector_set("GMOS-N", detid="BI13-20-4k-1,BI12-09-4k-2,BI13-18-4k-2")
    with fits.open(gmos_starfield_small / BIASES[0]) as a, fits.open(gmos_starfield_small / BIASES[1]) as b:
        for ha, hb in zip(a[1:], b[1:], strict=True):
            cal = gmos.amp_calibration(dset, ha.header["AMPNAME"])
            bsec = parse_section(ha.header["BIASSEC"])
            assert np.median(ha.data[bsec.slices()]) == pytest.approx(cal.bias_level, abs=3)
            diff = _overscan_corrected(ha) - _overscan_corrected(hb)
            robust_std = 1.4826 * np.median(np.abs(diff - np.median(diff)))
            rn = robust_std / np.sqrt(2) * cal.gain
            # Row noise cancels in overscan-corrected differences; what is left is read noise
            # (and a few cosmic rays, hence robust statistics).
            assert rn == pytest.approx(cal.read_noise, rel=0.06)
            assert ha.header["GAIN"] == cal.gain and ha.header["RDNOISE"] == cal.read_noise


def test_bias_structure_truth_matches_the_biases(gmos_starfield_small: Path) -> None:
    stack = []
    for name in BIASES:
        with fits.open(gmos_starfield_small / name) as hdul:
            stack.append([_overscan_corrected(h) for h in hdul[1:]])
    with fits.open(gmos_starfield_small / "truth" / "bias_structure_adu.fits") as truth:
        for ext in range(12):
            mean = np.mean([s[ext] for s in stack], axis=0)
            rn_adu = 4.5 / 1.6
            resid = mean - truth[ext + 1].data
            # Residual is read noise averaged over ten frames (plus the overscan-level noise);
            # robust statistics, since the biases carry a few cosmic rays.
            robust_std = 1.4826 * np.median(np.abs(resid - np.median(resid)))
            assert robust_std < 1.15 * rn_adu / np.sqrt(10)
            assert abs(np.median(resid)) < 0.3


def test_twilight_levels_fall_and_flat_truth_matches(gmos_starfield_small: Path) -> None:
    frames = pd.read_csv(gmos_starfield_small / "truth" / "frames.csv").set_index("filename")
    exptimes = [frames.loc[f, "exptime"] for f in FLATS]
    assert exptimes == [40, 34, 28, 22, 16]
    levels = []
    with fits.open(gmos_starfield_small / "truth" / "flat_response_i.fits") as truth:
        response = [truth[i].data for i in range(1, 13)]
    ratios = []
    for name in FLATS:
        with fits.open(gmos_starfield_small / name) as hdul:
            electrons = [
                (_overscan_corrected(h) - t.data) * h.header["GAIN"]
                for h, t in zip(
                    hdul[1:],
                    fits.open(gmos_starfield_small / "truth" / "bias_structure_adu.fits")[1:],
                    strict=True,
                )
            ]
        levels.append(np.median(electrons[5]))
        ratios.append([e / r for e, r in zip(electrons, response, strict=True)])
    assert all(a > b for a, b in zip(levels, levels[1:], strict=False))
    # Dividing by the true response leaves a flat field: every amplifier at the same level.
    for frame_ratios in ratios:
        meds = [np.median(r[np.isfinite(r)]) for r in frame_ratios]
        assert np.ptp(meds) / np.mean(meds) < 0.01


def test_bpm_flags_the_injected_defects(gmos_starfield_small: Path) -> None:
    with fits.open(gmos_starfield_small / BPM) as bpm:
        assert bpm[0].header["OBSTYPE"] == "BPM"
        masks = [h.data for h in bpm[1:]]
    with fits.open(gmos_starfield_small / "truth" / "flat_response_i.fits") as truth:
        response = [h.data for h in truth[1:]]
    with fits.open(gmos_starfield_small / "truth" / "hot_pixels_e_per_s.fits") as truth:
        hot = [h.data for h in truth[1:]]
    with fits.open(gmos_starfield_small / SCIENCE[0]) as raw:
        dsecs = [parse_section(h.header["DATASEC"]) for h in raw[1:]]
        assert [m.shape for m in masks] == [h.data.shape for h in raw[1:]]
    n_bad_columns = 0
    for mask, resp, hp, dsec in zip(masks, response, hot, dsecs, strict=True):
        data_mask = mask[dsec.slices()] > 0
        defect = (resp < 0.5) | (hp > 0)
        assert np.array_equal(data_mask, defect)
        n_bad_columns += int(np.sum(data_mask.all(axis=0)))
    assert n_bad_columns >= 3


def _box_prediction(x, y, flux, ix: int, iy: int, r: int, margin: float) -> float | None:
    """Flux of the stars centred in the box ``[ix-r, ix+r] x [iy-r, iy+r]``, or None when stars just
    outside the box (within ``margin``) or just inside its edge would spill light across it."""
    x, y, flux = np.asarray(x), np.asarray(y), np.asarray(flux)
    dx, dy = np.abs(x - ix), np.abs(y - iy)
    inside = (dx <= r + 0.5) & (dy <= r + 0.5)
    edge = (np.maximum(dx, dy) > r + 0.5 - margin) & (np.maximum(dx, dy) < r + 0.5 + margin)
    total = flux[inside].sum()
    # A star in the edge zone puts roughly half its light in the box: keep that below 0.5%.
    if flux[edge].sum() > 0.01 * total:
        return None
    return total


def test_star_flux_matches_truth_on_a_noise_free_render() -> None:
    rng = np.random.default_rng(3)
    plan = gmos_starfield_plan("small", rng)
    scene = plan.scene
    fwhm = scene.psf.fwhm
    r = int(4 * fwhm)
    checked = 0
    for frame, ccd in itertools.product(plan.frames[-5:], range(3)):
        image = gmos_sim.render_ccd_electrons(scene, frame, ccd, sky=False)
        pix = gmos_sim.star_pixels(scene, frame, ccd)
        ny, nx = image.shape
        bright = pix.flux_e_per_s > 3e3
        inside = (pix.x > r) & (pix.x < nx - r - 1) & (pix.y > r) & (pix.y < ny - r - 1)
        for idx in np.flatnonzero(inside & bright):
            ix, iy = int(round(pix.x[idx])), int(round(pix.y[idx]))
            expected = _box_prediction(pix.x, pix.y, pix.flux_e_per_s * frame.exptime, ix, iy, r, 2 * fwhm)
            if expected is None:
                continue
            total = image[iy - r : iy + r + 1, ix - r : ix + r + 1].sum()
            assert total == pytest.approx(expected, rel=0.01)
            checked += 1
    assert checked >= 10


def _ccd_images(hdul: fits.HDUList, bias: fits.HDUList, flat: fits.HDUList) -> dict[int, np.ndarray]:
    """Electrons per CCD (binned, NaN where no amplifier was kept), calibrated with the truth."""
    images: dict[int, np.ndarray] = {}
    for ext in range(1, 13):
        hdr = hdul[ext].header
        electrons = (_overscan_corrected(hdul[ext]) - bias[ext].data) * hdr["GAIN"] / flat[ext].data
        ccdsec = parse_section(hdr["CCDSEC"])
        image = images.setdefault((ext - 1) // 4, np.full((electrons.shape[0], 1024), np.nan))
        image[:, ccdsec.x1 // 2 : ccdsec.x2 // 2] = electrons
    return images


def test_star_flux_in_raw_frame_matches_truth(gmos_starfield_small: Path) -> None:
    """Calibrate raw science frames with the truth patterns; bright isolated stars give their flux."""
    stars = pd.read_csv(gmos_starfield_small / "truth" / "stars.csv")
    frames = pd.read_csv(gmos_starfield_small / "truth" / "frames.csv").set_index("filename")
    bias = fits.open(gmos_starfield_small / "truth" / "bias_structure_adu.fits")
    flat = fits.open(gmos_starfield_small / "truth" / "flat_response_i.fits")
    ratios = []
    r = 15
    unsaturated = ((stars.mag < 19.0) & (stars.mag > 15.5)).to_numpy()
    # Header WCSs after the first carry a pointing error of ~1 pixel: the box still holds the star.
    for name in SCIENCE:
        exptime = frames.loc[name, "exptime"]
        sky = frames.loc[name, "sky_e_per_s_per_pixel"] * exptime
        with fits.open(gmos_starfield_small / name) as hdul:
            images = _ccd_images(hdul, bias, flat)
            for ccd, image in images.items():
                hdr = hdul[4 * ccd + 1].header
                x, y = WCS(hdr).world_to_pixel_values(stars.ra_deg.to_numpy(), stars.dec_deg.to_numpy())
                x = x - parse_section(hdr["DATASEC"]).x1 + parse_section(hdr["CCDSEC"]).x1 // 2
                for idx in np.flatnonzero(unsaturated):
                    ix, iy = int(round(x[idx])), int(round(y[idx]))
                    if not (r <= ix < image.shape[1] - r and r <= iy < image.shape[0] - r):
                        continue
                    box = image[iy - r : iy + r + 1, ix - r : ix + r + 1] - sky
                    expected = _box_prediction(x, y, stars.flux_e_per_s * exptime, ix, iy, r, 10)
                    # Boxes with a dead pixel or column, or outside the kept strips, are skipped.
                    if expected is None or not np.isfinite(box).all() or flat_defect(box):
                        continue
                    ratios.append(box.sum() / expected)
    assert len(ratios) >= 5
    assert np.median(ratios) == pytest.approx(1.0, abs=0.01)


def flat_defect(box: np.ndarray) -> bool:
    """True when a box holds a pixel that flat-fielding blew up (a dead pixel or column)."""
    return bool(np.abs(box).max() > 1e7)


def test_header_wcs_agrees_with_offsets_and_truth(gmos_starfield_small: Path) -> None:
    frames = pd.read_csv(gmos_starfield_small / "truth" / "frames.csv").set_index("filename")
    ref = fits.getheader(gmos_starfield_small / SCIENCE[0], 5)
    for name in SCIENCE:
        hdr = fits.getheader(gmos_starfield_small / name, 5)
        phu = fits.getheader(gmos_starfield_small / name, 0)
        # Sources move by (+P, +Q)/pixel_scale on the detector: the pixel of a fixed sky point moves so.
        x0, y0 = WCS(ref).world_to_pixel_values(ref["CRVAL1"], ref["CRVAL2"])
        x1, y1 = WCS(hdr).world_to_pixel_values(ref["CRVAL1"], ref["CRVAL2"])
        scale = 0.0807 * 2
        assert x1 - x0 == pytest.approx(phu["POFFSET"] / scale, abs=0.01)
        assert y1 - y0 == pytest.approx(phu["QOFFSET"] / scale, abs=0.01)
        err = np.hypot(
            frames.loc[name, "pointing_error_east_arcsec"], frames.loc[name, "pointing_error_north_arcsec"]
        )
        assert err < 1.0
    assert frames.loc[SCIENCE[0], "pointing_error_east_arcsec"] == 0.0


def test_cosmic_rays_and_saturation_present(gmos_starfield_small: Path) -> None:
    frames = pd.read_csv(gmos_starfield_small / "truth" / "frames.csv")
    assert (frames.cosmic_rays > 0).all()
    saturated = 0
    for name in SCIENCE:
        with fits.open(gmos_starfield_small / name) as hdul:
            saturated += sum(int(np.sum(h.data == 65535)) for h in hdul[1:])
    assert saturated > 0


def test_fringe_preset_has_strong_fringes(gmos_fringe_small: Path) -> None:
    frames = pd.read_csv(gmos_fringe_small / "truth" / "frames.csv")
    science = frames[frames.object == "fringe-field"]
    assert len(science) >= 3 and (science.filter_name == "z").all()
    assert (science.fringe_e_per_s_per_pixel / science.sky_e_per_s_per_pixel).min() > 0.02
    with fits.open(gmos_fringe_small / "truth" / "fringe_pattern_z.fits") as truth:
        assert np.ptp(truth[1].data) > 2 * science.fringe_e_per_s_per_pixel.iloc[0] * 0.9
    phu = fits.getheader(gmos_fringe_small / science.filename.iloc[0])
    assert phu["INSTRUME"] == "GMOS-S" and phu["FILTER2"].startswith("z_")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.fits"))}


def test_same_seed_same_bytes(tmp_path: Path, gmos_starfield_small: Path) -> None:
    simulate("gmos-starfield", tmp_path, size="small", seed=1)
    assert _digest(tmp_path) == _digest(gmos_starfield_small)
