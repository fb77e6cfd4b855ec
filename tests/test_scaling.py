"""Tests of gemred.primitives.scaling: frames brought to the reference's exposure time."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from gemred.frame import Extension, Frame
from gemred.io import write_frame
from gemred.primitives.scaling import scale_counts_to_reference


def test_scale_counts_to_reference_writes_clean_header(tmp_path):
    """Counts are scaled by the ratio of exposure times (VAR by its square), the input is left
    as it was, and the scaled frame's EXPTIME card fits in 80 characters (astropy warned and
    cut its comment when the value was written as a float)."""

    def frame(exptime: float, value: float) -> Frame:
        ext = Extension(np.full((4, 5), value), fits.Header(), var=np.full((4, 5), 2.0))
        return Frame(fits.Header({"EXPTIME": exptime}), [ext], f"S2017050{int(exptime)}")

    short = frame(30.0, 10.0)
    reference, scaled = scale_counts_to_reference([frame(60.0, 1.0), short])
    np.testing.assert_array_equal(scaled[0].sci, 20.0)
    np.testing.assert_array_equal(scaled[0].var, 8.0)
    np.testing.assert_array_equal(short[0].sci, 10.0)
    assert (scaled.phu["EXPTIME"], scaled.phu["ORIGTEXP"]) == (60.0, 30.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        write_frame(scaled, tmp_path / "scaled.fits")
    assert fits.getheader(tmp_path / "scaled.fits")["EXPTIME"] == 60.0
