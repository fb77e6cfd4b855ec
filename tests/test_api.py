"""The DRAGONS-shaped Python API (``from gemred import dataselect, Reduce``) and ``gemred reduce``.

The GMOS tutorial's API program (DRAGONS GMOSImg-DRTutorial, example 1) runs almost verbatim
on the small simulated ``gmos-starfield`` preset: biases and flats are made in one folder, the
science is reduced in another with its calibrations from the calibration database. Programs
run as subprocesses, as a user would run them, each with its own calibration database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from gemred.caldb import CALDB_ENV, CalibrationDB
from gemred.io import GemredInputError
from gemred.reduce import Reduce, default_config, parse_ucals, parse_uparms

BIN = Path(sys.executable).parent

CALIBRATIONS_PROGRAM = """\
import glob
import json

from gemred import Reduce, dataselect, logutils
from gemred.caldb import CalibrationDB

logutils.config(file_name='gmos_data_reduction.log')
caldb = CalibrationDB()
caldb.init()

all_files = glob.glob('../playdata/example1/*.fits')
all_files.sort()

list_of_biases = dataselect.select_data(
    all_files,
    ['BIAS'],
    []
)
list_of_flats = dataselect.select_data(
    all_files,
    ['FLAT'],
    [],
    dataselect.expr_parser('filter_name=="i"')
)
for bpm in dataselect.select_data(all_files, ['BPM']):
    caldb.add([bpm])

reduce_bias = Reduce()
reduce_bias.files.extend(list_of_biases)
reduce_bias.runr()

reduce_flats = Reduce()
reduce_flats.files.extend(list_of_flats)
reduce_flats.runr()
print(json.dumps(reduce_bias.output_filenames + reduce_flats.output_filenames))
"""

SCIENCE_PROGRAM = """\
import glob
import json

from gemred import Reduce, dataselect, logutils

logutils.config(file_name='gmos_data_reduction.log')
all_files = glob.glob('../playdata/example1/*.fits')
all_files.sort()

list_of_science = dataselect.select_data(
    all_files,
    [],
    ['CAL'],
    dataselect.expr_parser('(observation_class=="science" and filter_name=="i")')
)

reduce_science = Reduce()
reduce_science.files.extend(list_of_science)
reduce_science.uparms.append(('stackFrames:reject_method', 'sigclip'))
reduce_science.runr()
print(json.dumps(reduce_science.output_filenames))
"""


def _python(program: str, cwd: Path, db: Path) -> subprocess.CompletedProcess:
    script = cwd / "program.py"
    script.write_text(program)
    env = {**os.environ, CALDB_ENV: str(db)}
    proc = subprocess.run(
        [sys.executable, script.name], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _gemred(args: list[str], cwd: Path, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, CALDB_ENV: str(db)}
    return subprocess.run(
        [str(BIN / "gemred"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def tutorial(gmos_starfield_small, tmp_path_factory) -> dict:
    """The tutorial's folders: ``playdata/example1`` (the raw files), and two playgrounds."""
    root = tmp_path_factory.mktemp("tutorial")
    (root / "playdata").mkdir()
    (root / "playdata" / "example1").symlink_to(gmos_starfield_small, target_is_directory=True)
    cals, science = root / "playground_cals", root / "playground_science"
    cals.mkdir()
    science.mkdir()
    db = root / "dragons" / "cal_manager.db"
    made = _python(CALIBRATIONS_PROGRAM, cals, db)
    reduced = _python(SCIENCE_PROGRAM, science, db)
    return {
        "raw": gmos_starfield_small,
        "cals": cals,
        "science": science,
        "db": db,
        "cal_outputs": json.loads(made.stdout.splitlines()[-1]),
        "science_outputs": json.loads(reduced.stdout.splitlines()[-1]),
    }


