"""Writing simulated frames the way the Gemini archive writes raw files.

A raw file is an empty primary HDU followed by one unnamed image extension per amplifier
(GMOS, unsigned 16-bit stored as BITPIX=16 with BZERO=32768) or per array (GSAOI, float32).
Static bad-pixel masks are written as processed calibrations: ``OBSTYPE='BPM'`` and one
``DQ`` extension per raw extension, with the raw extension's shape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from gemred.io import atomic_output, write_fits_atomic

__all__ = ["raw_extension", "write_raw", "write_bpm", "write_truth_table", "write_truth_image", "obs_times"]


def raw_extension(data: np.ndarray, header: fits.Header) -> fits.ImageHDU:
    """An unnamed raw image extension; uint16 data are stored with ``BZERO=32768``."""
    hdu = fits.ImageHDU(data=data, header=header, do_not_scale_image_data=False)
    for key in ("EXTNAME", "EXTVER"):
        hdu.header.remove(key, ignore_missing=True)
    return hdu


def write_raw(path: Path, phu: fits.Header, extensions: Sequence[fits.ImageHDU]) -> Path:
    """Write a raw multi-extension file: empty primary HDU plus ``extensions``."""
    primary = fits.PrimaryHDU(header=phu)
    return write_fits_atomic(fits.HDUList([primary, *extensions]), path)


def write_bpm(
    path: Path, phu: fits.Header, masks: Sequence[np.ndarray], ext_headers: Sequence[fits.Header]
) -> Path:
    """Write a static bad-pixel mask file: ``OBSTYPE='BPM'``, one uint16 ``DQ`` extension each."""
    phu = phu.copy()
    phu["OBSTYPE"] = ("BPM", "Observation type")
    phu["BPMASK"] = path.name
    hdus = [fits.PrimaryHDU(header=phu)]
    for i, (mask, header) in enumerate(zip(masks, ext_headers, strict=True), start=1):
        hdr = header.copy()
        for key in ("BZERO", "BSCALE", "BUNIT"):
            hdr.remove(key, ignore_missing=True)
        hdus.append(fits.ImageHDU(np.asarray(mask, dtype=np.uint16), header=hdr, name="DQ", ver=i))
    return write_fits_atomic(fits.HDUList(hdus), path)


def write_truth_table(table: pd.DataFrame, out: Path, name: str) -> Path:
    """Write a truth table as ``out/truth/<name>.csv``, floats to 15 significant digits."""
    path = Path(out) / "truth" / f"{name}.csv"
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.15g")
    return path


def write_truth_image(
    arrays: Sequence[np.ndarray], headers: Sequence[fits.Header], out: Path, name: str, description: str
) -> Path:
    """Write truth images (one extension per amplifier or array) as ``out/truth/<name>.fits``."""
    phu = fits.Header()
    phu["CONTENT"] = description[:68]
    hdus = [fits.PrimaryHDU(header=phu)]
    for i, (data, header) in enumerate(zip(arrays, headers, strict=True), start=1):
        hdus.append(
            fits.ImageHDU(np.asarray(data, dtype=np.float32), header=header.copy(), name="TRUTH", ver=i)
        )
    return write_fits_atomic(fits.HDUList(hdus), Path(out) / "truth" / f"{name}.fits")


def obs_times(start: dt.datetime, exptimes: Sequence[float], overhead: float) -> list[dt.datetime]:
    """Start times of consecutive exposures separated by ``overhead`` seconds of readout."""
    times, t = [], start
    for exptime in exptimes:
        times.append(t)
        t = t + dt.timedelta(seconds=float(exptime) + overhead)
    return times
