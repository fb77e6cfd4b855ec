"""Tests of gemred.primitives.ccd on tiny synthetic frames and arrays."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from test_standardize import tiny_gmos_frame

from gemred import dq
from gemred.io import GemredInputError
from gemred.primitives.ccd import (
    adu_to_electrons,
    overscan_levels,
    subtract_bias,
    subtract_overscan,
    trim_overscan,
)
from gemred.primitives.standardize import add_dq, add_var, prepare


def _with_row_levels(frame, levels):
    """Add a per-row bias level to every pixel."""
    for ext in frame:
        ext.sci += levels[:, None].astype(np.float32)
    return frame


@pytest.mark.parametrize("index", [0, 1])  # overscan right (ext 1), left (ext 2)
def test_overscan_uses_the_right_columns_on_either_side(index):
    frame = prepare(tiny_gmos_frame(value=0.0))
    levels = np.linspace(500.0, 520.0, 16)
    frame = _with_row_levels(frame, levels)
    ext = frame[index]
    ndata, nover = 12, 10
    if index == 0:  # right: data 0..11, overscan 12..21; contaminated 12..15, far edge 21
        ext.sci[:, 12:16] += 1000.0
        ext.sci[:, 21] += 1000.0
    else:  # left: overscan 0..9, data 10..21; far edge 0, contaminated 6..9
        ext.sci[:, 0] += 1000.0
        ext.sci[:, 6:10] += 1000.0
    start = 0 if index == 0 else nover
    ext.sci[:, start : start + ndata] += 7.0  # the signal
    out = subtract_overscan(frame)
    data = out[index].sci[:, :ndata] if index == 0 else out[index].sci[:, nover:]
    np.testing.assert_allclose(data, 7.0, atol=1e-4)
    hdr = out[index].header
    assert hdr["OVERSEC"] == ("[17:21,1:16]" if index == 0 else "[2:6,1:16]")
    assert hdr["OVERSCAN"] == pytest.approx(np.median(levels))
    assert hdr["OVERRMS"] == pytest.approx(0.0, abs=1e-4)
    assert hdr["SATLEVEL"] == pytest.approx(65535.0 - np.median(levels))
    assert "SUBOVER" in out.phu


def test_overscan_levels_fits_and_row_rejection():
    rng = np.random.default_rng(3)
    rows = np.arange(400)
    true = 500.0 + 3.0 * np.sin(rows / 120.0)
    over = (true[:, None] + rng.normal(0.0, 2.0, (400, 25))).astype(np.float32)
    over[200] += 50.0  # a deviant row
    sigma = 2.0 / 5.0
    none, used = overscan_levels(over, row_sigma=sigma)
    np.testing.assert_allclose(none, over.mean(axis=1), rtol=1e-6)
    assert used.all()
    for function in ("chebyshev", "spline3"):
        level, used = overscan_levels(over, row_sigma=sigma, function=function, niter=2)
        assert not used[200]
        assert np.sqrt(np.mean((level - true) ** 2)) < sigma
    level, _ = overscan_levels(over, row_sigma=sigma, function="spline3", order=4)
    assert np.sqrt(np.mean((level - true) ** 2)) < sigma
    exclude = rows < 24
    _, used = overscan_levels(over, row_sigma=sigma, function="chebyshev", order=3, exclude=exclude)
    assert not used[:24].any()
    with pytest.raises(ValueError, match="overscan function"):
        overscan_levels(over, row_sigma=sigma, function="poly")


def test_overscan_on_trimmed_frame_is_an_error():
    frame = trim_overscan(prepare(tiny_gmos_frame()))
    with pytest.raises(GemredInputError, match="no overscan"):
        subtract_overscan(frame)


@pytest.mark.parametrize("index", [0, 1])
def test_trim_keeps_datasec_and_moves_the_wcs(index):
    frame = add_var(add_dq(prepare(tiny_gmos_frame())))
    frame[index].sci[:, :] = np.arange(22, dtype=np.float32)[None, :]
    out = trim_overscan(frame)
    ext, raw = out[index], frame[index]
    assert ext.shape == ext.var.shape == ext.dq.shape == (16, 12)
    offset = 0 if index == 0 else 10
    np.testing.assert_array_equal(ext.sci[0], np.arange(offset, offset + 12))
    assert ext.header["DATASEC"] == "[1:12,1:16]"
    assert "BIASSEC" not in ext.header
    assert ext.header["TRIMMED"] == "yes"
    sky_raw = WCS(raw.header).pixel_to_world_values(offset + 3.0, 5.0)
    sky_trim = WCS(ext.header).pixel_to_world_values(3.0, 5.0)
    np.testing.assert_allclose(sky_trim, sky_raw, rtol=0, atol=1e-10)
    assert ext.sci.flags["C_CONTIGUOUS"]
    with pytest.raises(GemredInputError, match="already trimmed"):
        trim_overscan(out)


def _bias_like(frame, value, var, root="N20170613S0180"):
    bias = frame.copy()
    bias.root = root
    bias.phu["PROCBIAS"] = "now"
    for ext in bias:
        ext.sci[:] = value
        ext.var = np.full(ext.shape, var, dtype=np.float32)
        ext.dq = np.zeros(ext.shape, dtype=np.uint16)
    return bias


def test_subtract_bias_propagates_var_and_dq():
    frame = add_var(add_dq(trim_overscan(prepare(tiny_gmos_frame(value=100.0)))))
    bias = _bias_like(frame, 30.0, 0.5)
    bias[3].dq[2, 2] = dq.BAD_PIXEL
    out = subtract_bias(frame, bias)
    np.testing.assert_allclose(out[3].sci, 70.0)
    np.testing.assert_allclose(out[3].var, frame[3].var + 0.5, rtol=1e-6)
    assert out[3].dq[2, 2] == dq.BAD_PIXEL and out[3].dq.sum() == dq.BAD_PIXEL
    assert out.phu["BIASIM"] == "N20170613S0180_bias.fits"
    assert "BIASCORR" in out.phu


def test_subtract_bias_mismatch_names_both_files():
    frame = trim_overscan(prepare(tiny_gmos_frame()))
    bias = _bias_like(prepare(tiny_gmos_frame(nrows=20)), 0.0, 0.0)
    with pytest.raises(GemredInputError) as err:
        subtract_bias(frame, bias)
    text = str(err.value)
    assert "N20170614S0001.fits" in text and "N20170613S0180_bias.fits" in text and "shape" in text
    bias = _bias_like(frame, 0.0, 0.0)
    for ext in bias:
        ext.header["BUNIT"] = "electron"
    with pytest.raises(GemredInputError, match="unit"):
        subtract_bias(frame, bias)


def test_adu_to_electrons_scales_sci_var_and_levels():
    frame = add_var(prepare(tiny_gmos_frame(value=200.0)), read_noise=True, poisson=True)
    out = adu_to_electrons(frame)
    gain = frame[5].header["GAIN"]
    np.testing.assert_allclose(out[5].sci, 200.0 * gain, rtol=1e-6)
    np.testing.assert_allclose(out[5].var, frame[5].var * gain**2, rtol=1e-6)
    assert out[5].header["GAIN"] == 1.0 and out[5].header["BUNIT"] == "electron"
    assert out[5].header["SATLEVEL"] == pytest.approx(65535.0 * gain)
    # Read noise plus Poisson in electrons: RN^2 + counts_e.
    rn = frame[5].header["RDNOISE"]
    np.testing.assert_allclose(out[5].var, rn**2 + 200.0 * gain, rtol=1e-5)
    with pytest.raises(GemredInputError, match="not in ADU"):
        adu_to_electrons(out)


def test_primitives_do_not_modify_their_input():
    frame = prepare(tiny_gmos_frame(value=300.0))
    before = [ext.sci.copy() for ext in frame]
    header = fits.Header(frame[0].header)
    adu_to_electrons(trim_overscan(subtract_overscan(frame)))
    for ext, sci in zip(frame, before, strict=True):
        np.testing.assert_array_equal(ext.sci, sci)
    assert frame[0].header == header