def test_calibrations_get_dragons_names_and_go_to_the_database(tutorial) -> None:
    cals = tutorial["cals"]
    assert tutorial["cal_outputs"] == ["N20170613S0180_bias.fits", "N20170702S0178_flat.fits"]
    with fits.open(cals / "N20170613S0180_bias.fits") as bias:
        assert "PROCBIAS" in bias[0].header and bias["SCI"].header["BUNIT"] == "adu"  # as DRAGONS
    truth = fits.open(tutorial["raw"] / "truth" / "flat_response_i.fits")
    with fits.open(cals / "N20170702S0178_flat.fits") as flat, truth:
        assert "PROCFLAT" in flat[0].header
        ratios = []
        for i, hdu in enumerate(truth[1:], start=1):
            good = (flat["DQ", i].data == 0) & (hdu.data > 0)
            ratios.append(flat["SCI", i].data[good] / hdu.data[good])
    ratio = np.concatenate(ratios)
    # Normalised on CCD2 as the truth is: equal to it within 1% in level and in rms.
    assert abs(np.median(ratio) - 1.0) < 0.01
    assert np.std(ratio) < 0.01
    stored = CalibrationDB(tutorial["db"]).list().set_index("kind")["path"]
    assert sorted(stored.index) == ["bpm", "processed_bias", "processed_flat"]
    assert Path(stored["processed_bias"]).name == "N20170613S0180_bias.fits"
    assert Path(stored["processed_bias"]).is_relative_to(cals)
    assert Path(stored["processed_flat"]).is_relative_to(cals)
    # The product in the current folder is the workflow's product, byte for byte.
    assert (cals / "N20170613S0180_bias.fits").read_bytes() == Path(stored["processed_bias"]).read_bytes()
    assert "reducing" in (cals / "gmos_data_reduction.log").read_text()


def test_science_elsewhere_uses_the_database_without_rebuilding(tutorial) -> None:
    science, cals = tutorial["science"], tutorial["cals"]
    assert tutorial["science_outputs"] == ["N20170614S0201_image.fits"]
    with fits.open(science / "N20170614S0201_image.fits") as stack:
        assert stack["SCI"].header["BUNIT"] == "electron"
        assert {"SCI", "VAR", "DQ", "OBJCAT"} <= {hdu.name for hdu in stack}
        assert len(stack["OBJCAT"].data) > 20
    products = science / ".gemred" / "products"
    assert sorted(p.name for p in (products / "logs").iterdir()) == ["mosaic_frame", "stack_science"]
    assert not (products / "calibrations").exists()
    # The frames were calibrated with the bias and flat made in the other folder.
    logs = "".join(p.read_text() for p in (science / ".gemred" / ".snakemake" / "log").iterdir())
    for name in ("N20170613S0180_bias.fits", "N20170702S0178_flat.fits"):
        assert str(cals / ".gemred" / "products" / "calibrations" / name) in logs


def test_rerun_reuses_the_cached_products(tutorial) -> None:
    science = tutorial["science"]
    cached = science / ".gemred" / "products" / "science" / "N20170614S0201_image.fits"
    before = cached.stat().st_mtime_ns
    again = _python(SCIENCE_PROGRAM, science, tutorial["db"])
    assert "Nothing to be done" in again.stderr
    assert cached.stat().st_mtime_ns == before
    assert json.loads(again.stdout.splitlines()[-1]) == ["N20170614S0201_image.fits"]


def test_the_workflow_leaves_the_callers_timers_alone(tutorial) -> None:
    """The Snakefile cancels Snakemake's scheduler wake-up when a run ends, so that the command
    returns at once; a timer of the program that runs Reduce (in its own Python) is not touched.
    A copy of the science playground without the stack makes the stack job run."""
    playground = tutorial["science"].parent / "playground_timers"
    shutil.copytree(tutorial["science"], playground, symlinks=True)
    (playground / ".gemred" / "products" / "science" / "N20170614S0201_image.fits").unlink()
    program = SCIENCE_PROGRAM.replace(
        "reduce_science = Reduce()",
        "import threading\nmine = threading.Timer(600, print)\nmine.start()\nreduce_science = Reduce()",
    )
    program += "print(json.dumps(not mine.finished.is_set()))\nmine.cancel()\n"
    run = _python(program, playground, tutorial["db"])
    assert "stack_science" in run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) is True


