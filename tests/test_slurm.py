"""The workflow on a real SLURM cluster gives the same products as a local run.

Needs a running cluster (``ci/slurm/start.sh``; ``.ci/run`` starts one), hence the ``slurm``
marker: the default test run leaves it out and ``.ci/run`` runs it with ``pytest -m slurm``.
Run by hand with ``ci/slurm/start.sh DIR && .venv/bin/pytest -m slurm; ci/slurm/stop.sh DIR``.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from workflow_runs import REPO, assert_same_products, make_table, products, snakemake

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster() -> None:
    """Fail (not skip) when the test was asked for and no cluster answers."""
    if shutil.which("sinfo") is None:
        pytest.fail("no SLURM client (sinfo); start a cluster with ci/slurm/start.sh DIR")
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not re.search(r"idle|mix|alloc", proc.stdout):
        pytest.fail(f"no idle SLURM node: {proc.stdout}{proc.stderr}; see ci/slurm/start.sh")


def test_slurm_run_matches_local_run(cluster, gmos_starfield_small, tmp_path):
    table = make_table(gmos_starfield_small, tmp_path / "datasets.tsv")
    snakemake(tmp_path / "local", table, "--profile", str(REPO / "profiles" / "local"), "--cores", "2")
    proc = snakemake(
        tmp_path / "slurm",
        table,
        "--executor",
        "slurm",
        "--profile",
        str(REPO / "profiles" / "slurm"),
        # The CI node is idle: poll SLURM every few seconds, not every 20 s as on a busy cluster.
        "--slurm-init-seconds-before-status-checks",
        "2",
        timeout=3000,
    )
    log = proc.stdout + proc.stderr
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    # bias, flat, one group job for the five mosaics, stack (with its preview): 4 SLURM jobs for 8 rules.
    assert len(submitted) == 4, log
    assert "Group job mosaics" in log
    assert len(products(tmp_path / "slurm" / "out")) == 8
    assert assert_same_products(tmp_path / "local" / "out", tmp_path / "slurm" / "out") >= 20
