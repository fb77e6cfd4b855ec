"""The bad_wcs check of prepare (gemred.primitives.wcs_check) on the simulated GSAOI sequence,
whose truth (``frames.csv``) gives every frame's header WCS, true pointing and pointing error,
and names the frame with a bad WCS."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from gemred.frame import Extension, Frame
from gemred.io import GemredInputError
from gemred.primitives.wcs_check import check_wcs, wcs_discrepancies

BAD = "S20170505S0108.fits"
SCIENCE = [f"S20170505S{n:04d}.fits" for n in range(95, 111)]
STANDARD = [f"S20170504S{n:04d}.fits" for n in range(114, 118)]


def _headers_only(path: Path) -> Frame:
    with fits.open(path) as hdul:
        phu, exts = hdul[0].header.copy(), [hdu.header.copy() for hdu in hdul[1:]]
    return Frame(phu, [Extension(np.zeros((1, 1)), h) for h in exts], path.stem)


@pytest.fixture(scope="module")
def science(gsaoi_offsetsky_small: Path) -> list[Frame]:
    return [_headers_only(gsaoi_offsetsky_small / name) for name in SCIENCE]


@pytest.fixture(scope="module")
def truth(gsaoi_offsetsky_small: Path) -> pd.DataFrame:
    return pd.read_csv(gsaoi_offsetsky_small / "truth" / "frames.csv").set_index("filename")


def _sep(ra1, dec1, ra2, dec2) -> float:
    """Arcsec between two positions (small angles)."""
    return math.hypot((ra1 - ra2) * math.cos(math.radians(dec1)), dec1 - dec2) * 3600.0


def _crval(frame: Frame, ext: int = 0) -> tuple[float, float]:
    return float(frame[ext].header["CRVAL1"]), float(frame[ext].header["CRVAL2"])


def test_discrepancies_find_the_bad_frame(science, truth):
    assert truth.loc[SCIENCE, "bad_wcs"].tolist() == [name == BAD for name in SCIENCE]
    discrepancy, groups = wcs_discrepancies(science)
    assert groups == [list(range(16))]  # one sequence: dead times of 15-45 s
    bad = SCIENCE.index(BAD)
    assert discrepancy[bad] == pytest.approx(40.0, abs=0.5)  # the simulator's 40" error
    assert np.delete(discrepancy, bad).max() < 1e-3  # the others follow the offsets


def test_exit_names_the_file_and_the_fix(science):
    with pytest.raises(GemredInputError, match=r"S20170505S0108\.fits \(40\.\d\"\).*bad_wcs: fix"):
        check_wcs(science, mode="exit")
    assert check_wcs(science, mode="exit", tolerance_arcsec=45.0) == science


def test_fix_rebuilds_the_bad_wcs_from_the_offsets(science, truth):
    fixed = check_wcs(science, mode="fix")
    bad = SCIENCE.index(BAD)
    for i, (before, after) in enumerate(zip(science, fixed, strict=True)):
        if i != bad:
            assert after is before
    frame = fixed[bad]
    assert "fix: from S20170505S0095.fits" in frame.phu["WCSFIX"] and "WCSFIX" not in science[bad].phu
    row = truth.loc[BAD]
    for ext, old in zip(frame, science[bad], strict=True):
        ra, dec = float(ext.header["CRVAL1"]), float(ext.header["CRVAL2"])
        # The commanded pointing, within the pointing error of the true one ...
        true_sep = _sep(ra, dec, row["ra_centre_true"], row["dec_centre_true"])
        assert true_sep <= row["pointing_error_arcsec"] + 1e-3
        # ... no longer the header's bad one; the rest of the WCS untouched.
        assert _sep(ra, dec, row["crval1"], row["crval2"]) == pytest.approx(40.0, abs=0.5)
        for key in ("CRPIX1", "CRPIX2", "CD1_1", "CD2_2"):
            assert ext.header[key] == old.header[key]
    assert wcs_discrepancies(fixed)[0].max() < 1e-3
    assert frame[0].sci is science[bad][0].sci


def test_a_perturbed_wcs_is_found_only_beyond_the_tolerance(science):
    def shifted(frame: Frame, arcsec: float) -> Frame:
        exts = []
        for ext in frame:
            header = ext.header.copy()
            header["CRVAL2"] = float(header["CRVAL2"]) + arcsec / 3600.0
            exts.append(Extension(ext.sci, header))
        return Frame(frame.phu, exts, frame.root)

    small = [*science[:5], shifted(science[5], 10.0), *science[6:]]
    with pytest.raises(GemredInputError, match="S20170505S0108") as err:
        check_wcs(small, mode="exit")
    assert "S20170505S0100" not in str(err.value)
    large = [*science[:5], shifted(science[5], 50.0), *science[6:]]
    with pytest.raises(GemredInputError, match=r"S20170505S0100\.fits \(50\.0\"\)"):
        check_wcs(large, mode="exit")
    repaired = check_wcs(large, mode="fix")
    assert _sep(*_crval(repaired[5]), *_crval(science[5])) < 1e-3


def test_new_builds_every_wcs_from_the_target_and_offsets(science, truth):
    new = check_wcs(science, mode="new")
    for name, before, after in zip(SCIENCE, science, new, strict=True):
        assert after.phu["WCSFIX"].startswith("new")
        row = truth.loc[name]
        expected = (row["ra_centre_true"], row["dec_centre_true"])
        assert _sep(*_crval(after, 3), *expected) <= row["pointing_error_arcsec"] + 1e-3
        if name != BAD:
            assert _sep(*_crval(after), *_crval(before)) < 1e-3
    no_target = Frame(fits.Header({"INSTRUME": "GSAOI"}), science[0].extensions, "S20170505S0095")
    with pytest.raises(GemredInputError, match="S20170505S0095.fits: no target RA/DEC"):
        check_wcs([no_target], mode="new")


def test_groups_by_observation_and_ignore(gsaoi_offsetsky_small: Path, science):
    standards = [_headers_only(gsaoi_offsetsky_small / name) for name in STANDARD]
    discrepancy, groups = wcs_discrepancies(standards + science)
    assert groups == [[0, 1, 2, 3], list(range(4, 20))]  # another night, another OBSID
    assert discrepancy[:4].max() < 1e-3
    assert check_wcs(science, mode="ignore") == science


def test_wrong_options_and_missing_wcs(science):
    with pytest.raises(ValueError, match="bad_wcs"):
        check_wcs(science, mode="repair")
    with pytest.raises(ValueError, match="tolerance"):
        check_wcs(science, mode="fix", tolerance_arcsec=0)
    bare = Frame(science[0].phu, [Extension(np.zeros((1, 1)), fits.Header())], "S20170505S0095")
    with pytest.raises(GemredInputError, match="S20170505S0095.fits: extension 1 has no CRPIX1"):
        check_wcs([bare, *science[1:]], mode="fix")
