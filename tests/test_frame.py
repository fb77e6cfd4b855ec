"""Tests of gemred.frame: header copies."""

from __future__ import annotations

import warnings

from astropy.io import fits

from gemred.frame import copy_header


def _header() -> fits.Header:
    header = fits.Header()
    header["OBJECT"] = ("M51", "Object name")
    header["EXPTIME"] = 30.0
    header["CD1_1"] = -1.2345678901234567e-05
    header["LONGSTR"] = "a value longer than one card can hold " * 3
    header["DP1"] = "AXIS.1: 1"  # a record-valued keyword card
    header["HIERARCH GEMRED TEST"] = 1
    header.add_comment("a comment")
    header.add_history("step 1")
    header.append(fits.Card())  # a blank card
    header["LAST"] = True
    return header


def test_copy_header_is_card_for_card_the_same_as_astropys():
    header = _header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on long and HIERARCH cards
        copied = copy_header(header)
        assert copied.tostring() == header.tostring() == header.copy().tostring()
    assert list(copied.keys()) == list(header.keys())
    assert copied["DP1.AXIS.1"] == 1
    assert copied.index("LAST") == header.index("LAST")
    assert copied["CD1_1"] == header["CD1_1"]  # the float itself, not a formatted one


def test_copy_header_and_original_change_independently():
    header = _header()
    copied = copy_header(header)
    copied["OBJECT"] = "M31"
    copied["NEWKEY"] = 1
    copied.add_history("step 2")
    del copied["EXPTIME"]
    header["LAST"] = False
    assert header["OBJECT"] == "M51"
    assert "NEWKEY" not in header
    assert len(header["HISTORY"]) == 1
    assert header["EXPTIME"] == 30.0
    assert copied["LAST"] is True
    assert copied.comments["OBJECT"] == "Object name"


def test_copy_header_of_a_file_header(tmp_path):
    path = tmp_path / "f.fits"
    fits.PrimaryHDU(header=_header()).writeto(path)
    with fits.open(path) as hdul:
        read = hdul[0].header
        copied = copy_header(read)
        assert copied.tostring() == read.tostring()
    copied["OBJECT"] = "M31"
    assert read["OBJECT"] == "M51"
