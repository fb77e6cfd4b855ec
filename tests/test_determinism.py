"""Same inputs, same products: a run on one core and a run on two are bit-identical.

The one-core run is also confined to one CPU (``sched_setaffinity``), so the library's own
threads (stacking, resampling) run with one worker there and with two in the other run. Both
runs' products are then traced back to the raw files through their provenance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.table import Table
from workflow_runs import assert_same_products, make_table, products, snakemake

from gemred.provenance import file_md5, software_version, source_commit

STACK = "science/N20170614S0201_image.fits"


def _one_cpu() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


@pytest.fixture(scope="module")
def runs(gmos_starfield_small, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(raw folder, output of ``--cores 1`` on one CPU, output of ``--cores 2``)."""
    work = tmp_path_factory.mktemp("determinism")
    table = make_table(gmos_starfield_small, work / "datasets.tsv")
    snakemake(work / "one", table, "--cores", "1", preexec_fn=_one_cpu)
    snakemake(work / "two", table, "--cores", "2")
    return gmos_starfield_small, work / "one" / "out", work / "two" / "out"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to differ from one")
def test_one_core_and_two_cores_give_bit_identical_products(runs):
    _, one, two = runs
    assert set(products(one)) >= {STACK, "calibrations/N20170613S0180_bias.fits"}
    assert assert_same_products(one, two) >= 3 * len(products(one))


def test_products_record_software_and_parameters(runs):
    _, one, _ = runs
    for name, path in products(one).items():
        phu = fits.getheader(path)
        assert phu["GEMRED"] == software_version(), name
        assert phu["GEMRCOMM"] == source_commit(), name
        params = json.loads(phu["GEMRPARS"])
        assert params["gemred_version"] == software_version(), name
    stack = fits.getheader(one / STACK)
    assert stack["GEMRRULE"] == "stack_science"
    assert json.loads(stack["GEMRPARS"])["stack"]["reject_method"] == "sigclip"  # config/config.yaml


def test_stack_traces_back_to_every_raw_file(runs):
    raw, one, _ = runs
    with fits.open(one / STACK) as hdul:
        provenance = Table.read(hdul["PROVENANCE"])
        history = Table.read(hdul["PROVHISTORY"])
    raw_files = {path.name: path for path in raw.glob("*.fits")}
    listed = {row["filename"]: row["md5"] for row in provenance if row["filename"] in raw_files}
    assert listed.keys() == raw_files.keys()  # 10 biases, 5 flats, 5 science frames, the BPM
    for name, md5 in listed.items():
        assert md5 == file_md5(raw_files[name]), name
    mosaics = provenance[provenance["rule"] == "stack_science"]
    assert sorted(mosaics["filename"]) == [f"N20170614S020{i}_mosaic.fits" for i in range(1, 6)]
    for row in mosaics:
        assert row["md5"] == file_md5(one / "frames" / row["filename"])
    rules = list(history["rule"])
    assert sorted(rules) == sorted(["master_bias", "master_flat", *["mosaic_frame"] * 5, "stack_science"])
    stack_row = history[history["rule"] == "stack_science"][0]
    assert "stackFrames" in stack_row["primitives"].split(",")
    bias_row = history[history["rule"] == "master_bias"][0]
    assert bias_row["output"] == "N20170613S0180_bias.fits" and bias_row["primitives"]
