"""The dataset table: roles, stacking groups, TSV round trip and checks on reading."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from raw_headers import (
    gmos_bias,
    gmos_science,
    gmos_twilight,
    gsaoi_lamp_flat,
    write_gmos_tutorial,
)

from gemred.io import GemredInputError
from gemred.table import ROLES, TABLE_COLUMNS, build_table, read_table, write_table

DAY = dt.timedelta(days=1)


def _by_name(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(name=[Path(f).name for f in table["filename"]]).set_index("name")


@pytest.fixture(scope="module")
def gmos_table(gmos_raw_dir) -> pd.DataFrame:
    return build_table(gmos_raw_dir[0])


@pytest.fixture(scope="module")
def gsaoi_table(gsaoi_raw_dir) -> pd.DataFrame:
    return build_table(gsaoi_raw_dir[0])


def test_columns_and_types(gmos_table):
    assert tuple(gmos_table.columns) == TABLE_COLUMNS
    assert TABLE_COLUMNS[:4] == ("filename", "role", "group", "sky_candidate")
    assert gmos_table["exposure_time"].dtype == np.float64
    assert gmos_table["coadds"].dtype == np.int64
    assert gmos_table["sky_candidate"].dtype == bool
    bias = _by_name(gmos_table).loc["N20170613S0180.fits"]
    assert bias["tags"] == "AT_ZENITH,AZEL_TARGET,BIAS,CAL,GEMINI,GMOS,NON_SIDEREAL,NORTH,RAW,UNPREPARED"
    assert (bias["binning"], bias["read_mode"], bias["gain_setting"]) == ("2x2", "Normal", "low")
    assert (bias["detector_roi_setting"], bias["detector_name"]) == ("Full Frame", "Hamamatsu-N")


def test_gmos_roles_and_groups(gmos_raw_dir, gmos_table):
    folder, kinds = gmos_raw_dir
    rows = _by_name(gmos_table)
    assert sorted(rows.index) == sorted(p.name for p in folder.glob("*.fits")), "README and truth/ skipped"
    expected = {
        "bias": ("bias", "N20170613S0180"),
        "twilight": ("twilight_flat", "N20170702S0178"),
        "science": ("science", "N20170614S0201"),
        "bpm": ("bpm", "bpm_20170306_gmos-n_Ham_22_full_12amp"),
    }
    for kind, (role, group) in expected.items():
        for path in kinds[kind]:
            assert (rows.loc[path.name, "role"], rows.loc[path.name, "group"]) == (role, group), path.name
    assert not rows["sky_candidate"].any()
    assert list(gmos_table["filename"]) == sorted(str(p) for p in folder.glob("*.fits"))


def test_gsaoi_roles_and_groups(gsaoi_raw_dir, gsaoi_table):
    kinds = gsaoi_raw_dir[1]
    rows = _by_name(gsaoi_table)
    expected = {
        "lamp_on": ("lamp_on_flat", "S20170505S0030", False),
        "lamp_off": ("lamp_off_flat", "S20170505S0030", False),
        "science": ("science", "S20170505S0095", False),
        "sky": ("science", "S20170505S0095", True),
        "standard": ("standard", "S20170504S0114", False),
        "bpm": ("bpm", "bpm_20121104_gsaoi_gsaoi_11_full_4amp", False),
    }
    for kind, (role, group, sky) in expected.items():
        for path in kinds[kind]:
            row = rows.loc[path.name]
            assert (row["role"], row["group"], row["sky_candidate"]) == (role, group, sky), path.name
    assert set(rows["binning"]) == {"1x1"}


def test_group_is_named_after_first_frame_in_time(tmp_path):
    start = dt.datetime(2017, 6, 13, 16, 0)
    gmos_bias(tmp_path / "N20170613S0180.fits", start + dt.timedelta(minutes=5))
    gmos_bias(tmp_path / "N20170613S0190.fits", start)
    gmos_bias(tmp_path / "N20170616S0001.fits", start + 3 * DAY)  # exactly 3 days later: same group
    table = build_table(tmp_path)
    assert set(table["group"]) == {"N20170613S0190"}


def test_biases_split_on_gaps_and_settings(tmp_path):
    start = dt.datetime(2017, 6, 13, 16, 0)
    gmos_bias(tmp_path / "N20170613S0180.fits", start)
    gmos_bias(tmp_path / "N20170617S0001.fits", start + 3 * DAY + dt.timedelta(minutes=1))
    gmos_bias(tmp_path / "N20170613S0181.fits", start, AMPINTEG=1000)  # fast read: Acquisition mode
    binned = gmos_bias(tmp_path / "N20170613S0182.fits", start, DETRO1XS=6144, DETRO1YS=4224)
    with fits.open(binned, mode="update") as hdul:
        for hdu in hdul[1:]:
            hdu.header["CCDSUM"] = "1 1"
    rows = _by_name(build_table(tmp_path))
    assert dict(rows["group"]) == {
        "N20170613S0180.fits": "N20170613S0180",
        "N20170613S0181.fits": "N20170613S0181",
        "N20170613S0182.fits": "N20170613S0182",
        "N20170617S0001.fits": "N20170617S0001",
    }
    assert rows.loc["N20170613S0182.fits", "binning"] == "1x1"


def test_twilights_split_by_filter_and_science_by_observation(tmp_path):
    start = dt.datetime(2017, 7, 2, 5, 10)
    gmos_twilight(tmp_path / "N20170702S0178.fits", start, 40.0)
    gmos_twilight(tmp_path / "N20170702S0179.fits", start + dt.timedelta(minutes=1), 30.0, FILTER2="z_G0304")
    gmos_science(tmp_path / "N20170702S0201.fits", start + dt.timedelta(hours=2))
    gmos_science(tmp_path / "N20170702S0202.fits", start + dt.timedelta(hours=3), exptime=30.0)
    gmos_science(tmp_path / "N20170702S0203.fits", start + dt.timedelta(hours=4), OBSID="GN-2017A-SV-151-400")
    gmos_science(tmp_path / "N20170702S0204.fits", start, OBSCLASS="acq")
    rows = _by_name(build_table(tmp_path))
    assert dict(rows["group"]) == {
        "N20170702S0178.fits": "N20170702S0178",
        "N20170702S0179.fits": "N20170702S0179",
        "N20170702S0201.fits": "N20170702S0201",
        "N20170702S0202.fits": "N20170702S0201",
        "N20170702S0203.fits": "N20170702S0203",
        "N20170702S0204.fits": "",
    }
    assert rows.loc["N20170702S0204.fits", "role"] == "ignore"


def test_lamp_flat_group_is_named_after_first_lamp_on_frame(tmp_path):
    start = dt.datetime(2017, 5, 5, 12, 0)
    gsaoi_lamp_flat(tmp_path / "S20170505S0010.fits", start, on=False)
    gsaoi_lamp_flat(tmp_path / "S20170505S0030.fits", start + dt.timedelta(hours=1), on=True)
    gsaoi_lamp_flat(tmp_path / "S20170507S0030.fits", start + 2 * DAY, on=True)
    rows = _by_name(build_table(tmp_path))
    assert dict(rows["group"]) == {
        "S20170505S0010.fits": "S20170505S0030",
        "S20170505S0030.fits": "S20170505S0030",
        "S20170507S0030.fits": "S20170507S0030",
    }


def test_build_table_from_a_list_of_files(gmos_raw_dir):
    files = [str(p) for p in gmos_raw_dir[1]["bias"][5:]]
    table = build_table(files)
    assert list(table["filename"]) == files
    assert set(table["group"]) == {"N20170615S0534"}


@pytest.mark.filterwarnings("ignore:Unexpected extra padding")
def test_corrupt_fits_file_in_folder_is_named(tmp_path):
    gmos_bias(tmp_path / "N20170613S0180.fits", dt.datetime(2017, 6, 13, 16))
    bad = tmp_path / "N20170613S0181.fits"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(GemredInputError, match="N20170613S0181.fits"):
        build_table(tmp_path)


def test_folder_without_fits_files_is_an_error(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here\n")
    with pytest.raises(GemredInputError, match="no FITS files"):
        build_table(tmp_path)


def test_two_inputs_with_one_root_name_are_an_error(tmp_path):
    when = dt.datetime(2017, 6, 13, 16)
    first = gmos_bias(tmp_path / "a" / "N20170613S0180.fits", when)
    second = gmos_bias(tmp_path / "b" / "N20170613S0180.fits", when)
    with pytest.raises(GemredInputError, match="same file name"):
        build_table([first, second])


@pytest.fixture(scope="module")
def project_template(tmp_path_factory) -> Path:
    """A project folder with raw files in ``raw/`` and the table in ``tables/dataset.tsv``."""
    folder = tmp_path_factory.mktemp("template") / "project"
    write_gmos_tutorial(folder / "raw")
    write_table(build_table(folder / "raw"), folder / "tables" / "dataset.tsv")
    return folder


@pytest.fixture
def project(project_template, tmp_path) -> tuple[Path, Path]:
    """A fresh copy of the project, which the test may damage."""
    folder = Path(shutil.copytree(project_template, tmp_path / "project"))
    return folder, folder / "tables" / "dataset.tsv"


def test_round_trip_with_relative_paths(project):
    folder, path = project
    built = build_table(folder / "raw")
    read = read_table(path)
    assert [name for name in os.listdir(path.parent)] == ["dataset.tsv"], "no temporary file left"
    text = path.read_text().splitlines()
    assert text[0].split("\t") == list(TABLE_COLUMNS)
    assert text[1].split("\t")[0] == "../raw/N20170613S0180.fits"
    expected = built.assign(filename=[os.path.abspath(f) for f in built["filename"]])
    pd.testing.assert_frame_equal(read, expected)
    assert set(read["role"]) <= set(ROLES)


def test_moved_project_still_reads(project, tmp_path):
    folder, path = project
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)
    table = read_table(moved / "tables" / "dataset.tsv")
    assert all(name.startswith(str(moved)) and os.path.isfile(name) for name in table["filename"])


def _edit(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """Rewrite the table's text with ``edit`` applied to its rows (all columns as text)."""
    rows = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(rows).to_csv(path, sep="\t", index=False)


