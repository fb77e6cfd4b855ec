"""The calibration database: add/list/remove, matching, refusals, concurrency and the CLI.

Real SQLite files in ``tmp_path``; a real master bias and flat made from the small simulated
``gmos-starfield`` preset, and header-faithful small copies of them (same headers, 2x2 pixels)
where many files or changed dates are needed.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from raw_headers import gsaoi_lamp_flat, gsaoi_science

from gemred.caldb import CALDB_ENV, COLUMNS, CalibrationDB, default_path
from gemred.cli import main
from gemred.dataselect import select_data
from gemred.descriptors import descriptors
from gemred.io import GemredInputError, write_frame
from gemred.recipes.gmos_calibrations import make_master_bias, make_master_flat


@pytest.fixture(scope="module")
def processed(gmos_starfield_small: Path, tmp_path_factory) -> dict[str, Path]:
    """Master bias and flat of the simulated star field, the BPM, and a science frame."""
    raw = sorted(str(p) for p in gmos_starfield_small.glob("*.fits"))
    bpm = select_data(raw, ["BPM"])[0]
    out = tmp_path_factory.mktemp("calibrations")
    bias = make_master_bias(select_data(raw, ["BIAS"])[:5], bpm_path=bpm)
    flat = make_master_flat(select_data(raw, ["FLAT"]), bias=bias, bpm_path=bpm)
    return {
        "bias": write_frame(bias, out / "N20170613S0180_bias.fits"),
        "flat": write_frame(flat, out / "N20170702S0178_flat.fits"),
        "bpm": Path(bpm),
        "science": gmos_starfield_small / "N20170614S0201.fits",
    }


def _small_copy(source: Path, dest: Path, **cards) -> Path:
    """``source``'s headers (PHU changed by ``cards``) over 2x2 arrays: a cheap faithful copy."""
    with fits.open(source) as hdul:
        phu = hdul[0].header.copy()
        phu.update(cards)
        hdus = [fits.PrimaryHDU(header=phu)]
        for hdu in hdul[1:]:
            if hdu.is_image:
                header = hdu.header.copy()
                for key in ("BZERO", "BSCALE"):
                    header.remove(key, ignore_missing=True)
                hdus.append(fits.ImageHDU(np.zeros((2, 2), np.float32), header=header))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(dest)
    return dest


def _science(processed: dict[str, Path], **change) -> dict:
    return {**descriptors(processed["science"]), **change}


def test_small_copy_keeps_the_matching_descriptors(processed, tmp_path) -> None:
    copy = descriptors(_small_copy(processed["bias"], tmp_path / "b.fits"))
    real = descriptors(processed["bias"])
    assert {k: copy[k] for k in COLUMNS[2:9]} == {k: real[k] for k in COLUMNS[2:9]}


def test_add_list_remove(processed, tmp_path) -> None:
    db = CalibrationDB(tmp_path / "sub" / "cal_manager.db")
    assert db.list().empty and list(db.list().columns) == list(COLUMNS)
    db.init()
    added = db.add([processed["bias"], processed["flat"], processed["bpm"]])
    assert added == [processed["bias"].resolve(), processed["flat"].resolve(), processed["bpm"].resolve()]
    table = db.list().set_index("kind")
    assert sorted(table.index) == ["bpm", "processed_bias", "processed_flat"]
    bias = table.loc["processed_bias"]
    assert bias["path"] == str(processed["bias"].resolve())
    assert (bias["instrument"], bias["detector_name"], bias["binning"]) == ("GMOS-N", "Hamamatsu-N", "2x2")
    assert (bias["read_mode"], bias["detector_roi_setting"]) == ("Normal", "Full Frame")
    assert bias["ut_datetime"].startswith("2017-06-13T")
    assert bias["size"] == processed["bias"].stat().st_size and len(bias["sha256"]) == 64
    assert table.loc["processed_flat", "filter_name"] == "i"
    assert table.loc["bpm", "ut_datetime"].startswith("2017-03-06")

    assert db.remove([processed["bias"], tmp_path / "never_added.fits"]) == [processed["bias"].resolve()]
    assert sorted(db.list()["kind"]) == ["bpm", "processed_flat"]
    db.init()  # idempotent: keeps the rows
    assert len(db.list()) == 2
    db.init(wipe=True)
    assert db.list().empty


def test_readding_updates_instead_of_duplicating(processed, tmp_path, monkeypatch) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    copy = _small_copy(processed["bias"], tmp_path / "cals" / "N20170613S0180_bias.fits")
    db.add([copy])
    first = db.list().iloc[0]
    monkeypatch.chdir(copy.parent)
    db.add(["N20170613S0180_bias.fits"])  # relative path: the same file
    assert len(db.list()) == 1
    copy.unlink()
    _small_copy(processed["bias"], copy, **{"DATE-OBS": "2017-06-20"})
    db.add([copy])
    table = db.list()
    assert len(table) == 1
    assert table.iloc[0]["sha256"] != first["sha256"]
    assert table.iloc[0]["ut_datetime"].startswith("2017-06-20")


