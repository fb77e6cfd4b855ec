"""Header-correct raw GMOS-N and GSAOI files with tiny data arrays, and fixtures using them.

Each writer produces a multi-extension FITS file whose primary and extension headers carry
the keywords listed in ``shared/reference/gemini-raw-format.md`` section 8 (what DRAGONS needs
to classify and reduce real data), but whose image extensions hold only 8 x 8 pixels. The
section keywords describe the real detector (a 2x2-binned GMOS amplifier is 288 x 2112), so
descriptors come out as for real files. Keyword overrides are passed as keyword arguments
(``EXPTIME=5``, or ``GWFS1CFG=None`` to remove a keyword); keywords with a hyphen go in
``phu={"DATE-OBS": ...}``.

The fixtures build two small datasets shaped like the DRAGONS tutorials: GMOS-N example 1
(GN-2017A-SV-151: biases on two dates, twilight flats, dithered i-band science, a static BPM)
and GSAOI example 1 (GS-2017A-Q-29: lamp-on/off dome flats, guided science plus unguided
offset-to-sky frames, a partnerCal standard in a 1k region of interest, a static BPM).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from gemred.instruments.gmos import DETECTOR_SETS
from gemred.instruments.gsaoi import ARRAYS

__all__ = [
    "gmos_bias",
    "gmos_twilight",
    "gmos_science",
    "gmos_bpm",
    "gsaoi_lamp_flat",
    "gsaoi_science",
    "gsaoi_standard",
    "gsaoi_bpm",
    "write_mef",
    "write_gmos_tutorial",
    "write_gsaoi_tutorial",
    "gmos_raw_dir",
    "gsaoi_raw_dir",
]

PIXELS = (8, 8)
GMOS_N = DETECTOR_SETS[0]
GMOS_RA, GMOS_DEC = 280.8958, 11.9636
GSAOI_RA, GSAOI_DEC = 201.3651, -43.0192


def write_mef(
    path: Path, phu: dict, extensions: list[dict], dtype: type, extname: str | None = None
) -> Path:
    """Write a primary header and one tiny image extension per header dict.

    Keys whose value is None are left out, so callers can remove keywords.
    """
    primary = fits.PrimaryHDU()
    for key, value in phu.items():
        if value is not None:
            primary.header[key] = value
    hdus: list[fits.hdu.base.ExtensionHDU] = [primary]
    for cards in extensions:
        hdu = fits.ImageHDU(np.zeros(PIXELS, dtype=dtype), name=extname)
        for key, value in cards.items():
            if value is not None:
                hdu.header[key] = value
        hdus.append(hdu)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def _common_phu(instrument: str, when: dt.datetime, exptime: float) -> dict:
    north = instrument == "GMOS-N"
    site = "Gemini-North" if north else "Gemini-South"
    return {
        "INSTRUME": instrument,
        "OBSERVAT": site,
        "TELESCOP": site,
        "DATE": when.date().isoformat(),
        "DATE-OBS": when.date().isoformat(),
        "TIME-OBS": when.time().isoformat(timespec="milliseconds")[:-2],
        "UT": when.time().isoformat(timespec="milliseconds")[:-2],
        "UTSTART": when.time().isoformat(timespec="milliseconds")[:-2],
        "UTEND": (when + dt.timedelta(seconds=exptime)).time().isoformat(timespec="milliseconds")[:-2],
        "EXPTIME": float(exptime),
    }


def _guiding(sensor: str | None) -> dict:
    """``*_ST`` keywords: all parked except ``sensor``."""
    sensors = ("OIWFS", "PWFS1", "PWFS2", "AOWFS")
    return {f"{name}_ST": "guiding" if name == sensor else "parked" for name in sensors}


def _gmos_phu(
    when: dt.datetime,
    *,
    obstype: str,
    obsclass: str,
    obj: str,
    exptime: float,
    program: str,
    obsnum: int,
    dataset: int,
    filter2: str,
    pointing: str,
    offsets: tuple[float, float] = (0.0, 0.0),
) -> dict:
    phu = _common_phu("GMOS-N", when, exptime)
    phu.update(
        {
            "OBSTYPE": obstype,
            "OBSCLASS": obsclass,
            "OBJECT": obj,
            "GEMPRGID": program,
            "OBSID": f"{program}-{obsnum}",
            "DATALAB": f"{program}-{obsnum}-{dataset:03d}",
            "GRATING": "MIRROR",
            "MASKTYP": 0,
            "MASKNAME": "None",
            "FILTER1": "open1-6",
            "FILTER2": filter2,
            "DETTYPE": GMOS_N.dettype,
            "DETID": GMOS_N.detid,
            "DETECTOR": GMOS_N.detector,
            "NAMPS": 4,
            "AMPINTEG": 9000,
            "DETRO1X": 1,
            "DETRO1XS": 3072,
            "DETRO1Y": 1,
            "DETRO1YS": 2112,
            "INPORT": 1,
            "RA": GMOS_RA,
            "DEC": GMOS_DEC,
            "PA": 90.0,
            "POFFSET": offsets[0],
            "QOFFSET": offsets[1],
            "RAOFFSET": offsets[0],
            "DECOFFSE": offsets[1],
        }
    )
    if pointing == "zenith":
        phu.update({"FRAME": "AZEL_TOPO", "TRKFRAME": "FK5", "AIRMASS": 1.0})
        phu.update(_guiding(None))
    else:
        guided = pointing == "guided"
        phu.update({"FRAME": "FK5", "TRKFRAME": "FK5", "RATRACK": 0.0, "DECTRACK": 0.0, "AIRMASS": 1.2})
        phu.update(_guiding("OIWFS" if guided else None))
    return phu


def _gmos_extensions(gain: float | None = None) -> list[dict]:
    """The 12 Hamamatsu amplifier headers of a 2x2-binned full-frame GMOS-N readout."""
    extensions = []
    for index, ampname in enumerate(GMOS_N.amp_names()):
        odd = index % 2 == 0  # extension numbers are 1-based
        x0 = 512 * index
        chip_x0 = 512 * (index % 4)
        extensions.append(
            {
                "CCDSUM": "2 2",
                "AMPNAME": ampname,
                "CCDNAME": ampname.split(",")[0],
                "GAIN": gain if gain is not None else GMOS_N.amps[(ampname, "Normal")].gain,
                "RDNOISE": GMOS_N.amps[(ampname, "Normal")].read_noise,
                "DATASEC": "[1:256,1:2112]" if odd else "[33:288,1:2112]",
                "BIASSEC": "[257:288,1:2112]" if odd else "[1:32,1:2112]",
                "DETSEC": f"[{x0 + 1}:{x0 + 512},1:4224]",
                "CCDSEC": f"[{chip_x0 + 1}:{chip_x0 + 512},1:4224]",
                "CCDSIZE": "[1:2048,1:4224]",
                "CTYPE1": "RA---TAN",
                "CTYPE2": "DEC--TAN",
                "CRVAL1": GMOS_RA,
                "CRVAL2": GMOS_DEC,
                "CRPIX1": 1536.0 - 256 * index,
                "CRPIX2": 1056.0,
                "CD1_1": -4.48e-5,
                "CD1_2": 0.0,
                "CD2_1": 0.0,
                "CD2_2": 4.48e-5,
            }
        )
    return extensions


def _finish(phu: dict, overrides: dict, extra: dict | None) -> dict:
    phu.update(overrides)
    phu.update(extra or {})
    return phu


def gmos_bias(path: Path, when: dt.datetime, *, phu: dict | None = None, **overrides) -> Path:
    """A GMOS-N Hamamatsu bias: OBSTYPE BIAS, dayCal, at zenith, slow read, low gain."""
    cards = _gmos_phu(
        when,
        obstype="BIAS",
        obsclass="dayCal",
        obj="Bias",
        exptime=0.0,
        program=f"GN-CAL{when:%Y%m%d}",
        obsnum=3,
        dataset=_serial(path),
        filter2="i_G0302",
        pointing="zenith",
    )
    return write_mef(path, _finish(cards, overrides, phu), _gmos_extensions(), np.uint16)


def gmos_twilight(
    path: Path, when: dt.datetime, exptime: float, *, phu: dict | None = None, **overrides
) -> Path:
    """A GMOS-N twilight flat: OBSTYPE OBJECT, OBJECT Twilight, dayCal, unguided, i band."""
    cards = _gmos_phu(
        when,
        obstype="OBJECT",
        obsclass="dayCal",
        obj="Twilight",
        exptime=exptime,
        program=f"GN-CAL{when:%Y%m%d}",
        obsnum=8,
        dataset=_serial(path),
        filter2="i_G0302",
        pointing="unguided",
    )
    return write_mef(path, _finish(cards, overrides, phu), _gmos_extensions(), np.uint16)


def gmos_science(
    path: Path,
    when: dt.datetime,
    *,
    exptime: float = 10.0,
    offsets: tuple[float, float] = (0.0, 0.0),
    phu: dict | None = None,
    **overrides,
) -> Path:
    """A GMOS-N i-band science frame of GN-2017A-SV-151 (a star field), guided by the OIWFS."""
    cards = _gmos_phu(
        when,
        obstype="OBJECT",
        obsclass="science",
        obj="starfield",
        exptime=exptime,
        program="GN-2017A-SV-151",
        obsnum=382,
        dataset=_serial(path),
        filter2="i_G0302",
        pointing="guided",
        offsets=offsets,
    )
    return write_mef(path, _finish(cards, overrides, phu), _gmos_extensions(), np.uint16)


def gmos_bpm(path: Path, **overrides) -> Path:
    """A processed static GMOS-N BPM as DRAGONS ships it: OBSTYPE BPM, 12 ``DQ`` extensions."""
    cards = {
        "INSTRUME": "GMOS-N",
        "OBSERVAT": "Gemini-North",
        "TELESCOP": "Gemini-North",
        "OBSTYPE": "BPM",
        "OBJECT": "BPM",
        "DATE": "2017-03-06",
        "DETTYPE": GMOS_N.dettype,
        "DETID": GMOS_N.detid,
        "DETECTOR": GMOS_N.detector,
        "GEM-TLM": "2017-03-06T00:00:00",
    }
    extensions = [
        {key: ext[key] for key in ("CCDSUM", "AMPNAME", "CCDNAME", "DATASEC", "DETSEC", "CCDSEC")}
        for ext in _gmos_extensions()
    ]
    return write_mef(path, _finish(cards, overrides, None), extensions, np.uint16, extname="DQ")


def _gsaoi_phu(
    when: dt.datetime,
    *,
    obstype: str,
    obsclass: str,
    obj: str,
    exptime: float,
    program: str,
    obsnum: int,
    dataset: int,
    guided: bool,
    offsets: tuple[float, float] = (0.0, 0.0),
) -> dict:
    phu = _common_phu("GSAOI", when, exptime)
    phu.update(
        {
            "OBSTYPE": obstype,
            "OBSCLASS": obsclass,
            "OBJECT": obj,
            "GEMPRGID": program,
            "OBSID": f"{program}-{obsnum}",
            "DATALAB": f"{program}-{obsnum}-{dataset:03d}",
            "DETECTOR": "GSAOI",
            "FILTER1": "Kshort_G1106",
            "FILTER2": "Clear",
            "LNRS": 2,
            "READMODE": "FOWLER",
            "COADDS": 1,
            "AOFOLD": "IN",
            "INPORT": 1,
            "WAVELENG": 21500.0,
            "BUNIT": "ADU",
            "RA": GSAOI_RA,
            "DEC": GSAOI_DEC,
            "PA": 0.0,
            "POFFSET": offsets[0],
            "QOFFSET": offsets[1],
        }
    )
    phu.update(_guiding(None))
    if obstype == "FLAT":
        phu.update({"FRAME": "AZEL_TOPO", "TRKFRAME": "FK5", "AIRMASS": 1.4})
    else:
        phu.update({"FRAME": "FK5", "TRKFRAME": "FK5", "RATRACK": 0.0, "DECTRACK": 0.0, "AIRMASS": 1.05})
    if guided:
        phu["GWFS1CFG"] = "GWFS1 on TT star"
    return phu


def _gsaoi_extensions(datasec: str = "[1:2048,1:2048]") -> list[dict]:
    return [
        {
            "ARRAYID": array.array_id,
            "DETSEC": array.detsec,
            "CCDSEC": datasec,
            "DATASEC": datasec,
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": GSAOI_RA,
            "CRVAL2": GSAOI_DEC,
            "CRPIX1": 1024.0,
            "CRPIX2": 1024.0,
            "CD1_1": 5.47e-6,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": 5.47e-6,
        }
        for array in ARRAYS
    ]


def gsaoi_lamp_flat(
    path: Path, when: dt.datetime, *, on: bool, phu: dict | None = None, **overrides
) -> Path:
    """A GSAOI Kshort dome flat: OBSTYPE FLAT, OBJECT 'Domeflat' (lamp on) or 'Domeflat OFF'."""
    cards = _gsaoi_phu(
        when,
        obstype="FLAT",
        obsclass="dayCal",
        obj="Domeflat" if on else "Domeflat OFF",
        exptime=5.0,
        program=f"GS-CAL{when:%Y%m%d}",
        obsnum=2 if on else 3,
        dataset=_serial(path),
        guided=False,
    )
    return write_mef(path, _finish(cards, overrides, phu), _gsaoi_extensions(), np.float32)


def gsaoi_science(
    path: Path,
    when: dt.datetime,
    *,
    guided: bool,
    offsets: tuple[float, float] = (0.0, 0.0),
    phu: dict | None = None,
    **overrides,
) -> Path:
    """A GSAOI NGC 5128 science frame (guided by GeMS) or an unguided offset-to-sky frame."""
    cards = _gsaoi_phu(
        when,
        obstype="OBJECT",
        obsclass="science",
        obj="NGC5128",
        exptime=60.0,
        program="GS-2017A-Q-29",
        obsnum=13,
        dataset=_serial(path),
        guided=guided,
        offsets=offsets,
    )
    return write_mef(path, _finish(cards, overrides, phu), _gsaoi_extensions(), np.float32)


def gsaoi_standard(path: Path, when: dt.datetime, *, phu: dict | None = None, **overrides) -> Path:
    """A GSAOI photometric standard ('9132'): partnerCal, GS-CAL program, central 1k ROI, guided."""
    cards = _gsaoi_phu(
        when,
        obstype="OBJECT",
        obsclass="partnerCal",
        obj="9132",
        exptime=30.0,
        program=f"GS-CAL{when:%Y%m%d}",
        obsnum=1,
        dataset=_serial(path),
        guided=True,
    )
    extensions = _gsaoi_extensions("[1:1024,1:1024]")
    return write_mef(path, _finish(cards, overrides, phu), extensions, np.float32)


def gsaoi_bpm(path: Path) -> Path:
    """A processed static GSAOI BPM: PHU ``BPMASK`` and four ``DQ`` extensions."""
    cards = {
        "INSTRUME": "GSAOI",
        "OBSERVAT": "Gemini-South",
        "OBSTYPE": "BPM",
        "OBJECT": "BPM",
        "BPMASK": "bpm_20121104_gsaoi_gsaoi_11_full_4amp.fits",
        "DATE": "2012-11-04",
        "GEM-TLM": "2012-11-04T00:00:00",
    }
    extensions = [{"ARRAYID": a.array_id, "DATASEC": "[1:2048,1:2048]"} for a in ARRAYS]
    return write_mef(path, cards, extensions, np.uint16, extname="DQ")


def _serial(path: Path) -> int:
    """Dataset number from a Gemini file name (``N20170613S0180`` -> 180)."""
    match = re.search(r"S(\d{4})", path.stem)
    return int(match[1]) % 1000 if match else 1


def _series(start: dt.datetime, count: int, step_s: float) -> list[dt.datetime]:
    return [start + dt.timedelta(seconds=step_s * i) for i in range(count)]


def write_gmos_tutorial(folder: Path) -> dict[str, list[Path]]:
    """GMOS-N tutorial example 1 in miniature, plus the clutter of a real download folder.

    Returns the written files by kind: ``bias`` (N20170613S0180-0184, N20170615S0534-0538),
    ``twilight`` (N20170702S0178-0182, 40 s down to 16 s), ``science`` (N20170614S0201-0205,
    10 s, dithered), ``bpm``. A README and ``truth/stars.csv`` are written too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {"bias": [], "twilight": [], "science": [], "bpm": []}
    # Written out of time order on purpose: group names must follow time, not file order.
    for first, start in ((534, dt.datetime(2017, 6, 15, 17, 2, 11, 500000)),
                         (180, dt.datetime(2017, 6, 13, 16, 30, 4, 100000))):
        for i, when in enumerate(_series(start, 5, 25.0)):
            name = f"N{start:%Y%m%d}S{first + i:04d}.fits"
            files["bias"].append(gmos_bias(folder / name, when))
    files["bias"].sort()
    for i, (when, exptime) in enumerate(
        zip(_series(dt.datetime(2017, 7, 2, 5, 10, 0), 5, 60.0), (40.0, 34.0, 28.0, 21.0, 16.0), strict=True)
    ):
        files["twilight"].append(gmos_twilight(folder / f"N20170702S{178 + i:04d}.fits", when, exptime))
    dithers = ((0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (-10.0, 0.0), (0.0, -10.0))
    for i, (when, offsets) in enumerate(zip(_series(dt.datetime(2017, 6, 14, 6, 20, 0), 5, 30.0), dithers,
                                            strict=True)):
        files["science"].append(gmos_science(folder / f"N20170614S{201 + i:04d}.fits", when, offsets=offsets))
    files["bpm"].append(gmos_bpm(folder / "bpm_20170306_gmos-n_Ham_22_full_12amp.fits"))
    (folder / "README.txt").write_text("GN-2017A-SV-151 tutorial data\n")
    (folder / "truth").mkdir(exist_ok=True)
    (folder / "truth" / "stars.csv").write_text("x,y,mag\n1,2,20.0\n")
    return files


def write_gsaoi_tutorial(folder: Path) -> dict[str, list[Path]]:
    """GSAOI tutorial example 1 in miniature.

    Returns the written files by kind: ``lamp_on`` (S20170505S0030-0032), ``lamp_off``
    (S20170505S0060-0062), ``science`` (guided, S20170505S0095-0097), ``sky`` (unguided,
    S20170505S0098-0099), ``standard`` (S20170504S0114-0115), ``bpm``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {
        "lamp_on": [], "lamp_off": [], "science": [], "sky": [], "standard": [], "bpm": [],
    }
    for i, when in enumerate(_series(dt.datetime(2017, 5, 5, 12, 0, 0), 3, 20.0)):
        files["lamp_on"].append(gsaoi_lamp_flat(folder / f"S20170505S{30 + i:04d}.fits", when, on=True))
    for i, when in enumerate(_series(dt.datetime(2017, 5, 5, 12, 30, 0), 3, 20.0)):
        files["lamp_off"].append(gsaoi_lamp_flat(folder / f"S20170505S{60 + i:04d}.fits", when, on=False))
    times = _series(dt.datetime(2017, 5, 5, 23, 0, 0), 5, 90.0)
    for i, when in enumerate(times[:3]):
        path = folder / f"S20170505S{95 + i:04d}.fits"
        files["science"].append(gsaoi_science(path, when, guided=True, offsets=(3.0 * i, 0.0)))
    for i, when in enumerate(times[3:]):
        path = folder / f"S20170505S{98 + i:04d}.fits"
        files["sky"].append(gsaoi_science(path, when, guided=False, offsets=(300.0, 300.0 + 5 * i)))
    for i, when in enumerate(_series(dt.datetime(2017, 5, 4, 23, 50, 0), 2, 45.0)):
        files["standard"].append(gsaoi_standard(folder / f"S20170504S{114 + i:04d}.fits", when))
    files["bpm"].append(gsaoi_bpm(folder / "bpm_20121104_gsaoi_gsaoi_11_full_4amp.fits"))
    return files


@pytest.fixture(scope="session")
def gmos_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    """A read-only folder with the miniature GMOS-N tutorial dataset, and its files by kind."""
    folder = tmp_path_factory.mktemp("gmos_raw")
    return folder, write_gmos_tutorial(folder)


@pytest.fixture(scope="session")
def gsaoi_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    """A read-only folder with the miniature GSAOI tutorial dataset, and its files by kind."""
    folder = tmp_path_factory.mktemp("gsaoi_raw")
    return folder, write_gsaoi_tutorial(folder)