def _set(row: int, column: str, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(rows: pd.DataFrame) -> pd.DataFrame:
        rows.loc[row, column] = value
        return rows

    return edit


def _read_error(path: Path) -> str:
    with pytest.raises(GemredInputError) as info:
        read_table(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_missing_raw_file_is_named_with_the_fix(project):
    folder, path = project
    (folder / "raw" / "N20170614S0203.fits").unlink()
    message = _read_error(path)
    assert "line 9, ../raw/N20170614S0203.fits: file not found" in message
    assert f"run `gemred table RAW_DIR -o {path}` again or remove the row" in message


def test_duplicate_row_is_named(project):
    _, path = project
    _edit(path, lambda rows: pd.concat([rows, rows.iloc[[3]]], ignore_index=True))
    message = _read_error(path)
    assert "../raw/N20170613S0183.fits: file already listed on line 5" in message
    assert "or remove the row" in message


def test_unknown_role_is_named(project):
    _, path = project
    _edit(path, lambda rows: rows.assign(role=rows["role"].replace("twilight_flat", "flat")))
    message = _read_error(path)
    assert "N20170702S0178.fits: unknown role 'flat'" in message
    assert "or remove the row" in message


def test_role_without_group_is_named(project):
    _, path = project
    _edit(path, _set(0, "group", ""))
    assert "role bias needs a group" in _read_error(path)


def test_malformed_number_is_named(project):
    _, path = project
    _edit(path, _set(2, "exposure_time", "ten"))
    assert "exposure_time is 'ten', not a number" in _read_error(path)


def test_missing_column_is_named(project):
    _, path = project
    _edit(path, lambda rows: rows.drop(columns=["role", "coadds"]))
    message = _read_error(path)
    assert "column(s) role, coadds missing" in message
    assert "gemred table RAW_DIR" in message


def test_missing_table_is_named(tmp_path):
    assert "dataset table not found" in _read_error(tmp_path / "nowhere.tsv")
