"""End-to-end GMOS calibration recipes on the small simulated starfield, checked against its truth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS

from gemred import dq
from gemred.frame import Frame
from gemred.instruments import gmos
from gemred.io import GemredInputError, read_bpm, read_frame, write_frame
from gemred.recipes.gmos_calibrations import (
    calibrate_science,
    flat_rejection,
    make_master_bias,
    make_master_flat,
)
from gemred.sections import parse_section

BPM = "bpm_20170306_gmos-n_Ham_22_full_12amp.fits"
BIASES = [f"N20170613S{n:04d}.fits" for n in range(180, 185)] + [
    f"N20170615S{n:04d}.fits" for n in range(534, 539)
]
FLATS = [f"N20170702S{n:04d}.fits" for n in range(178, 183)]
SCIENCE = "N20170614S0201.fits"  # the first science frame: no pointing error, header WCS exact
#: Simulated PSF: Moffat of FWHM 0.75 arcsec, beta 4.765.
SEEING, BETA = 0.75, 4.765


@pytest.fixture(scope="module")
def master_bias(gmos_starfield_small: Path) -> Frame:
    return make_master_bias([gmos_starfield_small / f for f in BIASES], bpm_path=gmos_starfield_small / BPM)


@pytest.fixture(scope="module")
def master_flat(gmos_starfield_small: Path, master_bias: Frame) -> Frame:
    paths = [gmos_starfield_small / f for f in FLATS]
    return make_master_flat(paths, bias=master_bias, bpm_path=gmos_starfield_small / BPM)


def _star_light(raw_path: Path, stars: pd.DataFrame, threshold: float) -> list[np.ndarray]:
    """Per trimmed extension, pixels where a truth star adds more than ``threshold`` electrons."""
    masks = []
    with fits.open(raw_path) as hdul:
        exptime = hdul[0].header["EXPTIME"]
        for hdu in hdul[1:]:
            sec = parse_section(hdu.header["DATASEC"])
            alpha = SEEING / hdu.header["CD2_2"] / 3600.0 / (2 * np.sqrt(2 ** (1 / BETA) - 1))
            x, y = WCS(hdu.header).all_world2pix(stars.ra_deg, stars.dec_deg, 0)
            x, y = x - sec.x1, y - sec.y1
            peak = stars.flux_e_per_s.to_numpy() * exptime * (BETA - 1) / (np.pi * alpha**2)
            radius = alpha * np.sqrt(np.clip((peak / threshold) ** (1 / BETA) - 1, 0, None))
            ny, nx = sec.shape
            near = (radius > 0) & (x > -radius) & (x < nx + radius) & (y > -radius) & (y < ny + radius)
            yy, xx = np.mgrid[0:ny, 0:nx]
            mask = np.zeros((ny, nx), dtype=bool)
            for xs, ys, r in zip(x[near], y[near], radius[near], strict=True):
                mask |= (xx - xs) ** 2 + (yy - ys) ** 2 <= r**2
            masks.append(mask)
    return masks


@pytest.fixture(scope="module")
def flat_star_residue(gmos_starfield_small: Path) -> list[np.ndarray]:
    """Pixels lit by stars in two or more twilights, more than min/max rejection removes."""
    stars = pd.read_csv(gmos_starfield_small / "truth" / "stars.csv")
    lit = [_star_light(gmos_starfield_small / name, stars, threshold=20.0) for name in FLATS]
    return [np.sum(per_frame, axis=0) >= 2 for per_frame in zip(*lit, strict=True)]


def test_master_bias_matches_truth_structure(gmos_starfield_small: Path, master_bias: Frame):
    truth = fits.open(gmos_starfield_small / "truth" / "bias_structure_adu.fits")
    dset = gmos.detector_set("GMOS-N", dt.date(2017, 6, 13))
    assert master_bias.root == "N20170613S0180"
    assert "PROCBIAS" in master_bias.phu and master_bias.phu["NCOMBINE"] == 10
    for i, ext in enumerate(master_bias):
        cal = gmos.amp_calibration(dset, ext.header["AMPNAME"], "Normal")
        expected = cal.read_noise / cal.gain / np.sqrt(len(BIASES))
        assert ext.sci.dtype == ext.var.dtype == np.float32 and ext.dq.dtype == np.uint16
        assert ext.shape == truth[i + 1].data.shape
        rms = np.sqrt(np.mean((ext.sci - truth[i + 1].data) ** 2))
        assert rms <= 1.15 * expected, (i, rms / expected)
        assert np.sqrt(np.median(ext.var)) == pytest.approx(expected, rel=0.02)


def test_master_flat_matches_truth_response(
    gmos_starfield_small: Path, master_flat: Frame, flat_star_residue
):
    truth = fits.open(gmos_starfield_small / "truth" / "flat_response_i.fits")
    good = [(ext.dq == 0) & ~lit for ext, lit in zip(master_flat, flat_star_residue, strict=True)]
    ccd2 = range(4, 8)
    truth_norm = np.median(np.concatenate([truth[i + 1].data[good[i]] for i in ccd2]))
    flat_norm = np.median(np.concatenate([master_flat[i].sci[good[i]] for i in ccd2]))
    assert flat_norm == pytest.approx(1.0, abs=0.005)
    assert master_flat.root == "N20170702S0178" and "PROCFLAT" in master_flat.phu
    for i, ext in enumerate(master_flat):
        assert good[i].mean() > 0.4
        resid = ext.sci[good[i]] / flat_norm - truth[i + 1].data[good[i]] / truth_norm
        assert np.sqrt(np.mean(resid**2)) <= 0.005, i


def test_master_flat_flags_bad_columns_and_dead_pixels(gmos_starfield_small: Path, master_flat: Frame):
    bpm = read_bpm(gmos_starfield_small / BPM)
    truth = fits.open(gmos_starfield_small / "truth" / "flat_response_i.fits")
    for i, ext in enumerate(master_flat):
        data = parse_section(bpm[i].header["DATASEC"])
        bad = bpm[i].dq[data.slices()] != 0
        assert np.all(ext.dq[bad] & dq.BAD_PIXEL)
        assert np.all(ext.sci[bad] == 1.0)
        weak = truth[i + 1].data < 0.5  # dead pixels and the 25 % response columns
        assert weak.any() == bad.any()
        assert np.all(ext.dq[weak] != 0)


def test_calibrated_science_noise_model(
    gmos_starfield_small: Path, master_bias, master_flat, flat_star_residue
):
    science = calibrate_science(
        gmos_starfield_small / SCIENCE,
        bias=master_bias,
        flat=master_flat,
        bpm_path=gmos_starfield_small / BPM,
    )
    frames = pd.read_csv(gmos_starfield_small / "truth" / "frames.csv").set_index("filename")
    stars = pd.read_csv(gmos_starfield_small / "truth" / "stars.csv")
    truth = fits.open(gmos_starfield_small / "truth" / "flat_response_i.fits")
    # The truth response is normalised on the whole CCD2; our flat on the pixels kept.
    scale = np.median(np.concatenate([truth[i + 1].data[master_flat[i].dq == 0] for i in range(4, 8)]))
    sky = frames.loc[SCIENCE, "sky_e_per_s_per_pixel"] * frames.loc[SCIENCE, "exptime"] * scale
    lit = _star_light(gmos_starfield_small / SCIENCE, stars, threshold=0.002 * sky)
    assert science[0].header["BUNIT"] == "electron" and "FLATCORR" in science.phu
    for i, ext in enumerate(science):
        use = (ext.dq == 0) & ~lit[i] & ~flat_star_residue[i]
        z = (ext.sci[use] - sky) / np.sqrt(ext.var[use])
        _, median, std = sigma_clipped_stats(z, sigma=5.0)  # clips cosmic rays, not yet flagged
        assert 0.9 <= std <= 1.1, (i, std)
        assert abs(median) < 0.1, (i, median)


def test_master_bias_same_on_one_thread_with_planes_shared(
    gmos_starfield_small: Path, master_bias: Frame, monkeypatch
):
    """The biases are prepared on the job's threads and their repeated planes are held once;
    neither may change a bit of the master bias."""
    from gemred.recipes import gmos_calibrations

    shared: dict[int, np.ndarray] = {}
    frames = [
        gmos_calibrations._standardized(
            gmos_starfield_small / f,
            read_bpm(gmos_starfield_small / BPM),
            gmos_calibrations.OVERSCAN_DEFAULTS,
            kind="BIAS",
        )
        for f in BIASES[:2]
    ]
    compact = [gmos_calibrations._share_constant_planes(frame, shared) for frame in frames]
    assert compact[0][0].dq is compact[1][0].dq  # the BPM's bits, one array for both
    assert compact[0][0].var.strides == (0, 0)  # the read noise, one value
    header = compact[0][0].header
    assert np.all(compact[0][0].var == np.float32((header["RDNOISE"] / header["GAIN"]) ** 2))  # ADU

    monkeypatch.setattr(gmos_calibrations, "n_threads", lambda: 1)
    serial = make_master_bias([gmos_starfield_small / f for f in BIASES], bpm_path=gmos_starfield_small / BPM)
    for one, two in zip(serial, master_bias, strict=True):
        assert np.array_equal(one.sci, two.sci)
        assert np.array_equal(one.var, two.var)
        assert np.array_equal(one.dq, two.dq)


def test_master_products_round_trip_through_files(tmp_path: Path, master_bias: Frame):
    path = write_frame(master_bias, tmp_path / f"{master_bias.root}_bias.fits")
    back = read_frame(path)
    np.testing.assert_array_equal(back[3].sci, master_bias[3].sci)
    assert back.root == master_bias.root


def test_recipes_reject_wrong_inputs(gmos_starfield_small: Path, master_bias: Frame):
    with pytest.raises(GemredInputError, match="not a bias"):
        make_master_bias([gmos_starfield_small / FLATS[0]])
    with pytest.raises(GemredInputError, match="no raw files"):
        make_master_bias([])
    with pytest.raises(GemredInputError, match="not a twilight"):
        make_master_flat([gmos_starfield_small / BIASES[0]], bias=master_bias)


def test_flat_rejection_rule():
    assert [flat_rejection(n) for n in (1, 2, 3, 5, 6, 10, 11, 20)] == [
        (0, 0),
        (0, 0),
        (1, 1),
        (1, 1),
        (2, 2),
        (2, 2),
        (2, 3),
        (2, 3),
    ]