def test_cli_reduce_with_user_cal_and_parameters(tutorial, tmp_path) -> None:
    """``gemred reduce @list --user_cal ... -p ...`` with an empty database: the named bias is used."""
    raw = tutorial["raw"]
    listing = tmp_path / "flats.lis"
    listing.write_text("".join(f"{raw / f'N20170702S01{i}.fits'}\n" for i in range(78, 83)))
    bias = tutorial["cals"] / "N20170613S0180_bias.fits"
    db = tmp_path / "empty.db"
    proc = _gemred(
        [
            "reduce",
            f"@{listing}",
            "--user_cal",
            f"processed_bias:{bias}",
            "-p",
            "stackFlats:reject_method=none",
            "thresholdFlatfield:high=1.0",
        ],
        tmp_path,
        db,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["N20170702S0178_flat.fits"]
    assert str(bias) in proc.stderr  # the job's input, in Snakemake's report
    stored = CalibrationDB(db).list()
    assert list(stored["kind"]) == ["processed_flat"]
    # thresholdFlatfield:high=1.0 reached the job: every response above 1 is flagged and set to 1.
    with fits.open(tmp_path / "N20170702S0178_flat.fits") as flat:
        sci = [hdu.data for hdu in flat if hdu.name == "SCI"]
        flagged = sum(np.count_nonzero(hdu.data) for hdu in flat if hdu.name == "DQ")
    assert max(np.nanmax(data) for data in sci) <= 1.0
    assert flagged > 0.2 * sum(data.size for data in sci)


def test_cli_reduce_refuses_before_any_job(tutorial, tmp_path) -> None:
    raw = tutorial["raw"]
    frames = [str(raw / f"N20170614S020{i}.fits") for i in range(1, 6)]
    proc = _gemred(["reduce", *frames], tmp_path, tmp_path / "empty.db")
    assert proc.returncode == 2
    message = proc.stderr
    assert "no bias for group N20170614S0201" in message
    assert "no processed bias in the calibration database" in message
    assert "N20170614S0201.fits" in message and "binning='2x2'" in message
    assert not (tmp_path / ".gemred" / "products").exists()


def test_cli_reduce_bad_value_and_failed_job(tutorial, tmp_path) -> None:
    """A value the config schema refuses stops the run before any job; a failed job says so."""
    flats = [str(tutorial["raw"] / f"N20170702S01{i}.fits") for i in range(78, 83)]
    bad = _gemred(["reduce", *flats, "-p", "stackFlats:reject_method=bogus"], tmp_path, tmp_path / "a.db")
    assert bad.returncode == 2
    assert "'bogus' is not one of" in bad.stderr and "reject_method" in bad.stderr
    assert not (tmp_path / ".gemred" / "products").exists()
    not_fits = tmp_path / "not_a_bias.fits"
    not_fits.write_text("not FITS")
    user_cal = ["--user_cal", f"processed_bias:{not_fits}"]
    failed = _gemred(["reduce", *flats, *user_cal], tmp_path, tmp_path / "a.db")
    assert failed.returncode == 1
    assert "gemred: error: a job of the workflow failed" in failed.stderr
    log = tmp_path / ".gemred" / "products" / "logs" / "master_flat" / "N20170702S0178.log"
    assert "not_a_bias.fits" in log.read_text()
    assert not (tmp_path / "N20170702S0178_flat.fits").exists()


def test_cli_reduce_help_has_examples(capsys) -> None:
    from gemred.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["reduce", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "gemred reduce @biases.lis" in out and "--user_cal" in out


# --- parameters and calibrations given to Reduce -------------------------------------------


def test_uparms_map_onto_config_blocks() -> None:
    defaults = default_config()
    changed = parse_uparms(
        [("stackFrames:reject_method", "minmax"), "stackFrames:nlow=1", "detectSources:detect_thresh=3"],
        defaults,
    )
    assert changed == {
        "stackFrames": {"reject_method": "minmax", "nlow": 1},
        "detectSources": {"detect_thresh": 3},
    }
    # Without a primitive: every primitive with that parameter (as DRAGONS).
    everywhere = parse_uparms(["hsigma=4.5"], defaults)
    assert set(everywhere) == {k for k, v in defaults.items() if isinstance(v, dict) and "hsigma" in v}
    flag = parse_uparms(["fringeCorrect:do_fringe=False"], defaults)
    assert flag == {"fringeCorrect": {"do_fringe": False}}


@pytest.mark.parametrize(
    ("uparm", "message"),
    [
        (("fringeCorect:do_fringe", False), "unknown primitive 'fringeCorect'"),
        ("stackFrames:nsigma=3", "'stackFrames' has no parameter 'nsigma'; its parameters: operation"),
        ("nsigma=3", "any primitive has no parameter 'nsigma'"),
        ("stackFrames:nlow", "write 'primitive:parameter=value'"),
        (3, "give ('primitive:parameter', value)"),
    ],
)
def test_bad_uparms_are_refused(uparm, message) -> None:
    with pytest.raises(GemredInputError) as err:
        parse_uparms([uparm], default_config())
    assert message in str(err.value)


def test_ucals_as_dict_or_strings(tmp_path) -> None:
    bias = tmp_path / "b_bias.fits"
    bias.write_bytes(b"")
    assert parse_ucals({"processed_bias": bias}) == {"processed_bias": str(bias)}
    assert parse_ucals([f"processed_bpm:{bias}"]) == {"bpm": str(bias)}
    with pytest.raises(GemredInputError, match="unknown calibration type 'processed_dark'"):
        parse_ucals({"processed_dark": bias})
    with pytest.raises(GemredInputError, match=f"processed_flat {tmp_path / 'nope.fits'} does not exist"):
        parse_ucals([f"processed_flat:{tmp_path / 'nope.fits'}"])


def test_reduce_refuses_bad_settings_before_classifying(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = Reduce()
    with pytest.raises(GemredInputError, match="no files to reduce"):
        r.runr()
    r.files.append("missing.fits")
    r.uparms.append("stackFrames:bogus=1")
    with pytest.raises(GemredInputError, match="no parameter 'bogus'"):
        r.runr()
    r.uparms.clear()
    r.recipename = "makeProcessedFringe"
    with pytest.raises(GemredInputError, match="missing.fits"):
        r.runr()
    assert not (tmp_path / ".gemred").exists()


def test_recipe_must_exist_for_the_files(gmos_starfield_small, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = Reduce()
    r.files.append(str(gmos_starfield_small / "N20170613S0180.fits"))
    r.recipename = "makeProcessedFringe"
    expected = "no recipe 'makeProcessedFringe' for bias files .*recipes for them: makeProcessedBias"
    with pytest.raises(GemredInputError, match=expected):
        r.runr()
    assert not (tmp_path / ".gemred" / "products").exists()


def test_import_gemred_stays_cheap() -> None:
    """Every workflow job imports gemred: Reduce and dataselect load only when first used."""
    probe = (
        "import sys, gemred\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(top & {'numpy', 'pandas', 'snakemake', 'astropy'})\n"
        "loaded = 'gemred.reduce' in sys.modules or 'gemred.dataselect' in sys.modules\n"
        "from gemred import Reduce, dataselect\n"
        "print(heavy, loaded, Reduce.__module__, dataselect.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "False", "gemred.reduce", "gemred.dataselect"]
