"""Calibration association on dataset tables: matches, time windows, BPM dates, refusals."""

from __future__ import annotations

import pandas as pd
import pytest

from gemred.association import CalibrationRequest, match_bpm, match_calibration
from gemred.io import GemredInputError

COMMON = {
    "instrument": "GMOS-N",
    "detector_name": "Hamamatsu-N",
    "binning": "2x2",
    "read_mode": "Normal",
    "detector_roi_setting": "Full Frame",
}


def _row(role: str, group: str, when: str, **extra) -> dict:
    return {
        "filename": f"/raw/{group}.fits",
        "role": role,
        "group": group,
        "ut_datetime": when,
        "filter_name": "i",
        **COMMON,
        **extra,
    }


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _row("bias", "N20170601S0001", "2017-06-01T18:00:00"),
            _row("bias", "N20170613S0180", "2017-06-13T18:00:00"),
            _row("bias", "N20170613S0300", "2017-06-13T19:00:00", binning="1x1"),
            _row("twilight_flat", "N20170702S0178", "2017-07-02T15:30:00"),
            _row("twilight_flat", "N20170702S0200", "2017-07-02T15:40:00", filter_name="r"),
            _row("bpm", "bpm_20170306", "2017-03-06T00:00:00"),
            _row("bpm", "bpm_20170701", "2017-07-01T00:00:00"),
            _row("science", "N20170614S0201", "2017-06-14T08:45:00"),
        ]
    )


def _science(table: pd.DataFrame, **change) -> dict:
    return {**table[table.role == "science"].iloc[0].to_dict(), **change}


def test_closest_matching_bias_and_flat(table) -> None:
    sci = _science(table)
    assert match_calibration(table, CalibrationRequest("bias", "sci", sci)) == "N20170613S0180"
    assert match_calibration(table, CalibrationRequest("twilight_flat", "sci", sci)) == "N20170702S0178"


def test_bpm_must_be_valid_on_the_observation_date(table) -> None:
    # The July BPM is closer in time but not yet valid on 2017-06-14.
    assert match_bpm(table, "sci", _science(table)) == "/raw/bpm_20170306.fits"
    later = _science(table, ut_datetime="2017-08-01T00:00:00")
    assert match_bpm(table, "sci", later) == "/raw/bpm_20170701.fits"


def test_no_match_names_group_needs_and_refusals(table) -> None:
    sci = _science(table, filter_name="z")
    with pytest.raises(GemredInputError) as err:
        match_calibration(table, CalibrationRequest("twilight_flat", "N20170614S0201", sci))
    message = str(err.value)
    assert "N20170614S0201" in message and "filter_name='z'" in message
    assert "N20170702S0178: filter_name is 'i', needed 'z'" in message
    assert "\n" not in message


def test_time_window_refuses_old_calibrations(table) -> None:
    sci = _science(table, ut_datetime="2018-06-14T08:45:00")
    with pytest.raises(GemredInputError, match="more than the 90-day window"):
        match_calibration(table, CalibrationRequest("bias", "sci", sci))
    assert (
        match_calibration(table, CalibrationRequest("bias", "sci", sci), window_days=400) == "N20170613S0180"
    )


def test_binning_must_match(table) -> None:
    sci = _science(table, binning="1x1")
    assert match_calibration(table, CalibrationRequest("bias", "sci", sci)) == "N20170613S0300"
