"""The GSAOI tutorial's API program (DRAGONS GSAOIImg-DRTutorial, example 1) on the simulator.

The program runs almost verbatim on the small simulated ``gsaoi-offsetsky`` preset, as a user
would run it (a subprocess in a playground folder beside ``playdata/example1``): the imports
change, ``caldb.add_cal(bpm)`` is ``caldb.add([bpm])``, and the science reduction also sets
``prepare:bad_wcs=fix``, which the tutorial's sequence needs (one frame's WCS is 40" off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from gemred.caldb import CALDB_ENV, CalibrationDB

PROGRAM = """\
import glob
import json

from gemred import Reduce, dataselect, logutils
from gemred.caldb import CalibrationDB

logutils.config(file_name='gsaoi_data_reduction.log')
caldb = CalibrationDB()
caldb.init()

all_files = glob.glob('../playdata/example1/*.fits')
all_files.sort()

list_of_flats_Ks = dataselect.select_data(
     all_files,
     ['FLAT'],
     [],
     dataselect.expr_parser('filter_name=="Kshort"')
)
list_of_std_stars = dataselect.select_data(
    all_files,
    [],
    [],
    dataselect.expr_parser('observation_class=="partnerCal"')
)
list_of_science_images = dataselect.select_data(
    all_files,
    [],
    [],
    dataselect.expr_parser('(observation_class=="science" and exposure_time==60.)')
)
for bpm in dataselect.select_data(all_files, ['BPM']):
    caldb.add([bpm])

reduce_flats = Reduce()
reduce_flats.files.extend(list_of_flats_Ks)
reduce_flats.runr()

reduce_std = Reduce()
reduce_std.files.extend(list_of_std_stars)
reduce_std.runr()

reduce_target = Reduce()
reduce_target.files.extend(list_of_science_images)
reduce_target.uparms.append(('skyCorrect:offset_sky', False))
reduce_target.uparms.append(('prepare:bad_wcs', 'fix'))
reduce_target.runr()
print(json.dumps(
    reduce_flats.output_filenames + reduce_std.output_filenames + reduce_target.output_filenames
))
"""


@pytest.fixture(scope="module")
def tutorial(gsaoi_offsetsky_small, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gsaoi-tutorial")
    (root / "playdata").mkdir()
    (root / "playdata" / "example1").symlink_to(gsaoi_offsetsky_small, target_is_directory=True)
    playground = root / "playground"
    playground.mkdir()
    (playground / "program.py").write_text(PROGRAM)
    db = root / "dragons" / "cal_manager.db"
    proc = subprocess.run(
        [sys.executable, "program.py"],
        cwd=playground,
        env={**os.environ, CALDB_ENV: str(db)},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if proc.returncode != 0:
        pytest.fail(f"program.py exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return {"playground": playground, "db": db, "outputs": json.loads(proc.stdout.splitlines()[-1])}


def test_products_have_the_tutorial_names(tutorial) -> None:
    assert tutorial["outputs"] == [
        "S20170505S0030_flat.fits",
        "S20170504S0114_image.fits",
        "S20170505S0095_image.fits",
    ]
    for name in tutorial["outputs"]:
        assert (tutorial["playground"] / name).is_file()
    assert "reducing" in (tutorial["playground"] / "gsaoi_data_reduction.log").read_text()


def test_flat_went_to_the_database_and_served_the_stacks(tutorial) -> None:
    stored = CalibrationDB(tutorial["db"]).list().set_index("kind")["path"]
    assert sorted(stored.index) == ["bpm", "processed_flat"]
    assert Path(stored["processed_flat"]).name == "S20170505S0030_flat.fits"
    runs = sorted((tutorial["playground"] / ".gemred" / ".snakemake" / "log").iterdir())
    assert len(runs) == 3  # flats, standard, science
    # The standard's and the science's frames were flat-fielded with the stored flat.
    for log in runs[1:]:
        assert stored["processed_flat"] in log.read_text()


@pytest.mark.parametrize("name", ["S20170504S0114_image.fits", "S20170505S0095_image.fits"])
def test_stacks_are_north_up_in_electrons(tutorial, name) -> None:
    with fits.open(tutorial["playground"] / name) as stack:
        assert {"SCI", "VAR", "DQ", "OBJCAT"} <= {hdu.name for hdu in stack}
        for hdu in stack:
            if hdu.name != "SCI":
                continue
            assert hdu.header["BUNIT"] == "electron"
            cd = WCS(hdu.header).pixel_scale_matrix
            # East left (RA falls with x), North up (Dec rises with y), no rotation.
            assert cd[0, 0] < 0 and cd[1, 1] > 0
            assert np.degrees(np.arctan2(cd[0, 1], -cd[0, 0])) == pytest.approx(0.0, abs=0.05)
