"""What Snakemake reruns after a complete run, judged by its own planning (``-n``, ``--summary``).

One complete run of the small ``gmos-starfield`` preset is shared by the tests of this module;
the tests that change something (a parameter, the table) only plan, so the run stays complete.
The last test kills a second run mid-way (SIGKILL of Snakemake's whole process group) and
restarts it the way Snakemake asks (``--unlock``, then ``--rerun-incomplete``, which
``profiles/local`` sets).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from astropy.io import fits
from workflow_runs import BIN, SNAKEFILE, assert_same_products, make_table, planned_jobs, products, snakemake

from gemred.io import read_frame, read_headers

FULL_PLAN = {
    "all": 1,
    "master_bias": 1,
    "master_flat": 1,
    "mosaic_frame": 5,
    "stack_science": 1,
}
DOWNSTREAM_OF_STACK = {"all": 1, "stack_science": 1}


@pytest.fixture(scope="module")
def complete(gmos_starfield_small, tmp_path_factory) -> tuple[Path, Path]:
    """(working directory, table) of one complete run with two cores; products in ``out/``."""
    work = tmp_path_factory.mktemp("reruns")
    raw = work / "raw"  # its own copy: a test adds a frame to it
    shutil.copytree(gmos_starfield_small, raw, ignore=shutil.ignore_patterns("truth"))
    table = make_table(raw, work / "datasets.tsv")
    assert planned_jobs(snakemake(work, table, "-n", "--cores", "2").stdout) == FULL_PLAN
    snakemake(work, table, "--cores", "2")
    return work, table


def test_second_run_does_nothing(complete):
    work, table = complete
    proc = snakemake(work, table, "-n", "--cores", "2")
    assert planned_jobs(proc.stdout) == {}
    assert "Nothing to be done" in proc.stdout + proc.stderr

    summary = snakemake(work, table, "--summary", "--cores", "1").stdout.splitlines()
    header = summary[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in summary[1:] if line.strip()]
    assert len(rows) >= 9  # bias, flat, 5 mosaics, stack and its preview
    assert {row["status"] for row in rows} == {"ok"}, rows


def test_stack_parameter_reruns_only_the_stack(complete):
    work, table = complete
    proc = snakemake(work, table, "-n", "--cores", "2", config=("stackFrames={reject_method: minmax}",))
    assert planned_jobs(proc.stdout) == DOWNSTREAM_OF_STACK
    assert "Params have changed since last execution" in proc.stdout


def test_flat_parameter_reruns_the_flat_and_downstream_not_the_bias(complete):
    work, table = complete
    # A file: --config would pass the nested number as a string.
    override = work / "flat-threshold.yaml"
    override.write_text("thresholdFlatfield:\n  low: 0.4\n  high: 2.0\n")
    proc = snakemake(work, table, "-n", "--cores", "2", "--configfile", str(override))
    assert planned_jobs(proc.stdout) == {rule: n for rule, n in FULL_PLAN.items() if rule != "master_bias"}


def test_new_science_frame_rebuilds_its_chain_and_the_stack(complete, tmp_path):
    work, _ = complete
    last = work / "raw" / "N20170614S0205.fits"
    added = work / "raw" / "N20170614S0206.fits"
    with fits.open(last) as hdul:
        phu = hdul[0].header
        phu["DATALAB"] = phu["DATALAB"][:-3] + "006"
        phu["UT"] = phu["UTSTART"] = phu["TIME-OBS"] = "06:24:00.000"
        hdul.writeto(added)
    try:
        table = make_table(work / "raw", tmp_path / "datasets.tsv")
        proc = snakemake(work, table, "-n", "--cores", "2")
    finally:
        added.unlink()
    assert planned_jobs(proc.stdout) == {"all": 1, "mosaic_frame": 1, "stack_science": 1}
    assert "frames/N20170614S0206_mosaic.fits" in proc.stdout


def test_killed_run_restarts_to_identical_products(complete, gmos_starfield_small, tmp_path):
    reference, _ = complete
    table = make_table(gmos_starfield_small, tmp_path / "datasets.tsv")
    command = [str(BIN / "snakemake"), "--snakefile", str(SNAKEFILE), "--cores", "2"]
    command += ["--config", f"datasets={table}", "output_dir=out"]
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 900
        while not list((tmp_path / "out" / "frames").glob("*_mosaic.fits")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no mosaic after 15 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    done = products(tmp_path / "out")
    assert "science/N20170614S0201_image.fits" not in done, "killed too late to test a restart"
    for path in done.values():
        read_headers(path)  # raises on a truncated file
        read_frame(path)
    bias = tmp_path / "out" / "calibrations" / "N20170613S0180_bias.fits"
    bias_mtime = bias.stat().st_mtime_ns

    # Snakemake's restart after a crash: remove the stale lock, and redo the jobs that were
    # running (their outputs, even if complete, are marked incomplete in .snakemake/).
    snakemake(tmp_path, table, "--unlock")
    restart = snakemake(tmp_path, table, "--cores", "2", "--rerun-incomplete")
    assert "rule master_bias:" not in restart.stdout + restart.stderr
    assert bias.stat().st_mtime_ns == bias_mtime
    assert assert_same_products(reference / "out", tmp_path / "out") > 20
