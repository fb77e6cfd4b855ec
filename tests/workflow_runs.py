"""Helpers for tests that run the whole workflow: run Snakemake, list and compare products.

Each run uses its own working directory, so that Snakemake's metadata (``.snakemake/``, which
drives rerun decisions) belongs to that run only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
BIN = Path(sys.executable).parent

#: Tables that record when a product was made, so differ between identical runs.
TIMESTAMPED_TABLES = ("PROVENANCE", "PROVHISTORY")


def run_command(args: list[str], cwd: Path, *, timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run one of the environment's commands (``gemred``, ``snakemake``) in ``cwd``.

    The test fails, with the command's output, if it exits non-zero.
    """
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def make_table(raw: Path, table: Path) -> Path:
    """The dataset table of a raw folder, written by ``gemred table``."""
    subprocess.run(
        [str(BIN / "gemred"), "table", str(raw), "-o", str(table)], check=True, capture_output=True
    )
    return table


def snakemake(
    workdir: Path,
    table: Path,
    *args: str,
    output_dir: str = "out",
    config: tuple[str, ...] = (),
    check: bool = True,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 1200,
) -> subprocess.CompletedProcess:
    """Run the workflow's Snakefile in ``workdir`` on ``table``; fail the test if it fails.

    ``config`` holds more ``--config`` settings (``"stackFrames={nlow: 1}"``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(SNAKEFILE),
        *args,
        "--config",
        f"datasets={table}",
        f"output_dir={output_dir}",
        *config,
    ]
    proc = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """The ``Job stats`` table of a dry run, as {rule: count}; {} when there is nothing to do."""
    if "Job stats:" not in output:
        return {}
    stats = output.split("Job stats:", 1)[1]
    rows = re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.MULTILINE)
    return {m[1]: int(m[2]) for m in rows if m[1] != "total"}


def products(out: Path) -> dict[str, Path]:
    """Every FITS product under an output folder, by path relative to it."""
    return {
        str(path.relative_to(out)): path
        for path in sorted(out.rglob("*.fits"))
        if "logs" not in path.relative_to(out).parts and not path.name.startswith(".")
    }


def assert_same_products(first: Path, second: Path) -> int:
    """Assert two output folders hold the same products with bit-identical arrays and catalogues.

    Every image extension (``SCI``, ``VAR``, ``DQ``) must have the same dtype and the same bytes;
    every table (``OBJCAT``) the same columns and values. ``PROVENANCE``/``PROVHISTORY`` carry
    time stamps (and so do the checksums of intermediate products): ``PROVENANCE`` is compared on
    its file names and rules only.

    Returns
    -------
    int
        The number of arrays compared.
    """
    a, b = products(first), products(second)
    assert a.keys() == b.keys(), f"products differ: {sorted(a.keys() ^ b.keys())}"
    assert a, f"no products under {first}"
    compared = 0
    for name in a:
        with fits.open(a[name]) as one, fits.open(b[name]) as two:
            assert [(h.name, h.ver) for h in one] == [(h.name, h.ver) for h in two], name
            for x, y in zip(one[1:], two[1:], strict=True):
                where = f"{name}[{x.name},{x.ver}]"
                if isinstance(x, fits.BinTableHDU):
                    if x.name in TIMESTAMPED_TABLES:
                        if x.name == "PROVENANCE":
                            assert sorted(zip(x.data["filename"], x.data["rule"], strict=True)) == sorted(
                                zip(y.data["filename"], y.data["rule"], strict=True)
                            ), where
                        continue
                    assert x.columns.names == y.columns.names, where
                    for column in x.columns.names:
                        assert np.array_equal(x.data[column], y.data[column], equal_nan=True), (
                            f"{where}.{column}"
                        )
                else:
                    assert x.data.dtype == y.data.dtype, where
                    assert x.data.tobytes() == y.data.tobytes(), f"{where}: arrays differ"
                compared += 1
    return compared