def test_add_refuses_what_is_no_calibration(processed, gmos_starfield_small, tmp_path) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    raw_bias = gmos_starfield_small / "N20170613S0180.fits"
    with pytest.raises(GemredInputError, match="N20170613S0180.fits: not a processed calibration"):
        db.add([processed["flat"], raw_bias])
    assert db.list().empty  # all or nothing
    with pytest.raises(GemredInputError, match="its headers make it a processed_bias, not a bpm"):
        db.add([processed["bias"]], kind="bpm")
    with pytest.raises(GemredInputError, match="unknown kind of calibration 'dark'"):
        db.add([processed["bias"]], kind="dark")


def test_find_by_rules_and_time(processed, tmp_path) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    cals = tmp_path / "cals"
    bias = processed["bias"]
    db.add(
        [
            bias,  # 2017-06-13, the day before the science
            _small_copy(bias, cals / "early_bias.fits", **{"DATE-OBS": "2017-06-01"}),
            _small_copy(bias, cals / "old_bias.fits", **{"DATE-OBS": "2017-01-10"}),
            processed["flat"],
            processed["bpm"],
            _small_copy(processed["bpm"], cals / "bpm_late.fits", **{"DATE-OBS": "2017-07-01"}),
        ]
    )
    # Same day but another binning: closest in time, refused by the rules.
    binned = _small_copy(bias, cals / "binned_bias.fits", **{"DATE-OBS": "2017-06-14"})
    with fits.open(binned, mode="update") as hdul:
        for hdu in hdul[1:]:
            hdu.header["CCDSUM"] = "1 1"
    db.add([binned])

    sci = _science(processed)
    assert db.find("processed_bias", sci) == bias.resolve()
    assert db.find("processed_flat", sci) == processed["flat"].resolve()
    # The July BPM is closer in time but not valid yet on 2017-06-14.
    assert db.find("processed_bpm", sci) == processed["bpm"].resolve()
    later = _science(processed, ut_datetime="2017-08-01T00:00:00")
    assert db.find("bpm", later) == (cals / "bpm_late.fits").resolve()
    # Time window: 90 days for biases.
    assert (
        db.find("processed_bias", _science(processed, ut_datetime="2017-01-12T00:00:00"))
        == (cals / "old_bias.fits").resolve()
    )
    next_year = _science(processed, ut_datetime="2018-06-14T08:45:00")
    with pytest.raises(GemredInputError, match="more than the 90-day window"):
        db.find("processed_bias", next_year)
    assert db.find("processed_bias", next_year, window_days=400) == bias.resolve()
    # Nothing of a kind: an error, or None when not required.
    assert db.find("processed_fringe", sci, required=False) is None
    with pytest.raises(GemredInputError, match="it holds no processed fringe"):
        db.find("processed_fringe", sci)


def test_no_match_names_needs_and_refusals(processed, tmp_path) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    db.add([processed["flat"]])
    with pytest.raises(GemredInputError) as err:
        db.find("processed_flat", _science(processed, filter_name="r"))
    message = str(err.value)
    assert "no processed flat in the calibration database" in message
    assert "N20170614S0201.fits" in message and "filter_name='r'" in message
    assert f"{processed['flat'].resolve()}: filter_name is 'i', needed 'r'" in message
    assert "gemred caldb add" in message and "\n" not in message


def test_gsaoi_flats_match_filter_within_30_days(tmp_path) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    stamp = {"PROCFLAT": "2017-05-06T00:00:00"}
    may = gsaoi_lamp_flat(tmp_path / "S20170505S0030_flat.fits", dt.datetime(2017, 5, 5), on=True, phu=stamp)
    march = gsaoi_lamp_flat(
        tmp_path / "S20170301S0030_flat.fits", dt.datetime(2017, 3, 1), on=True, phu=stamp
    )
    db.add([may, march])
    sci = descriptors(
        gsaoi_science(tmp_path / "raw" / "S20170505S0095.fits", dt.datetime(2017, 5, 5, 3), guided=True)
    )
    assert db.find("processed_flat", sci) == may.resolve()
    db.remove([may])
    with pytest.raises(GemredInputError, match="more than the 30-day window"):
        db.find("processed_flat", sci)


def test_changed_file_is_refused(processed, tmp_path) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    copy = _small_copy(processed["bias"], tmp_path / "N20170613S0180_bias.fits")
    db.add([copy])
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    copy.write_bytes(bytes(data))
    with pytest.raises(GemredInputError) as err:
        db.find("processed_bias", _science(processed))
    message = str(err.value)
    assert f"calibration {copy} changed since it was added" in message
    assert "gemred caldb" in message and "add" in message and "remove" in message
    db.add([copy])  # re-adding accepts the new contents
    assert db.find("processed_bias", _science(processed)) == copy


