"""Which calibration goes with which frames: DRAGONS' matching rules on the dataset table.

A bias matches instrument, detector, binning, read mode (gain and read speed) and ROI; a
twilight flat matches those and the filter; a static BPM matches instrument, detector and
binning and must be valid from a date on or before the observation. Among the matches the
one closest in time wins, within a window (90 days for biases, 180 for flats, as the Gemini
calibration manager uses). Rules from ``shared/reference/reduction-steps.md`` section 6.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gemred.errors import GemredInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MATCH_KEYS",
    "WINDOW_DAYS",
    "CalibrationRequest",
    "match_calibration",
    "match_bpm",
    "rank_candidates",
]

#: Descriptor columns that must be equal, per kind of calibration.
MATCH_KEYS = {
    "bias": ("instrument", "detector_name", "binning", "read_mode", "detector_roi_setting"),
    "twilight_flat": (
        "instrument",
        "detector_name",
        "binning",
        "read_mode",
        "detector_roi_setting",
        "filter_name",
    ),
    "lamp_flat": ("instrument", "filter_name"),
    "fringe": ("instrument", "detector_name", "binning", "detector_roi_setting", "filter_name"),
    "bpm": ("instrument", "detector_name", "binning"),
}
#: Largest time difference allowed, in days (None: no limit).
WINDOW_DAYS = {"bias": 90.0, "twilight_flat": 180.0, "lamp_flat": 30.0, "fringe": 365.0, "bpm": None}
#: Table roles that provide each kind of calibration (fringes are made, never raw).
_ROLES = {
    "bias": ("bias",),
    "twilight_flat": ("twilight_flat",),
    "lamp_flat": ("lamp_on_flat",),
    "fringe": (),
    "bpm": ("bpm",),
}


@dataclass(frozen=True)
class CalibrationRequest:
    """What a group of frames needs: the kind of calibration and its own descriptors."""

    kind: str
    group: str
    descriptors: dict

    def describe(self) -> str:
        keys = MATCH_KEYS[self.kind]
        return ", ".join(f"{k}={self.descriptors.get(k)!r}" for k in keys)


def _time(value: object) -> dt.datetime | None:
    import pandas as pd

    try:
        return pd.Timestamp(value).to_pydatetime()
    except (TypeError, ValueError):
        return None


def _refusal(
    kind: str, want: Mapping, row: Mapping, when: dt.datetime | None, window: float | None
) -> str | None:
    """Why candidate ``row`` cannot serve, or None if it can."""
    for key in MATCH_KEYS[kind]:
        if str(row.get(key)) != str(want.get(key)):
            return f"{key} is {row.get(key)!r}, needed {want.get(key)!r}"
    cal_time = _time(row.get("ut_datetime"))
    if kind == "bpm":
        if when is not None and cal_time is not None and cal_time.date() > when.date():
            return f"valid only from {cal_time.date()}, after the observation ({when.date()})"
        return None
    if window is not None and when is not None and cal_time is not None:
        days = abs((cal_time - when).total_seconds()) / 86400.0
        if days > window:
            return f"{days:.1f} days away, more than the {window:g}-day window"
    return None


def rank_candidates(
    kind: str,
    want: Mapping,
    candidates: Iterable[tuple[str, Mapping]],
    *,
    window_days: float | None = None,
) -> tuple[list[str], list[str]]:
    """Sort calibration candidates into those that can serve, best first, and those refused.

    The matching rules shared by the dataset table (:func:`match_calibration`) and the
    calibration database (:class:`gemred.caldb.CalibrationDB`).

    Parameters
    ----------
    kind : str
        A key of :data:`MATCH_KEYS`.
    want : mapping
        Descriptors of the frame that needs the calibration (``ut_datetime`` included).
    candidates : iterable of (str, mapping)
        A label (group name or file) and the descriptors of each candidate.
    window_days : float, optional
        Override the default time window of that kind of calibration.

    Returns
    -------
    accepted : list of str
        Labels of the candidates that match, closest in time first (for a BPM: the latest
        one valid on the date of observation first); ties broken by label.
    refused : list of str
        ``"label: reason"`` for each candidate that does not match.
    """
    window = WINDOW_DAYS[kind] if window_days is None else window_days
    when = _time(want.get("ut_datetime"))
    accepted: list[tuple[float, str]] = []
    refused: list[str] = []
    for label, cal in candidates:
        why = _refusal(kind, want, cal, when, window)
        if why:
            refused.append(f"{label}: {why}")
            continue
        cal_time = _time(cal.get("ut_datetime"))
        if kind == "bpm":
            # The latest BPM valid on the date of observation.
            distance = -(cal_time.timestamp() if cal_time else 0.0)
        else:
            distance = abs((cal_time - when).total_seconds()) if cal_time and when else 0.0
        accepted.append((distance, label))
    return [label for _, label in sorted(accepted)], refused


def match_calibration(
    table: pd.DataFrame, request: CalibrationRequest, *, window_days: float | None = None
) -> str:
    """Name of the calibration group (or BPM file) that serves ``request``.

    Parameters
    ----------
    table : pandas.DataFrame
        The dataset table (``gemred.table.read_table``).
    request : CalibrationRequest
        Kind of calibration and the descriptors of the group that needs it (its first frame).
    window_days : float, optional
        Override the default time window of that kind of calibration.

    Returns
    -------
    str
        The ``group`` of the matching calibration frames (for a BPM, its file path).

    Raises
    ------
    GemredInputError
        When nothing matches: names the group, what it needed and why each candidate was refused.
    """
    kind = request.kind
    window = WINDOW_DAYS[kind] if window_days is None else window_days
    candidates = table[table["role"].isin(_ROLES[kind])]
    # The first frame of each group, groups in name order: one sort, not one per group; only the
    # columns the matching reads (converting whole rows to dicts is the slow part).
    ordered = candidates.sort_values(["group", "ut_datetime"], kind="stable").drop_duplicates("group")
    columns = list(dict.fromkeys([*MATCH_KEYS[kind], "ut_datetime", "filename", "group"]))
    rows = ordered[columns].to_dict("records")
    firsts = [(row["filename"] if kind == "bpm" else row["group"], row) for row in rows]
    accepted, refused = rank_candidates(kind, request.descriptors, firsts, window_days=window)
    if accepted:
        return accepted[0]
    msg = (
        f"no {kind.replace('_', ' ')} for group {request.group} (needs {request.describe()}"
        + (f", within {window:g} days" if window else "")
        + "); "
        + ("candidates refused: " + "; ".join(refused[:5]) if refused else "the table has none")
        + ". Add matching raw calibrations to the table, or name one explicitly in the config."
    )
    raise GemredInputError(msg)


def match_bpm(table: pd.DataFrame, group: str, descriptors: dict) -> str | None:
    """The static BPM file for a group, or None when the table has no BPM at all."""
    if not (table["role"] == "bpm").any():
        return None
    return match_calibration(table, CalibrationRequest("bpm", group, descriptors))
