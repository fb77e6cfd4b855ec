"""Tests of gemred.io: frames read from files as they were written, in memory or memory-mapped."""

import numpy as np
import pytest
from astropy.io import fits

from gemred.frame import Extension, Frame
from gemred.io import read_frame, write_frame


def _processed(tmp_path):
    rng = np.random.default_rng(3)
    extensions = []
    for _ in range(2):
        dq = rng.integers(0, 2**16, (6, 7)).astype(np.uint16)  # every bit, 32768 and above too
        sci = rng.normal(100, 10, (6, 7)).astype(np.float32)
        sci[0, 0] = np.nan
        var = rng.uniform(1, 5, (6, 7)).astype(np.float32)
        extensions.append(Extension(sci, fits.Header({"BUNIT": "electron"}), var, dq))
    frame = Frame(fits.Header({"INSTRUME": "GSAOI", "OBJECT": "test"}), extensions, "S20170505S0095")
    return write_frame(frame, tmp_path / "S20170505S0095_flatCorrected.fits")


def test_memory_mapped_frame_reads_the_same_pixels(tmp_path):
    path = _processed(tmp_path)
    loaded, mapped = read_frame(path), read_frame(path, memmap=True)
    for a, b in zip(loaded, mapped, strict=True):
        np.testing.assert_array_equal(a.sci, b.sci)
        np.testing.assert_array_equal(a.var, b.var)
        assert b.dq.dtype == np.uint16
        np.testing.assert_array_equal(a.dq, b.dq)


def test_memory_mapped_raw_frame_is_scaled_as_astropy_scales_it(tmp_path):
    data = np.array([[0, 1, 32767], [32768, 40000, 65535]], dtype=np.uint16)
    phu = fits.PrimaryHDU(header=fits.Header({"INSTRUME": "GSAOI"}))
    scaled = fits.ImageHDU(np.array([[1.5, 2.0], [3.0, 4.0]], dtype=np.float32))
    scaled.scale("int16", bscale=0.5, bzero=10.0)
    path = tmp_path / "S20170505S0001.fits"
    fits.HDUList([phu, fits.ImageHDU(data), scaled]).writeto(path)
    loaded, mapped = read_frame(path), read_frame(path, memmap=True)
    assert [ext.sci.dtype for ext in mapped] == [np.float32, np.float32]
    for a, b in zip(loaded, mapped, strict=True):
        np.testing.assert_array_equal(a.sci, b.sci)
    np.testing.assert_array_equal(mapped[0].sci, data.astype(np.float32))


def test_memory_mapped_planes_are_maps_and_writing_them_leaves_the_file(tmp_path):
    path = _processed(tmp_path)
    frame = read_frame(path, memmap=True)
    assert not frame[0].sci.flags.owndata and not frame[0].var.flags.owndata
    frame[0].sci[1, 1] = -1.0
    assert read_frame(path)[0].sci[1, 1] != -1.0


def test_frame_read_without_tables_has_the_same_pixels_and_no_tables(tmp_path):
    from astropy.table import Table

    path = _processed(tmp_path)
    with fits.open(path, mode="append") as hdul:
        objcat = fits.table_to_hdu(Table({"NUMBER": [1, 2], "X_IMAGE": [3.0, 4.0]}))
        objcat.name, objcat.ver = "OBJCAT", 1
        refcat = fits.table_to_hdu(Table({"RAJ2000": [10.0], "DEJ2000": [-20.0]}))
        refcat.name = "REFCAT"
        hdul.extend([objcat, refcat])
    full, bare = read_frame(path), read_frame(path, tables=False)
    assert len(full[0].objcat) == 2 and "REFCAT" in full.tables
    assert bare[0].objcat is None and not bare.tables
    for a, b in zip(full, bare, strict=True):
        np.testing.assert_array_equal(a.sci, b.sci)
        np.testing.assert_array_equal(a.var, b.var)
        np.testing.assert_array_equal(a.dq, b.dq)


def test_catalogues_are_read_by_extension_without_the_pixels(tmp_path):
    from astropy.table import Table

    from gemred.io import GemredInputError, read_catalogues

    path = _processed(tmp_path)
    with fits.open(path, mode="append") as hdul:
        objcat = fits.table_to_hdu(Table({"NUMBER": [1, 2, 3], "X_IMAGE": [3.0, 4.0, 5.0]}))
        objcat.name, objcat.ver = "OBJCAT", 2
        hdul.append(objcat)
    frame = read_catalogues(path)
    assert frame.root == "S20170505S0095" and frame.phu["OBJECT"] == "test"
    assert [ext.shape for ext in frame] == [(6, 7), (6, 7)]
    assert all(ext.sci.strides == (0, 0) for ext in frame)  # placeholders: no pixels read
    assert frame[0].objcat is None and list(frame[1].objcat["NUMBER"]) == [1, 2, 3]
    assert frame[1].header["BUNIT"] == "electron"
    bare = tmp_path / "bare.fits"
    phu = fits.PrimaryHDU(header=fits.Header({"INSTRUME": "GSAOI"}))
    fits.HDUList([phu, fits.ImageHDU(np.zeros((2, 2)))]).writeto(bare)
    with pytest.raises(GemredInputError, match="no SCI extension"):
        read_catalogues(bare)
