"""GMOS-N and GMOS-S Hamamatsu detector facts: amplifiers, gains, noise, geometry.

Numbers are those of Gemini's own lookup tables (DRAGONS ``gemini_instruments/gmos/lookup.py``
and ``geminidr/gmos/lookups/geometry_conf.py``); see ``shared/reference/gemini-raw-format.md``.
Only the Hamamatsu generations (GMOS-N from 2017-02-24, GMOS-S from 2015-08-26) are tabulated.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = [
    "AmpCalibration",
    "DetectorSet",
    "DETECTOR_SETS",
    "detector_set",
    "amp_calibration",
    "read_speed_setting",
    "gain_setting",
    "read_mode",
    "FRINGE_FILTERS",
    "needs_fringe_correction",
    "ZERO_POINTS",
    "SKY_MAG_PER_ARCSEC2",
    "OVERSCAN_COLUMNS",
    "AMP_WIDTH",
    "CHIP_SHAPE",
]

#: Overscan width in binned pixels, whatever the binning.
OVERSCAN_COLUMNS = 32
#: Unbinned columns read by one Hamamatsu amplifier.
AMP_WIDTH = 512
#: Unbinned Hamamatsu chip shape (rows, columns).
CHIP_SHAPE = (4224, 2048)
#: Unbinned rows at the bottom of each Hamamatsu CCD that are kept in DATASEC but left out
#: of overscan fits and trimmed by IRAF-compatible reductions.
BOTTOM_ROWS_EXCLUDED = 48

#: Filters that need a fringe frame on Hamamatsu detectors.
FRINGE_FILTERS = {"Hamamatsu-N": ("z", "Y"), "Hamamatsu-S": ("z", "Y")}

def needs_fringe_correction(detector_name: str, filter_name: str) -> bool:
    """Whether DRAGONS fringe-corrects this detector and filter (Hamamatsu: z and Y)."""
    return filter_name in FRINGE_FILTERS.get(detector_name, ())


#: Nominal zero points: magnitude that gives 1 electron per second, CCD2.
ZERO_POINTS = {
    "Hamamatsu-N": {"g": 27.915, "r": 28.299, "i": 28.410, "z": 28.222},
    "Hamamatsu-S": {"u": 24.10, "g": 27.99, "r": 28.23, "i": 28.21, "z": 28.02},
}

#: Dark-sky surface brightness (mag / arcsec^2) used by the simulator.
SKY_MAG_PER_ARCSEC2 = {"g": 22.0, "r": 21.1, "i": 20.1, "z": 19.1}


@dataclass(frozen=True)
class AmpCalibration:
    """Gain (e-/ADU), read noise (e-) and nominal bias level (ADU) of one amplifier."""

    gain: float
    read_noise: float
    bias_level: float


@dataclass(frozen=True)
class DetectorSet:
    """One generation of three Hamamatsu CCDs on one GMOS.

    ``ccd_shifts`` and ``ccd_rotations`` give the centre of CCD1 and CCD3 relative to
    CCD2 in unbinned pixels, and their rotation in degrees counter-clockwise.
    """

    instrument: str
    name: str
    dettype: str
    detector: str
    chip_names: tuple[str, str, str]
    valid_from: dt.date
    valid_until: dt.date | None
    pixel_scale: float
    ccd_shifts: tuple[tuple[float, float], tuple[float, float]]
    ccd_rotations: tuple[float, float]
    tile_gap: int
    full_well: tuple[float, float, float]
    amps: dict[tuple[str, str], AmpCalibration]

    @property
    def detid(self) -> str:
        """The PHU ``DETID`` value: the three chip names joined by commas."""
        return ",".join(self.chip_names)

    def amp_names(self) -> list[str]:
        """The 12 ``AMPNAME`` values in raw extension order (left to right)."""
        return [f"{chip}, {k}" for chip in self.chip_names for k in (4, 3, 2, 1)]


def _amps(chips: tuple[str, str, str], rows: list[tuple]) -> dict[tuple[str, str], AmpCalibration]:
    """Build the LUT from rows of (slow/low, fast/low, fast/high) triplets, amps 1..4 per chip."""
    table: dict[tuple[str, str], AmpCalibration] = {}
    names = [f"{chip}, {k}" for chip in chips for k in (1, 2, 3, 4)]
    for name, (slow_low, fast_low, fast_high) in zip(names, rows, strict=True):
        table[(name, "Normal")] = AmpCalibration(*slow_low)
        table[(name, "Acquisition")] = AmpCalibration(*fast_low)
        table[(name, "Bright")] = AmpCalibration(*fast_high)
    return table


_GMOSN_CHIPS = ("BI13-20-4k-1", "BI12-09-4k-2", "BI13-18-4k-2")
_GMOSS_CHIPS = ("BI5-36-4k-2", "BI11-33-4k-1", "BI12-34-4k-1")
_GMOSS_CHIPS_2023 = ("BI11-41-4k-2", "BI13-19-4k-3", "BI12-34-4k-1")

DETECTOR_SETS: list[DetectorSet] = [
    DetectorSet(
        instrument="GMOS-N",
        name="Hamamatsu-N",
        dettype="S10892-N",
        detector="GMOS-N + Hamamatsu",
        chip_names=_GMOSN_CHIPS,
        valid_from=dt.date(2017, 2, 24),
        valid_until=None,
        pixel_scale=0.0807,
        ccd_shifts=((-2115.95, -0.21739), (2115.48, 0.1727)),
        ccd_rotations=(-0.004, -0.00537),
        tile_gap=67,
        full_well=(129000.0, 125000.0, 121000.0),
        amps=_amps(
            _GMOSN_CHIPS,
            [
                ((1.568, 3.99, 446), (1.91, 5.88, 501), (5.04, 8.17, 501)),
                ((1.620, 4.12, 448), (1.97, 6.01, 499), (5.05, 8.75, 502)),
                ((1.618, 4.12, 456), (1.95, 6.88, 501), (5.18, 8.94, 502)),
                ((1.675, 4.06, 456), (2.01, 8.02, 499), (5.21, 9.90, 500)),
                ((1.664, 4.20, 448), (2.01, 5.86, 501), (5.29, 8.84, 500)),
                ((1.633, 3.88, 451), (1.96, 5.39, 500), (5.14, 8.19, 500)),
                ((1.650, 3.98, 452), (1.97, 6.34, 501), (5.13, 8.91, 500)),
                ((1.690, 4.20, 439), (2.03, 6.71, 499), (5.29, 9.42, 500)),
                ((1.654, 4.55, 456), (1.95, 6.79, 499), (5.09, 8.80, 501)),
                ((1.587, 4.02, 456), (1.89, 5.98, 499), (4.86, 8.03, 502)),
                ((1.630, 4.35, 456), (1.95, 6.13, 501), (5.10, 8.53, 501)),
                ((1.604, 4.04, 441), (1.95, 6.10, 500), (5.03, 8.13, 501)),
            ],
        ),
    ),
    DetectorSet(
        instrument="GMOS-S",
        name="Hamamatsu-S",
        dettype="S10892",
        detector="GMOS + Hamamatsu_new",
        chip_names=_GMOSS_CHIPS,
        valid_from=dt.date(2015, 8, 26),
        valid_until=dt.date(2023, 12, 13),
        pixel_scale=0.0800,
        ccd_shifts=((-2110.2, 0.71), (2109.0, -0.73)),
        ccd_rotations=(0.0, 0.0),
        tile_gap=61,
        full_well=(106966.0, 115000.0, 125719.0),
        amps=_amps(
            _GMOSS_CHIPS,
            [
                ((1.852, 4.21, 500), (1.566, 6.68, 819), (5.240, 8.93, 2811)),
                ((1.878, 4.24, 897), (1.592, 7.10, 1040), (5.330, 9.13, 2854)),
                ((1.874, 4.28, 633), (1.593, 6.35, 856), (5.300, 8.85, 2932)),
                ((1.834, 4.04, 730), (1.556, 5.49, 841), (5.183, 8.07, 2909)),
                ((1.878, 4.29, 990), (1.613, 5.19, 2682), (5.334, 8.35, 3334)),
                ((1.840, 4.07, 760), (1.582, 6.14, 2551), (5.225, 8.59, 3272)),
                ((1.933, 4.24, 495), (1.648, 7.38, 2114), (5.459, 8.62, 3091)),
                ((1.908, 3.90, 905), (1.634, 5.77, 2172), (5.407, 8.02, 3252)),
                ((1.652, 3.53, 795), (1.445, 6.36, 1856), (4.828, 7.94, 3078)),
                ((1.761, 3.72, 470), (1.545, 6.80, 1322), (5.129, 8.30, 3078)),
                ((1.724, 3.61, 525), (1.478, 7.88, 1445), (4.894, 7.99, 3003)),
                ((1.813, 4.15, 230), (1.549, 7.72, 893), (5.120, 9.34, 3058)),
            ],
        ),
    ),
    DetectorSet(
        instrument="GMOS-S",
        name="Hamamatsu-S",
        dettype="S10892",
        detector="GMOS + Ham-2",
        chip_names=_GMOSS_CHIPS_2023,
        valid_from=dt.date(2023, 12, 14),
        valid_until=None,
        pixel_scale=0.0800,
        ccd_shifts=((-2112.5, -1.1), (2110.8, 1.05)),
        ccd_rotations=(0.0, 0.0),
        tile_gap=61,
        full_well=(105466.0, 118000.0, 131823.0),
        amps=_amps(
            _GMOSS_CHIPS_2023,
            [
                ((2.038, 4.22, 331), (1.719, 7.01, 547), (5.758, 11.74, 2691)),
                ((2.016, 4.29, 312), (1.711, 6.93, 910), (5.708, 10.19, 2821)),
                ((2.020, 4.20, 360), (1.715, 6.37, 796), (5.719, 10.45, 2945)),
                ((1.943, 4.05, 512), (1.652, 5.19, 1033), (5.518, 9.06, 2976)),
                ((1.798, 3.79, 776), (1.533, 5.20, 3065), (5.091, 11.27, 3451)),
                ((1.745, 3.68, 108), (1.498, 5.82, 2278), (4.956, 9.46, 3193)),
                ((1.787, 3.59, 158), (1.525, 5.24, 1856), (5.082, 7.99, 3020)),
                ((1.787, 4.22, 1073), (1.531, 5.46, 3260), (5.100, 9.52, 3584)),
                ((1.594, 3.39, 514), (1.445, 4.66, 1890), (4.581, 8.85, 3046)),
                ((1.699, 3.67, 497), (1.545, 5.10, 1324), (4.893, 7.96, 3037)),
                ((1.681, 3.39, 525), (1.478, 5.39, 1449), (4.825, 8.48, 2963)),
                ((1.770, 3.53, 507), (1.549, 9.57, 920), (5.082, 7.83, 3033)),
            ],
        ),
    ),
]


def detector_set(instrument: str, date: dt.date | None = None, detid: str | None = None) -> DetectorSet:
    """Return the Hamamatsu detector set of ``instrument`` in use on ``date`` (or with ``detid``).

    Raises
    ------
    ValueError
        If no tabulated Hamamatsu generation matches (older EEV/e2v data are not supported).
    """
    for dset in DETECTOR_SETS:
        if dset.instrument != instrument:
            continue
        if detid is not None:
            if dset.detid.replace(" ", "") == detid.replace(" ", ""):
                return dset
            continue
        if date is None or (
            date >= dset.valid_from and (dset.valid_until is None or date <= dset.valid_until)
        ):
            return dset
    msg = (
        f"no Hamamatsu detector table for {instrument} "
        f"(date {date}, DETID {detid!r}); only Hamamatsu-era GMOS data are supported"
    )
    raise ValueError(msg)


def read_speed_setting(ampinteg: float) -> str:
    """``'slow'`` or ``'fast'`` from PHU ``AMPINTEG`` (Hamamatsu threshold 8000)."""
    return "slow" if float(ampinteg) > 8000 else "fast"


def gain_setting(raw_gain: float) -> str:
    """``'low'`` or ``'high'`` from a raw extension's ``GAIN`` (threshold 3.0)."""
    return "low" if float(raw_gain) < 3.0 else "high"


def read_mode(gain: str, speed: str) -> str:
    """GMOS read mode name from gain and read-speed settings."""
    modes = {
        ("low", "slow"): "Normal",
        ("high", "fast"): "Bright",
        ("low", "fast"): "Acquisition",
        ("high", "slow"): "Engineering",
    }
    return modes[(gain, speed)]


def amp_calibration(dset: DetectorSet, ampname: str, mode: str = "Normal") -> AmpCalibration:
    """Gain, read noise and bias level of amplifier ``ampname`` in read mode ``mode``.

    Raises
    ------
    ValueError
        For an unknown amplifier, or the uncalibrated ``Engineering`` mode.
    """
    key = (ampname.strip(), mode)
    if key not in dset.amps:
        msg = f"no gain/read-noise entry for amplifier {ampname!r} in {mode!r} mode ({dset.detector})"
        raise ValueError(msg)
    return dset.amps[key]