def test_missing_file_is_refused(processed, tmp_path) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    copy = _small_copy(processed["bias"], tmp_path / "N20170613S0180_bias.fits")
    db.add([copy])
    copy.unlink()
    with pytest.raises(GemredInputError, match=f"calibration {copy} is in the database but the file is gone"):
        db.find("processed_bias", _science(processed))
    assert db.remove([copy]) == [copy]
    with pytest.raises(GemredInputError, match="it holds no processed bias"):
        db.find("processed_bias", _science(processed))


def test_default_path_and_environment_override(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(CALDB_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".gemred" / "cal_manager.db"
    assert CalibrationDB().path == default_path()
    monkeypatch.setenv(CALDB_ENV, str(tmp_path / "env.db"))
    assert CalibrationDB().path == tmp_path / "env.db"
    assert CalibrationDB(tmp_path / "arg.db").path == tmp_path / "arg.db"
    CalibrationDB().init()
    assert (tmp_path / "env.db").is_file() and not (tmp_path / "home").exists()


def test_not_a_database_is_an_input_error(tmp_path) -> None:
    bogus = tmp_path / "cal.db"
    bogus.write_text("not sqlite, " * 200)
    with pytest.raises(GemredInputError, match=f"{bogus}: .*not a database"):
        CalibrationDB(bogus).list()


#: Forked workers start at once (no connection is open when they fork); spawn elsewhere.
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _add_one_by_one(db_path: str, paths: list[str]) -> int:
    db = CalibrationDB(db_path)
    for path in paths:
        db.add([path])
    return len(paths)


def test_concurrent_adds_lose_and_duplicate_nothing(processed, tmp_path) -> None:
    template = _small_copy(processed["bias"], tmp_path / "template_bias.fits")
    (tmp_path / "cals").mkdir()
    files = [
        str(shutil.copyfile(template, tmp_path / "cals" / f"N20170613S{i:04d}_bias.fits")) for i in range(100)
    ]
    db_path = tmp_path / "fresh" / "cal.db"  # not initialised: creation races too
    chunks = [files[i * 25 : (i + 1) * 25] for i in range(4)]
    # Each process also re-adds five files of the next one: upserts, not duplicates.
    jobs = [(str(db_path), chunk + chunks[(i + 1) % 4][:5]) for i, chunk in enumerate(chunks)]
    with multiprocessing.get_context(_START_METHOD).Pool(4) as pool:
        assert pool.starmap(_add_one_by_one, jobs) == [30] * 4
    table = CalibrationDB(db_path).list()
    assert len(table) == 100 and table["path"].is_unique
    assert sorted(table["path"]) == sorted(str(Path(f).resolve()) for f in files)
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT COUNT(*) FROM calibrations").fetchone()[0] == 100


def test_cli_round_trip(processed, tmp_path, capsys, monkeypatch) -> None:
    db = tmp_path / "cli.db"
    assert main(["caldb", "--db", str(db), "init"]) == 0
    assert "initialised calibration database" in capsys.readouterr().out
    listing = tmp_path / "cals.lis"
    listing.write_text(f"{processed['bias']}\n{processed['flat']}\n")
    assert main(["caldb", "add", "--db", str(db), f"@{listing}", str(processed["bpm"])]) == 0
    assert capsys.readouterr().out == f"added 3 file(s) to {db}\n"
    monkeypatch.setenv(CALDB_ENV, str(db))
    assert main(["caldb", "list"]) == 0
    out = capsys.readouterr().out
    assert "processed_bias" in out and "processed_flat" in out and "bpm" in out
    assert str(processed["flat"].resolve()) in out and out.endswith(f"3 calibration(s) in {db}\n")
    assert main(["caldb", "remove", str(processed["bias"])]) == 0
    assert main(["caldb", "remove", str(processed["bias"])]) == 1
    assert "not in the database" in capsys.readouterr().err
    assert len(CalibrationDB(db).list()) == 2
    assert main(["caldb", "add", str(processed["science"])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("gemred: error: ") and "not a processed calibration" in err[0]
    assert main(["caldb", "init", "--wipe"]) == 0
    assert main(["caldb", "list"]) == 0
    assert capsys.readouterr().out.endswith(f"no calibrations in {db}\n")


def test_cli_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["caldb", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "gemred caldb add" in out and "init" in out and "remove" in out


def test_refusals_list_the_nearest_candidates_first(processed, tmp_path) -> None:
    db = CalibrationDB(tmp_path / "cal.db")
    # In time order b0, b2, b1; by distance to the observation (2017-06-14) b2, b1, b0.
    dates = ("2016-01-01", "2017-12-01", "2017-03-01")
    copies = [
        _small_copy(processed["bias"], tmp_path / f"b{i}_bias.fits", **{"DATE-OBS": day})
        for i, day in enumerate(dates)
    ]
    db.add(copies)
    with pytest.raises(GemredInputError) as err:
        db.find("processed_bias", _science(processed))
    message = str(err.value)
    order = [message.index(f"b{i}_bias.fits: ") for i in (2, 1, 0)]
    assert order == sorted(order) and "more than the 90-day window" in message
