"""Calibration association: on dataset tables (matches, time windows, BPM dates, refusals), and
in the workflow, where an explicit calibration beats one made in the run, which beats the database's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from gemred.association import CalibrationRequest, match_bpm, match_calibration
from gemred.caldb import CALDB_ENV, CalibrationDB
from gemred.io import GemredInputError, write_frame
from gemred.table import build_table, write_table

REPO = Path(__file__).resolve().parents[1]

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


# --- in the workflow: explicit > made in this run > calibration database --------------------
# Snakemake dry runs (``-n``) on the simulated star field; the calibration database holds
# cheap copies of a master bias and flat (their headers over tiny arrays: matching reads only
# the headers), and the plan's ``input:`` lines show which calibration each frame gets.


def _fake_processed(source: Path, dest: Path, **cards) -> Path:
    """A processed calibration with ``source``'s headers (PHU changed by ``cards``), tiny arrays."""
    with fits.open(source) as hdul:
        phu = hdul[0].header.copy()
        phu.update(cards)
        hdus = [fits.PrimaryHDU(header=phu)]
        hdus += [
            fits.ImageHDU(np.zeros((2, 2), np.float32), header=hdu.header.copy())
            for hdu in hdul[1:]
            if hdu.is_image and hdu.name == "SCI"
        ]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(dest)
    return dest


@pytest.fixture(scope="module")
def starfield_tables(gmos_starfield_small, tmp_path_factory) -> dict:
    """Tables of the whole star field and of its science frames only, and processed headers."""
    from gemred.recipes.gmos_calibrations import make_master_bias, make_master_flat

    raw = gmos_starfield_small
    root = tmp_path_factory.mktemp("association-workflow")
    files = sorted(raw.glob("*.fits"))
    science = [str(p) for p in files if p.name.startswith("N20170614S02")]
    biases = [str(p) for p in files if p.name.startswith("N20170613S018")]
    flats = [str(p) for p in files if p.name.startswith("N20170702S01")]
    write_table(build_table([str(p) for p in files]), root / "all.tsv")
    write_table(build_table(science), root / "science.tsv")
    bias = make_master_bias(biases)
    flat = make_master_flat(flats, bias=bias)
    return {
        "root": root,
        "bias": write_frame(bias, root / "real" / "N20170613S0180_bias.fits"),
        "flat": write_frame(flat, root / "real" / "N20170702S0178_flat.fits"),
    }


def _plan(
    tables: dict, table: str, cwd: Path, db: Path, *extra: str, dry: bool = True, target: str | None = None
) -> subprocess.CompletedProcess:
    """Snakemake on one of the tables with ``db`` as calibration database; a dry run by default."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "--snakefile",
            str(REPO / "Snakefile"),
            *(["-n"] if dry else []),
            *([target] if target else []),
            "--cores",
            "1",
            "--config",
            f"datasets={tables['root'] / table}",
            "output_dir=out",
            *extra,
        ],
        cwd=cwd,
        env={**os.environ, CALDB_ENV: str(db)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _mosaic_inputs(output: str) -> list[str]:
    """The ``input:`` lines of the planned ``mosaic_frame`` jobs."""
    jobs = re.findall(r"rule mosaic_frame:\n\s+input: ([^\n]+)", output)
    assert len(jobs) == 5, output[-3000:]
    return jobs


@pytest.fixture
def stored(starfield_tables, tmp_path) -> dict:
    """A calibration database holding cheap copies of the bias and flat."""
    db = tmp_path / "cal_manager.db"
    bias = _fake_processed(starfield_tables["bias"], tmp_path / "db" / "N20170613S0180_bias.fits")
    flat = _fake_processed(starfield_tables["flat"], tmp_path / "db" / "N20170702S0178_flat.fits")
    CalibrationDB(db).add([bias, flat])
    return {"db": db, "bias": bias, "flat": flat}


def test_made_in_this_run_beats_the_database(starfield_tables, stored, tmp_path) -> None:
    proc = _plan(starfield_tables, "all.tsv", tmp_path, stored["db"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for inputs in _mosaic_inputs(proc.stdout):
        assert "out/calibrations/N20170613S0180_bias.fits" in inputs
        assert "out/calibrations/N20170702S0178_flat.fits" in inputs
        assert str(stored["bias"]) not in inputs and str(stored["flat"]) not in inputs


def test_explicit_beats_made_and_database(starfield_tables, stored, tmp_path) -> None:
    explicit = starfield_tables["bias"]
    proc = _plan(
        starfield_tables, "all.tsv", tmp_path, stored["db"], f"calibrations={{processed_bias: {explicit}}}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for inputs in _mosaic_inputs(proc.stdout):
        assert str(explicit) in inputs and "N20170613S0180_bias.fits" not in inputs.replace(str(explicit), "")
        assert "out/calibrations/N20170702S0178_flat.fits" in inputs
    assert "rule master_bias:" not in proc.stdout  # the flat gets the explicit bias too


def test_database_when_the_table_has_none(starfield_tables, stored, tmp_path) -> None:
    proc = _plan(starfield_tables, "science.tsv", tmp_path, stored["db"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for inputs in _mosaic_inputs(proc.stdout):
        assert str(stored["bias"]) in inputs and str(stored["flat"]) in inputs
    assert "rule master_bias:" not in proc.stdout and "rule master_flat:" not in proc.stdout


def test_no_match_stops_before_any_job(starfield_tables, tmp_path) -> None:
    db = tmp_path / "cal_manager.db"
    late = _fake_processed(
        starfield_tables["bias"], tmp_path / "db" / "N20180613S0180_bias.fits", **{"DATE-OBS": "2018-06-13"}
    )
    CalibrationDB(db).add([late])
    proc = _plan(starfield_tables, "science.tsv", tmp_path, db, dry=False)
    assert proc.returncode != 0
    message = proc.stderr + proc.stdout
    assert "no bias for group N20170614S0201" in message and "the table has none" in message
    assert "no processed bias in the calibration database" in message
    assert "N20170614S0201.fits" in message and "read_mode='Normal'" in message
    assert f"{late}: " in message and "more than the 90-day window" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_changed_or_missing_stored_calibration_is_refused(starfield_tables, stored, tmp_path, damage) -> None:
    bias = stored["bias"]
    if damage == "changed":
        data = bytearray(bias.read_bytes())
        data[-1] ^= 0xFF
        bias.write_bytes(bytes(data))
        expected = f"calibration {bias} changed since it was added"
    else:
        bias.unlink()
        expected = f"calibration {bias} is in the database but the file is gone"
    proc = _plan(starfield_tables, "science.tsv", tmp_path, stored["db"])
    assert proc.returncode != 0
    assert expected in proc.stderr + proc.stdout
    assert "gemred caldb" in proc.stderr + proc.stdout


def test_store_false_keeps_the_database_unchanged(starfield_tables, tmp_path) -> None:
    db = tmp_path / "cal_manager.db"
    target = "out/calibrations/N20170613S0180_bias.fits"
    settings = tmp_path / "no_store.yaml"
    settings.write_text("calibrations:\n  store: false\n")
    extra = ("--configfile", str(settings))
    proc = _plan(starfield_tables, "all.tsv", tmp_path, db, *extra, dry=False, target=target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / target).is_file()
    assert CalibrationDB(db).list().empty
