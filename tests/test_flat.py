"""Tests of gemred.primitives.flat on tiny synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest
from test_standardize import tiny_gmos_frame

from gemred import dq
from gemred.frame import Frame
from gemred.io import GemredInputError
from gemred.primitives.ccd import trim_overscan
from gemred.primitives.flat import (
    ccd2_pixels,
    flat_correct,
    flat_level,
    normalize_flat_gmos,
    scale_flats,
    threshold_flat,
)
from gemred.primitives.standardize import add_dq, add_var, prepare


def _trimmed(value: float, *, nrows: int = 60, ndata: int = 30) -> Frame:
    """A prepared, trimmed tiny frame with DQ and read variance, every pixel ``value``."""
    return add_var(add_dq(trim_overscan(prepare(tiny_gmos_frame(value=value, nrows=nrows, ndata=ndata)))))


def test_ccd2_pixels_are_the_middle_chip_less_the_border():
    frame = _trimmed(1.0)
    for i, ext in enumerate(frame):
        ext.sci[:] = i
    frame[5].dq[30, 5] = dq.BAD_PIXEL
    pixels = ccd2_pixels(frame)
    assert set(np.unique(pixels)) == {4.0, 5.0, 6.0, 7.0}
    # 4 x 30 columns tiled: border 20 px on each side -> 80 columns; 60 rows -> 20 rows; one bad pixel
    assert pixels.size == 80 * 20 - 1


def test_flat_level_is_the_median_near_the_mode():
    rng = np.random.default_rng(1)
    pixels = rng.normal(500.0, 5.0, 50_000).astype(np.float32)
    pixels[:2000] = 5000.0  # stars
    assert flat_level(pixels) == pytest.approx(500.0, abs=0.2)


def test_scale_flats_matches_first_ccd2_mean():
    flats = [_trimmed(1000.0), _trimmed(500.0)]
    out = scale_flats(flats)
    np.testing.assert_allclose(out[1][3].sci, 1000.0)
    np.testing.assert_allclose(out[1][3].var, flats[1][3].var * 4.0, rtol=1e-6)
    assert out[1].phu["RELINT"] == pytest.approx(2.0)
    assert out[0].phu["RELINT"] == 1.0
    np.testing.assert_allclose(flats[1][3].sci, 500.0)
    np.testing.assert_array_equal(flats[1][3].var, _trimmed(500.0)[3].var)


def test_normalize_divides_every_ccd_by_ccd2_level_and_neutralises_flagged():
    frame = _trimmed(1.0)
    for i, ext in enumerate(frame):
        ext.sci[:] = 2000.0 * (0.9 if i < 4 else 1.0 if i < 8 else 1.1)
        ext.var[:] = 40.0
    frame[9].dq[3, 3] = dq.BAD_PIXEL
    out = normalize_flat_gmos(frame)
    np.testing.assert_allclose(out[5].sci, 1.0)
    np.testing.assert_allclose(out[0].sci, 0.9)
    assert out[9].sci[3, 3] == 1.0 and out[9].var[3, 3] == 0.0
    np.testing.assert_allclose(out[9].sci[0, 0], 1.1)
    np.testing.assert_allclose(out[5].var, 40.0 / 2000.0**2, rtol=1e-6)
    assert out.phu["FLATNORM"] == pytest.approx(2000.0)
    # The input is left as it was: the flagged pixel is neutralised in the output only.
    assert frame[9].sci[3, 3] == pytest.approx(2200.0) and frame[9].var[3, 3] == 40.0
    assert "FLATNORM" not in frame.phu


def test_threshold_flags_low_and_high_response_as_bad():
    frame = _trimmed(1.0)
    frame[2].sci[4, 5] = 0.2
    frame[2].sci[6, 7] = 3.0
    out = threshold_flat(frame, low=0.5, high=2.0)
    assert out[2].dq[4, 5] == dq.BAD_PIXEL and out[2].dq[6, 7] == dq.BAD_PIXEL
    assert out[2].sci[4, 5] == 1.0 and out[2].var[4, 5] == 0.0
    assert out[2].dq.sum() == 2
    with pytest.raises(ValueError, match="below"):
        threshold_flat(frame, low=2.0, high=1.0)


def test_flat_correct_propagates_variance_exactly():
    sci = _trimmed(1.0)
    flat = _trimmed(1.0)
    flat.phu["PROCFLAT"] = "now"
    rng = np.random.default_rng(5)
    s, v = rng.uniform(100, 1000, sci[0].shape), rng.uniform(10, 100, sci[0].shape)
    f, vf = rng.uniform(0.8, 1.2, sci[0].shape), rng.uniform(1e-6, 1e-4, sci[0].shape)
    sci[0].sci[:], sci[0].var[:] = s, v
    flat[0].sci[:], flat[0].var[:] = f, vf
    flat[0].dq[1, 1] = dq.BAD_PIXEL
    flat[0].sci[2, 2] = 0.0
    out = flat_correct(sci, flat)
    ok = np.ones(s.shape, dtype=bool)
    ok[2, 2] = False
    s32, v32, f32, vf32 = (a.astype(np.float32).astype(np.float64) for a in (s, v, f, vf))
    np.testing.assert_allclose(out[0].sci[ok], (s32 / f32)[ok], rtol=1e-6)
    expected = v32 / f32**2 + s32**2 * vf32 / f32**4
    np.testing.assert_allclose(out[0].var[ok], expected[ok], rtol=1e-5)
    assert out[0].dq[1, 1] == dq.BAD_PIXEL and out[0].dq[2, 2] == dq.BAD_PIXEL
    assert out.phu["FLATIM"] == "N20170614S0001_flat.fits"


def test_flat_correct_rejects_other_filter_or_shape():
    sci = _trimmed(1.0)
    flat = _trimmed(1.0)
    flat.phu["FILTER2"] = "g_G0301"
    with pytest.raises(GemredInputError, match="filter"):
        flat_correct(sci, flat)
    with pytest.raises(GemredInputError, match="shape"):
        flat_correct(sci, _trimmed(1.0, nrows=50))
