"""Tests of gemred.primitives.standardize on tiny in-memory GMOS and GSAOI frames."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from astropy.io import fits

from gemred import dq
from gemred.frame import Extension, Frame
from gemred.instruments import gmos, gsaoi
from gemred.io import GemredInputError
from gemred.primitives.standardize import add_dq, add_var, frame_label, prepare

GMOS_N = gmos.detector_set("GMOS-N", dt.date(2017, 6, 14))


def tiny_gmos_frame(
    *, nrows: int = 16, ndata: int = 12, nover: int = 10, value: float = 1000.0, root: str = "N20170614S0001"
) -> Frame:
    """A raw-like 12-amplifier GMOS-N Hamamatsu frame, 2x2 binned, with small arrays.

    Odd extensions (1-based) have their overscan on the right, even ones on the left. Every
    pixel holds ``value``; each extension has a TAN WCS with ``CRPIX1 = 100``.
    """
    phu = fits.Header()
    phu["INSTRUME"] = "GMOS-N"
    phu["DETECTOR"] = GMOS_N.detector
    phu["DATE-OBS"] = "2017-06-14"
    phu["AMPINTEG"] = 9000
    phu["OBSTYPE"] = "OBJECT"
    phu["FILTER1"], phu["FILTER2"] = "open1-6", "i_G0302"
    extensions = []
    for n, ampname in enumerate(GMOS_N.amp_names(), start=1):
        hdr = fits.Header()
        hdr["CCDNAME"] = ampname.split(",")[0]
        hdr["AMPNAME"] = ampname
        hdr["CCDSUM"] = "2 2"
        if n % 2:
            hdr["DATASEC"] = f"[1:{ndata},1:{nrows}]"
            hdr["BIASSEC"] = f"[{ndata + 1}:{ndata + nover},1:{nrows}]"
        else:
            hdr["DATASEC"] = f"[{nover + 1}:{ndata + nover},1:{nrows}]"
            hdr["BIASSEC"] = f"[1:{nover},1:{nrows}]"
        x0 = 512 * (n - 1)
        hdr["CCDSEC"] = f"[{x0 % 2048 + 1}:{x0 % 2048 + 2 * ndata},2001:{2000 + 2 * nrows}]"
        hdr["DETSEC"] = f"[{x0 + 1}:{x0 + 2 * ndata},2001:{2000 + 2 * nrows}]"
        hdr["GAIN"] = 1.6
        hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
        hdr["CRPIX1"], hdr["CRPIX2"] = 100.0, 50.0
        hdr["CRVAL1"], hdr["CRVAL2"] = 283.77, 33.03
        hdr["CD1_1"], hdr["CD2_2"] = -4.48e-5, 4.48e-5
        extensions.append(Extension(np.full((nrows, ndata + nover), value, dtype=np.float32), hdr))
    return Frame(phu, extensions, root)


def test_prepare_writes_lut_values_per_amplifier():
    frame = tiny_gmos_frame()
    out = prepare(frame)
    assert "PREPARE" in out.phu and "PREPARE" not in frame.phu
    assert out.phu["ORIGNAME"] == "N20170614S0001.fits"
    for ext in out:
        cal = gmos.amp_calibration(GMOS_N, ext.header["AMPNAME"], "Normal")
        assert ext.header["GAIN"] == cal.gain
        assert ext.header["RDNOISE"] == cal.read_noise
        assert ext.header["SATLEVEL"] == 65535.0 == ext.header["NONLINEA"]
        assert ext.header["GAINSET"] == "low"
        assert ext.header["BUNIT"] == "adu"
        assert ext.header["PIXSCALE"] == pytest.approx(0.1614)
    assert frame[0].header["GAIN"] == 1.6


def test_prepare_saturation_from_well_depth_when_unbinned_in_bright_mode():
    frame = tiny_gmos_frame()
    frame.phu["AMPINTEG"] = 1000
    for ext in frame:
        ext.header["CCDSUM"] = "1 1"
        ext.header["GAIN"] = 5.0
    out = prepare(frame)
    cal = gmos.amp_calibration(GMOS_N, out[0].header["AMPNAME"], "Bright")
    assert out[0].header["GAINSET"] == "high"
    assert out[0].header["GAIN"] == cal.gain
    assert out[0].header["SATLEVEL"] == pytest.approx(129000.0 / cal.gain + cal.bias_level)
    assert out[0].header["PIXSCALE"] == pytest.approx(0.0807)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.phu.__setitem__("INSTRUME", "NIRI"), "not GMOS-N, GMOS-S or GSAOI"),
        (lambda f: f.extensions.pop(), "11 image extensions"),
        (lambda f: f.phu.__setitem__("DATE-OBS", "2010-01-01"), "Hamamatsu"),
        (lambda f: f[0].header.__setitem__("AMPNAME", "nonsense, 9"), "nonsense"),
    ],
)
def test_prepare_rejects_bad_input_naming_the_file(change, message):
    frame = tiny_gmos_frame()
    change(frame)
    with pytest.raises(GemredInputError, match=message) as err:
        prepare(frame)
    assert "N20170614S0001.fits" in str(err.value)


def test_prepare_twice_is_an_error():
    with pytest.raises(GemredInputError, match="already prepared"):
        prepare(prepare(tiny_gmos_frame()))


def test_add_dq_combines_bpm_and_saturation():
    frame = prepare(tiny_gmos_frame())
    frame[2].sci[3, 4] = 65535.0
    bpm = Frame(fits.Header(), [], "bpm")
    for ext in frame:
        mask = np.zeros(ext.shape, dtype=np.uint16)
        bpm.extensions.append(Extension(mask.astype(np.float32), ext.header.copy(), dq=mask))
    bpm[2].dq[5, 6] = dq.BAD_PIXEL
    out = add_dq(frame, bpm)
    assert out[2].dq.dtype == np.uint16
    assert out[2].dq[3, 4] == dq.SATURATED
    assert out[2].dq[5, 6] == dq.BAD_PIXEL
    assert out[2].dq.sum() == dq.SATURATED + dq.BAD_PIXEL
    assert frame[2].dq is None
    assert "ADDDQ" in out.phu


def test_add_dq_rejects_bpm_of_other_shape_or_binning():
    frame = prepare(tiny_gmos_frame())
    bpm = Frame(fits.Header(), [Extension(np.zeros((4, 4)), ext.header.copy()) for ext in frame], "bpm")
    with pytest.raises(GemredInputError, match="shape"):
        add_dq(frame, bpm)
    bpm = Frame(fits.Header(), [Extension(np.zeros(ext.shape), ext.header.copy()) for ext in frame], "bpm")
    bpm[0].header["CCDSUM"] = "1 1"
    with pytest.raises(GemredInputError, match="binning"):
        add_dq(frame, bpm)
    with pytest.raises(GemredInputError, match="3 extensions"):
        add_dq(frame, Frame(fits.Header(), bpm.extensions[:3], "bpm"))


def test_add_dq_needs_prepared_frame():
    with pytest.raises(GemredInputError, match="prepare"):
        add_dq(tiny_gmos_frame())


def test_add_var_terms_in_adu_and_electrons_each_once():
    frame = prepare(tiny_gmos_frame(value=500.0))
    frame[0].sci[0, 0] = -20.0
    out = add_var(frame, read_noise=True)
    hdr = out[0].header
    read_adu = (hdr["RDNOISE"] / hdr["GAIN"]) ** 2
    assert out[0].var.dtype == np.float32
    np.testing.assert_allclose(out[0].var, read_adu, rtol=1e-6)
    assert hdr["VARNOISE"] == "read"
    both = add_var(out, read_noise=True, poisson=True)
    expected = read_adu + np.maximum(frame[0].sci, 0) / hdr["GAIN"]
    np.testing.assert_allclose(both[0].var, expected, rtol=1e-6)
    assert both[0].header["VARNOISE"] == "read,Poisson"
    again = add_var(both, read_noise=True, poisson=True)
    np.testing.assert_array_equal(again[0].var, both[0].var)
    electrons = prepare(tiny_gmos_frame(value=500.0))
    for ext in electrons:
        ext.header["BUNIT"] = "electron"
    e_var = add_var(electrons, read_noise=True, poisson=True)
    np.testing.assert_allclose(e_var[0].var, hdr["RDNOISE"] ** 2 + 500.0, rtol=1e-6)


def test_add_var_needs_a_term():
    with pytest.raises(ValueError, match="read_noise"):
        add_var(prepare(tiny_gmos_frame()), read_noise=False)


def test_frame_label_of_products():
    frame = tiny_gmos_frame()
    assert frame_label(frame) == "N20170614S0001.fits"
    frame.phu["PROCFLAT"] = "now"
    assert frame_label(frame) == "N20170614S0001_flat.fits"


# ----------------------------------------------------------------------------- GSAOI


def tiny_gsaoi_frame(
    *,
    shape: tuple[int, int] = (6, 5),
    value: float = 1000.0,
    lnrs: int = 8,
    coadds: int = 1,
    root: str = "S20170505S0095",
) -> Frame:
    """A raw-like GSAOI frame: four tiny float32 arrays in file order, every pixel ``value`` ADU."""
    phu = fits.Header()
    phu["INSTRUME"] = "GSAOI"
    phu["OBJECT"] = "NGC5128"
    phu["LNRS"] = lnrs
    phu["COADDS"] = coadds
    phu["FILTER1"], phu["FILTER2"] = "Kshort_G1106", "Clear"
    phu["BUNIT"] = "adu"
    extensions = []
    for info in gsaoi.ARRAYS:
        hdr = fits.Header()
        hdr["ARRAYID"] = info.array_id
        hdr["GAIN"] = 9.99  # raw header values are not trusted
        extensions.append(Extension(np.full(shape, value, dtype=np.float32), hdr))
    return Frame(phu, extensions, root)


def test_prepare_gsaoi_writes_array_values():
    frame = tiny_gsaoi_frame(lnrs=8, coadds=4)
    out = prepare(frame)
    assert "PREPARE" in out.phu and out.phu["ORIGNAME"] == "S20170505S0095.fits"
    assert out.phu["FILTER"] == "Kshort"
    assert out.phu["PIXSCALE"] == pytest.approx(gsaoi.PIXEL_SCALE)
    for i, (ext, info) in enumerate(zip(out, gsaoi.ARRAYS, strict=True)):
        assert ext.header["GAIN"] == info.gain
        assert ext.header["RDNOISE"] == pytest.approx(gsaoi.read_noise(i, 8) / 2.0)
        assert ext.header["SATLEVEL"] == info.saturation_adu
        assert ext.header["NONLINEA"] == pytest.approx(info.saturation_adu * info.linear_fraction)
        assert ext.header["BUNIT"] == "adu"
    assert out[1].header["RDNOISE"] == pytest.approx(9.85 / 2.0)
    assert frame[0].header["GAIN"] == 9.99


def test_prepare_gsaoi_finds_arrays_by_arrayid():
    frame = tiny_gsaoi_frame()
    frame.extensions.reverse()
    out = prepare(frame)
    assert [ext.header["GAIN"] for ext in out] == [a.gain for a in reversed(gsaoi.ARRAYS)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.phu.__setitem__("LNRS", 3), "LNRS"),
        (lambda f: f.extensions.pop(), "3 image extensions"),
        (lambda f: f[0].header.__setitem__("ARRAYID", "H2RG-999"), "H2RG-999"),
        (lambda f: f[0].header.__setitem__("ARRAYID", "H2RG-032-064"), "repeats"),
    ],
)
def test_prepare_gsaoi_rejects_bad_input_naming_the_file(change, message):
    frame = tiny_gsaoi_frame()
    change(frame)
    with pytest.raises(GemredInputError, match=message) as err:
        prepare(frame)
    assert "S20170505S0095.fits" in str(err.value)


def test_add_dq_gsaoi_flags_saturated_and_non_linear():
    frame = prepare(tiny_gsaoi_frame(value=100.0))
    info = gsaoi.ARRAYS[1]
    ext = frame[1]
    ext.sci[0, 0] = info.saturation_adu
    ext.sci[0, 1] = info.saturation_adu - 1.0
    ext.sci[0, 2] = info.nonlinear_adu
    ext.sci[0, 3] = info.nonlinear_adu - 1.0
    bpm = Frame(fits.Header(), [], "bpm")
    for e in frame:
        mask = np.zeros(e.shape, dtype=np.uint16)
        bpm.extensions.append(Extension(mask.astype(np.float32), e.header.copy(), dq=mask))
    bpm[1].dq[0, 0] = dq.BAD_PIXEL
    out = add_dq(frame, bpm)
    assert out[1].dq[0].tolist()[:4] == [dq.BAD_PIXEL | dq.SATURATED, dq.NON_LINEAR, dq.NON_LINEAR, 0]
    assert out[1].dq.sum() == dq.BAD_PIXEL + dq.SATURATED + 2 * dq.NON_LINEAR
    assert all(e.dq.sum() == 0 for k, e in enumerate(out) if k != 1)


def test_add_var_gsaoi_divides_poisson_by_averaged_coadds():
    frame = prepare(tiny_gsaoi_frame(value=800.0, lnrs=2, coadds=4))
    frame[2].sci[1, 1] = -50.0
    out = add_var(frame, read_noise=True, poisson=True)
    for i, ext in enumerate(out):
        gain = gsaoi.ARRAYS[i].gain
        read = (gsaoi.read_noise(i, 2, 4) / gain) ** 2
        expected = read + np.maximum(frame[i].sci, 0) / gain / 4
        np.testing.assert_allclose(ext.var, expected, rtol=1e-6)
    assert out[2].var[1, 1] == pytest.approx((gsaoi.read_noise(2, 2, 4) / gsaoi.ARRAYS[2].gain) ** 2)
    electrons = prepare(tiny_gsaoi_frame(value=800.0, lnrs=2, coadds=4))
    for ext in electrons:
        ext.header["BUNIT"] = "electron"
    e_var = add_var(electrons, read_noise=False, poisson=True)
    np.testing.assert_allclose(e_var[0].var, 800.0 / 4, rtol=1e-6)
