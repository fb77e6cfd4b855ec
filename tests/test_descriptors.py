"""Descriptors and tags of raw-like GMOS-N and GSAOI files, read from headers only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from raw_headers import (
    gmos_bias,
    gmos_science,
    gmos_twilight,
    gsaoi_science,
    gsaoi_standard,
    write_mef,
)

from gemred.descriptors import DESCRIPTOR_NAMES, DESCRIPTOR_TYPES, descriptors, tags
from gemred.io import GemredInputError

WHEN = dt.datetime(2017, 6, 14, 6, 20, 0)


def _first(raw: tuple[Path, dict[str, list[Path]]], kind: str) -> Path:
    return raw[1][kind][0]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("bias", {"AT_ZENITH", "AZEL_TARGET", "BIAS", "CAL", "GEMINI", "GMOS", "NON_SIDEREAL", "NORTH", "RAW",
                  "UNPREPARED"}),
        ("twilight", {"CAL", "FLAT", "GEMINI", "GMOS", "IMAGE", "NORTH", "RAW", "SIDEREAL", "TWILIGHT",
                      "UNPREPARED"}),
        ("science", {"GEMINI", "GMOS", "IMAGE", "NORTH", "RAW", "SIDEREAL", "UNPREPARED"}),
        ("bpm", {"BPM", "CAL", "GEMINI", "GMOS", "NORTH", "PROCESSED", "UNPREPARED"}),
    ],
)
def test_gmos_tags_match_the_dragons_tutorial(gmos_raw_dir, kind, expected):
    assert descriptors(_first(gmos_raw_dir, kind))["tags"] == expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("lamp_on", {"AZEL_TARGET", "CAL", "DOMEFLAT", "FLAT", "GEMINI", "GSAOI", "IMAGE", "LAMPON",
                     "NON_SIDEREAL", "RAW", "SOUTH", "UNPREPARED"}),
        ("lamp_off", {"AZEL_TARGET", "CAL", "DOMEFLAT", "FLAT", "GEMINI", "GSAOI", "IMAGE", "LAMPOFF",
                      "NON_SIDEREAL", "RAW", "SOUTH", "UNPREPARED"}),
        ("science", {"GEMINI", "GSAOI", "IMAGE", "RAW", "SIDEREAL", "SOUTH", "UNPREPARED"}),
        ("sky", {"GEMINI", "GSAOI", "IMAGE", "RAW", "SIDEREAL", "SKY", "SOUTH", "UNPREPARED"}),
        ("standard", {"GEMINI", "GSAOI", "IMAGE", "RAW", "SIDEREAL", "SOUTH", "UNPREPARED"}),
        ("bpm", {"BPM", "CAL", "GEMINI", "GSAOI", "PROCESSED", "SOUTH", "UNPREPARED"}),
    ],
)
def test_gsaoi_tags_match_the_dragons_tutorial(gsaoi_raw_dir, kind, expected):
    assert descriptors(_first(gsaoi_raw_dir, kind))["tags"] == expected


def test_gmos_bias_descriptors(gmos_raw_dir):
    path = _first(gmos_raw_dir, "bias")
    values = descriptors(path)
    assert list(values) == list(DESCRIPTOR_NAMES)
    values.pop("tags")
    assert values == {
        "filename": str(path),
        "instrument": "GMOS-N",
        "observation_type": "BIAS",
        "observation_class": "dayCal",
        "object": "Bias",
        "filter_name": "i",
        "exposure_time": 0.0,
        "binning": "2x2",
        "detector_x_bin": 2,
        "detector_y_bin": 2,
        "read_mode": "Normal",
        "read_speed_setting": "slow",
        "gain_setting": "low",
        "detector_roi_setting": "Full Frame",
        "ut_datetime": "2017-06-13T16:30:04.100",
        "ut_date": "2017-06-13",
        "ut_time": "16:30:04.100",
        "ra": 280.8958,
        "dec": 11.9636,
        "telescope_x_offset": 0.0,
        "telescope_y_offset": 0.0,
        "position_angle": 270.0,
        "data_label": "GN-CAL20170613-3-180",
        "observation_id": "GN-CAL20170613-3",
        "program_id": "GN-CAL20170613",
        "detector": "GMOS-N + Hamamatsu",
        "detector_name": "Hamamatsu-N",
        "coadds": 1,
        "wavefront_sensor": None,
        "is_guided": False,
        "nextensions": 12,
    }


def test_gmos_science_descriptors(gmos_raw_dir):
    values = descriptors(gmos_raw_dir[1]["science"][1])
    assert values["object"] == "starfield"
    assert values["observation_class"] == "science"
    assert values["program_id"] == "GN-2017A-SV-151"
    assert values["observation_id"] == "GN-2017A-SV-151-382"
    assert values["exposure_time"] == 10.0
    assert (values["telescope_x_offset"], values["telescope_y_offset"]) == (10.0, 0.0)
    assert values["wavefront_sensor"] == "OIWFS"
    assert values["is_guided"] is True


def test_gsaoi_science_and_sky_descriptors(gsaoi_raw_dir):
    science = descriptors(_first(gsaoi_raw_dir, "science"))
    sky = descriptors(_first(gsaoi_raw_dir, "sky"))
    expected_common = {
        "instrument": "GSAOI",
        "filter_name": "Kshort",
        "exposure_time": 60.0,
        "binning": "1x1",
        "detector_x_bin": 1,
        "detector_y_bin": 1,
        "read_mode": "FOWLER",
        "read_speed_setting": "Bright Objects",
        "gain_setting": "n/a",
        "detector_roi_setting": "Full Frame",
        "observation_id": "GS-2017A-Q-29-13",
        "program_id": "GS-2017A-Q-29",
        "detector": "GSAOI",
        "detector_name": "GSAOI",
        "coadds": 1,
        "position_angle": 0.0,
        "nextensions": 4,
    }
    for values in (science, sky):
        assert {key: values[key] for key in expected_common} == expected_common
    assert (science["wavefront_sensor"], science["is_guided"]) == ("GEMS", True)
    assert (sky["wavefront_sensor"], sky["is_guided"]) == (None, False)
    assert (sky["telescope_x_offset"], sky["telescope_y_offset"]) == (300.0, 300.0)


def test_gsaoi_standard_is_a_custom_roi_partner_cal(gsaoi_raw_dir):
    values = descriptors(_first(gsaoi_raw_dir, "standard"))
    assert values["observation_class"] == "partnerCal"
    assert values["object"] == "9132"
    assert values["program_id"] == "GS-CAL20170504"
    assert values["detector_roi_setting"] == "Custom"
    assert "STANDARD" not in values["tags"]


def test_descriptor_values_have_their_declared_types(gmos_raw_dir, gsaoi_raw_dir):
    for raw in (gmos_raw_dir, gsaoi_raw_dir):
        for files in raw[1].values():
            for name, value in descriptors(files[0]).items():
                assert value is None or isinstance(value, DESCRIPTOR_TYPES[name]), (files[0], name, value)


@pytest.mark.parametrize(
    ("filter1", "filter2", "expected"),
    [
        ("open1-6", "i_G0302", "i"),
        ("Kshort_G1106", "Clear", "Kshort"),
        ("open1-6", "open2-8", "open"),
        ("ND2.0_G0333", "g_G0301", "g"),
        ("g_G0301", "OG515_G0306", "g&OG515"),
        ("blank", "z_G0304", "z"),
    ],
)
def test_filter_name_is_dragons_pretty_name(tmp_path, filter1, filter2, expected):
    path = gmos_science(tmp_path / "N20170614S0201.fits", WHEN, FILTER1=filter1, FILTER2=filter2)
    assert descriptors(path)["filter_name"] == expected


@pytest.mark.parametrize(
    ("roi", "expected"),
    [
        ({"DETRO1X": 2049, "DETRO1XS": 1024, "DETRO1Y": 1, "DETRO1YS": 2112}, "CCD2"),
        ({"DETRO1X": 2923, "DETRO1XS": 150, "DETRO1Y": 1987, "DETRO1YS": 150}, "Central Stamp"),
        ({"DETRO1X": 1, "DETRO1XS": 3072, "DETRO1Y": 1625, "DETRO1YS": 512}, "Central Spectrum"),
        ({"DETRO1X": 1, "DETRO1XS": 3072, "DETRO1Y": 1, "DETRO1YS": 1000}, "Custom"),
        ({"DETRO1X": None, "DETRO1XS": None, "DETRO1Y": None, "DETRO1YS": None}, "Undefined"),
    ],
)
def test_gmos_roi_setting(tmp_path, roi, expected):
    path = gmos_bias(tmp_path / "N20170613S0180.fits", WHEN, **roi)
    assert descriptors(path)["detector_roi_setting"] == expected


def test_gmos_read_modes_from_gain_and_read_speed(tmp_path):
    path = gmos_bias(tmp_path / "N20170613S0180.fits", WHEN, AMPINTEG=1000)
    with fits.open(path, mode="update") as hdul:
        for hdu in hdul[1:]:
            hdu.header["GAIN"] = 5.1
        hdul[3].header["GAIN"] = 1.6  # one discrepant amplifier is tolerated
    values = descriptors(path)
    assert (values["gain_setting"], values["read_speed_setting"], values["read_mode"]) == (
        "high", "fast", "Bright",
    )


def test_gmos_gain_setting_needs_a_majority(tmp_path):
    path = gmos_bias(tmp_path / "N20170613S0180.fits", WHEN)
    with fits.open(path, mode="update") as hdul:
        for hdu in hdul[1:7]:
            hdu.header["GAIN"] = 5.1
    values = descriptors(path)
    assert (values["gain_setting"], values["read_mode"]) == (None, None)


def test_prepared_gmos_file_uses_gainset(tmp_path):
    path = gmos_bias(tmp_path / "N20170613S0180.fits", WHEN, PREPARE="2017-06-20T00:00:00")
    with fits.open(path, mode="update") as hdul:
        for hdu in hdul[1:]:
            hdu.header["GAINSET"] = "high"
            hdu.header["GAIN"] = 1.0
    values = descriptors(path)
    assert {"PREPARED", "RAW"} <= values["tags"]
    assert "UNPREPARED" not in values["tags"]
    assert values["gain_setting"] == "high"


def test_missing_optional_keywords_give_none(tmp_path):
    removed = dict.fromkeys(
        ["RA", "DEC", "PA", "POFFSET", "QOFFSET", "EXPTIME", "AMPINTEG", "FILTER1", "FILTER2", "OBSID",
         "GEMPRGID", "DATALAB", "OBSCLASS", "DETTYPE", "DETECTOR", "TIME-OBS", "UT", "UTSTART", "DATE-OBS",
         "DATE", "OIWFS_ST", "PWFS1_ST", "PWFS2_ST", "AOWFS_ST", "FRAME", "TRKFRAME"]
    )
    path = gmos_science(tmp_path / "N20170614S0201.fits", WHEN, **removed)
    values = descriptors(path)
    missing = ("ra", "dec", "position_angle", "telescope_x_offset", "telescope_y_offset", "exposure_time",
               "read_speed_setting", "read_mode", "filter_name", "observation_id", "program_id", "data_label",
               "observation_class", "detector", "detector_name", "ut_datetime", "ut_date", "ut_time",
               "wavefront_sensor")
    assert {name: values[name] for name in missing} == dict.fromkeys(missing)
    assert values["is_guided"] is False
    assert values["tags"] == {"GEMINI", "GMOS", "IMAGE", "NORTH", "RAW", "UNPREPARED"}


def test_gmos_exposure_time_outside_valid_range_is_none(tmp_path):
    path = gmos_science(tmp_path / "N20170614S0201.fits", WHEN, EXPTIME=20000.0)
    assert descriptors(path)["exposure_time"] is None


@pytest.mark.parametrize(
    ("cards", "expected"),
    [
        ({"DATE-OBS": "2017-06-14", "TIME-OBS": "06:20:00.5", "UT": None}, "2017-06-14T06:20:00.500"),
        ({"DATE-OBS": "2017-06-14T06:21:02.25", "TIME-OBS": None, "UT": None}, "2017-06-14T06:21:02.250"),
        ({"DATE-OBS": None, "DATE": "2017-06-15", "TIME-OBS": None, "UT": "1:02:03"},
         "2017-06-15T01:02:03.000"),
        ({"DATE-OBS": None, "DATE": None, "MJD-OBS": 57918.25}, "2017-06-14T06:00:00.000"),
    ],
)
def test_ut_datetime_keyword_fallbacks(tmp_path, cards, expected):
    path = gmos_science(tmp_path / "N20170614S0201.fits", WHEN, UTSTART=None, phu=cards)
    assert descriptors(path)["ut_datetime"] == expected


def test_gsaoi_unguided_standard_is_sky_but_dome_flat_is_not(tmp_path):
    sky = gsaoi_science(tmp_path / "S20170505S0098.fits", WHEN, guided=False)
    guided_st = gsaoi_science(tmp_path / "S20170505S0099.fits", WHEN, guided=False, PWFS2_ST="guiding")
    standard = gsaoi_standard(tmp_path / "S20170504S0114.fits", WHEN, GWFS1CFG=None)
    assert "SKY" in descriptors(sky)["tags"]
    assert descriptors(guided_st)["is_guided"] is True
    assert "SKY" not in descriptors(guided_st)["tags"]
    assert "SKY" in descriptors(standard)["tags"]


def test_processed_files_are_not_raw(tmp_path):
    bias = gmos_bias(tmp_path / "N20170613S0180_bias.fits", WHEN, PROCBIAS="2017-06-20T00:00:00",
                     phu={"GEM-TLM": "2017-06-20T00:00:00"})
    assert {"BIAS", "CAL", "PROCESSED", "PROCESSED_BIAS"} <= descriptors(bias)["tags"]
    assert "RAW" not in descriptors(bias)["tags"]
    science = write_mef(
        tmp_path / "N20170614S0201_image.fits",
        {"INSTRUME": "GMOS-N", "OBSTYPE": "OBJECT", "GRATING": "MIRROR", "PROCSCI": "2017-06-20T00:00:00"},
        [{}],
        np.float32,
        extname="SCI",
    )
    assert {"PROCESSED", "PROCESSED_SCIENCE", "IMAGE"} <= descriptors(science)["tags"]
    assert "RAW" not in descriptors(science)["tags"]


def test_twilight_object_name_is_case_insensitive(tmp_path):
    path = gmos_twilight(tmp_path / "N20170702S0178.fits", WHEN, 40.0, OBJECT="TWILIGHT")
    assert {"TWILIGHT", "FLAT", "CAL"} <= descriptors(path)["tags"]


def test_tags_from_headers_alone():
    dark = fits.Header({"INSTRUME": "GSAOI", "OBSERVAT": "Gemini-South", "OBSTYPE": "DARK", "OBJECT": "Dark"})
    assert tags(dark, [fits.Header()]) == {"DARK", "CAL", "GEMINI", "GSAOI", "SOUTH", "RAW", "UNPREPARED"}
    acq = fits.Header({"INSTRUME": "GMOS-S", "OBSERVAT": "Gemini-South", "OBSTYPE": "OBJECT",
                       "OBSCLASS": "acq", "GRATING": "MIRROR", "MASKTYP": 0})
    expected = {"ACQUISITION", "GEMINI", "GMOS", "IMAGE", "SOUTH", "RAW", "UNPREPARED"}
    assert tags(acq, [fits.Header()]) == expected


def _one_line_error(path: Path) -> str:
    with pytest.raises(GemredInputError) as info:
        descriptors(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_truncated_file_is_reported(tmp_path):
    path = gmos_bias(tmp_path / "N20170613S0180.fits", WHEN)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _one_line_error(path)


@pytest.mark.filterwarnings("ignore:non-ASCII characters")
def test_random_bytes_file_is_reported(tmp_path):
    path = tmp_path / "N20170613S0181.fits"
    path.write_bytes(np.random.default_rng(3).bytes(5760))
    assert "not a readable FITS file" in _one_line_error(path)


def test_non_gemini_file_is_reported(tmp_path):
    path = write_mef(tmp_path / "other.fits", {"TELESCOP": "INT", "OBJECT": "M31"}, [{}], np.float32)
    assert "not a Gemini raw file" in _one_line_error(path)


def test_unsupported_instrument_is_reported(tmp_path):
    path = write_mef(tmp_path / "N20170613S0001.fits", {"INSTRUME": "NIRI", "OBSERVAT": "Gemini-North"}, [{}],
                     np.float32)
    assert "'NIRI' is not supported" in _one_line_error(path)


def test_file_without_extensions_is_reported(tmp_path):
    path = write_mef(tmp_path / "N20170613S0002.fits", {"INSTRUME": "GMOS-N"}, [], np.uint16)
    assert "no image extensions" in _one_line_error(path)
