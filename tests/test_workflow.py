"""Tests of the Snakemake workflow: planning, running, linting, and refusing bad inputs early.

Snakemake runs as a subprocess of this virtualenv, as a user would run it, both from the
repository root and with ``--snakefile`` from another directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gemred.table import read_table

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
BIN = Path(sys.executable).parent
UNGROUPED_ROLES = ("ignore", "bpm")


def run(args: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command of this virtualenv's ``bin``; on unexpected failure show its output."""
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["snakemake", "--cores", "2", *args], cwd, check=check)


def planned_jobs(output: str) -> dict[str, int]:
    """The ``Job stats`` table of a dry run, as {rule: count}."""
    stats = output.split("Job stats:", 1)[1]
    rows = re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.MULTILINE)
    return {m[1]: int(m[2]) for m in rows if m[1] != "total"}


@pytest.fixture(scope="module")
def dataset(gmos_starfield_small, tmp_path_factory) -> tuple[Path, Path]:
    """The small simulated ``gmos-starfield`` preset and its table from ``gemred table``.

    The table lives in its own folder, so its file names are relative paths into another one.
    """
    raw = gmos_starfield_small
    root = tmp_path_factory.mktemp("dataset")
    table = root / "datasets.tsv"
    run(["gemred", "table", str(raw), "-o", str(table)], root)
    return table, raw


def expected_groups(table: Path) -> list[str]:
    rows = read_table(table)
    return sorted(rows.loc[~rows["role"].isin(UNGROUPED_ROLES), "group"].unique())


def test_dataset_has_groups_to_plan(dataset):
    table, _ = dataset
    rows = read_table(table)
    assert len(expected_groups(table)) >= 3
    assert {"bias", "science", "bpm"} <= set(rows["role"])


def test_dry_run_from_repo_root_plans_the_gmos_reduction(dataset, tmp_path):
    table, _ = dataset
    out = tmp_path / "out"
    proc = snakemake(REPO, "-n", "--config", f"datasets={table}", f"output_dir={out}")
    assert planned_jobs(proc.stdout) == {
        "all": 1,
        "master_bias": 1,
        "master_flat": 1,
        "mosaic_frame": 5,
        "stack_science": 1,
    }
    for product in (
        "calibrations/N20170613S0180_bias.fits",
        "calibrations/N20170702S0178_flat.fits",
        "frames/N20170614S0203_mosaic.fits",
        "science/N20170614S0201_image.fits",
        "science/N20170614S0201_image.png",
        "logs/master_bias/N20170613S0180.log",
    ):
        assert f"{out}/{product}" in proc.stdout
    # i band on Hamamatsu: no fringe frame, so no flat-corrected intermediates either.
    assert "fringe" not in planned_jobs(proc.stdout) and "_flatCorrected" not in proc.stdout
    assert not out.exists(), "a dry run must not write products"


def test_fringe_preset_plans_a_fringe_frame(gmos_fringe_small, tmp_path):
    table = tmp_path / "datasets.tsv"
    run(["gemred", "table", str(gmos_fringe_small), "-o", str(table)], tmp_path)
    proc = snakemake(REPO, "-n", "--config", f"datasets={table}", f"output_dir={tmp_path / 'out'}")
    jobs = planned_jobs(proc.stdout)
    assert jobs["fringe_frame"] == 1 and jobs["calibrate_frame"] == 6 and jobs["mosaic_frame"] == 6
    assert "calibrations/S20190511S0101_fringe.fits" in proc.stdout


def test_gsaoi_groups_mix_lamp_on_and_off(gsaoi_raw_dir, tmp_path):
    raw, _ = gsaoi_raw_dir
    table = tmp_path / "datasets.tsv"
    run(["gemred", "table", str(raw), "-o", str(table)], tmp_path)
    rows = read_table(table)
    flats = rows.loc[rows["role"] == "lamp_on_flat", "group"].iat[0]
    assert set(rows.loc[rows["group"] == flats, "role"]) == {"lamp_on_flat", "lamp_off_flat"}
    # These hand-made standards are all within 1" of one another: no frame has a sky, and the
    # plan stops before any job, naming the group. (Snakemake reports the GSAOI rule's
    # "no sky frame" or the GMOS stack rule's "no frame of group", whichever it tried last.)
    out = f"output_dir={tmp_path / 'out'}"
    proc = snakemake(REPO, "-n", "--config", f"datasets={table}", out, check=False)
    assert proc.returncode != 0 and "S20170504S0114" in proc.stdout + proc.stderr
    # Without them the plan is the GSAOI reduction of the science group alone.
    rows.loc[rows["role"] == "standard", "role"] = "ignore"
    rows.to_csv(table, sep="\t", index=False)
    jobs = planned_jobs(snakemake(REPO, "-n", "--config", f"datasets={table}", out).stdout)
    science = int((rows["role"] == "science").sum())
    assert jobs["gsaoi_flat"] == 1 and jobs["gsaoi_calibrate"] == science and jobs["gsaoi_stack"] == 1
    # One job per object frame makes its sky and subtracts it.
    assert 0 < jobs["gsaoi_sky"] < science and "gsaoi_sky_subtract" not in jobs
    # Each sky frame's source masks are found once, however many skies it is in.
    assert 0 < jobs["gsaoi_sky_mask"] == science - jobs["gsaoi_sky"]
    assert "master_bias" not in jobs and "stack_science" not in jobs


def test_snakefile_imports_leave_astropy_out():
    """The gemred modules the Snakefile imports do not load astropy (0.3 s of every
    ``snakemake`` start, and of every SLURM job's): jobs load it when they read FITS files."""
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    imports = [line for line in common.splitlines() if line.startswith("from gemred")]
    assert imports
    report = "print(sorted(m for m in sys.modules if m.startswith('astropy')))"
    code = "\n".join([*imports, "import sys", report])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_lint_is_clean(dataset):
    table, _ = dataset
    proc = snakemake(REPO, "--lint", "--config", f"datasets={table}")
    assert "Lints for" not in proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("snakefmt", path=str(BIN)) is None, reason="snakefmt not installed")
def test_snakefmt_is_clean():
    run(["snakefmt", "--check", "Snakefile", "workflow"], REPO)


def test_missing_raw_file_fails_before_any_job(dataset, tmp_path):
    table, raw = dataset
    rows = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False)
    science = rows.index[rows["role"] == "science"][0]
    missing = "N20991231S0001.fits"
    rows.loc[science, "filename"] = str(Path(rows.loc[science, "filename"]).with_name(missing))
    broken = table.parent / "broken.tsv"
    rows.to_csv(broken, sep="\t", index=False)
    out = tmp_path / "out"

    proc = snakemake(REPO, "--config", f"datasets={broken}", f"output_dir={out}", check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert missing in message
    assert "Job stats" not in message and "rule master_bias" not in message
    assert not out.exists()


def test_missing_table_is_named(tmp_path):
    proc = snakemake(
        tmp_path, "--snakefile", str(SNAKEFILE), "-n", "--config", "datasets=nowhere.tsv", check=False
    )
    assert proc.returncode != 0
    assert "nowhere.tsv" in proc.stdout + proc.stderr


@pytest.mark.parametrize("setting", ["output_dir=5", "datasets=", "colour=blue"])
def test_config_schema_rejects_bad_values(dataset, tmp_path, setting):
    table, _ = dataset
    proc = snakemake(
        REPO, "-n", "--config", f"datasets={table}", f"output_dir={tmp_path}", setting, check=False
    )
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config" in message.lower() and setting.split("=")[0] in message
    assert "Job stats" not in message
