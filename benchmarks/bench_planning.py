"""Time Snakemake's planning (``snakemake -n``) of a 2,000-frame table (target: under 20 s).

The dataset is header-only GMOS-N files (``tests/raw_headers.py``: real headers, 8 x 8 pixel
extensions) spread over 25 nights four days apart. Each night has 10 biases, 5 twilight flats in
each of two filters (g and r, or i and z on alternate nights) and 10 dithered science frames of
each of three targets in both filters: 80 frames a night, 2,000 in all, plus a static BPM.

The plan is checked, not only timed: 25 master biases, 50 master flats, 150 stacks (each with
its preview), 1,500 mosaics, a fringe frame (with flat-corrected intermediates) for every z-band
stack; every frame gets the bias and the flat of its own night (and filter), every stack the
frames of its own target, filter and night; with the SLURM profile's ``--group-components`` the
1,500 per-frame mosaic jobs and 390 flat-corrected jobs go to the cluster as tens of group jobs.

Usage::

    .venv/bin/python benchmarks/bench_planning.py [--nights 25] [--keep DIR]

Prints the time of ``gemred table`` and of the dry run: wall time, and CPU time (user+sys) of the
child process, which is what the target is checked against (wall time on a shared machine
measures the load of the other users as much as the planning).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import math
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from gemred.table import read_table

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_SECONDS = 20.0
GROUP_SIZE = 20  # profiles/slurm: group-components mosaics=20, calibrated=20

FILTERS = {"g": "g_G0301", "r": "r_G0303", "i": "i_G0302", "z": "z_G0304"}
TARGETS = ("NGC4147", "M13-field", "SDSS-J1234")
BIASES, FLATS, DITHERS = 10, 5, 10


def plan_dataset(nights: int) -> tuple[list[tuple], dict]:
    """The raw files to write, as (writer, file name, arguments, overrides), and what the plan
    must contain: each stack's frames and each science frame's (night, band)."""
    start = dt.datetime(2017, 3, 10)
    files: list[tuple] = []
    expect: dict = {"stacks": {}, "night_of": {}}
    for night in range(nights):
        day = start + dt.timedelta(days=4 * night)
        names = (f"N{day:%Y%m%d}S{serial:04d}.fits" for serial in range(1, 1000))
        for i in range(BIASES):
            files.append(
                ("gmos_bias", next(names), (day.replace(hour=16) + dt.timedelta(seconds=30 * i),), {})
            )
        bands = ("g", "r") if night % 2 == 0 else ("i", "z")
        for k, band in enumerate(bands):
            for i in range(FLATS):
                when = day.replace(hour=5) + dt.timedelta(minutes=20 * k, seconds=60 * i)
                files.append(("gmos_twilight", next(names), (when, 30.0 - 3 * i), {"FILTER2": FILTERS[band]}))
        for t, target in enumerate(TARGETS):
            for k, band in enumerate(bands):
                obsid = f"GN-2017A-Q-{10 + t}-{night * 2 + k + 1}"
                roots = []
                for i in range(DITHERS):
                    when = day.replace(hour=6) + dt.timedelta(minutes=40 * t + 20 * k, seconds=60 * i)
                    name = next(names)
                    overrides = {
                        "offsets": (5.0 * (i % 3), 5.0 * (i // 3)),
                        "OBJECT": target,
                        "OBSID": obsid,
                        "FILTER2": FILTERS[band],
                        "DATALAB": f"{obsid}-{i + 1:03d}",
                    }
                    files.append(("gmos_science", name, (when,), overrides))
                    roots.append(name.removesuffix(".fits"))
                    expect["night_of"][roots[-1]] = (night, band)
                expect["stacks"][roots[0]] = (night, band, sorted(roots))
    files.append(("gmos_bpm", "bpm_20170306_gmos-n_Ham_22_full_12amp.fits", (), {}))
    return files, expect


def write_dataset(folder: Path, files: list[tuple]) -> None:
    """Write the header-only raw files of :func:`plan_dataset`."""
    sys.path.insert(0, str(REPO / "tests"))
    raw = importlib.import_module("raw_headers")
    folder.mkdir(parents=True, exist_ok=True)
    for writer, name, args, overrides in files:
        getattr(raw, writer)(folder / name, *args, **overrides)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its wall time and the CPU time (user+sys) of it and its children."""
    cpu0, wall0 = child_cpu(), time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall0, child_cpu() - cpu0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, wall, cpu


def jobs_of(plan: str) -> list[dict]:
    """The jobs of a dry run's printout: rule, input and output files."""
    jobs = []
    for block in re.split(r"\n(?=\s*rule \w+:)", plan):  # jobs of a group job are indented
        head = re.match(r"\s*rule (\w+):", block)
        if not head:
            continue
        fields = dict(re.findall(r"^\s+(input|output): (.*)$", block, re.MULTILINE))
        jobs.append(
            {
                "rule": head[1],
                "input": [f for f in fields.get("input", "").split(", ") if f],
                "output": [f for f in fields.get("output", "").split(", ") if f],
            }
        )
    return jobs


def root_of(path: str) -> str:
    return Path(path).name.split("_")[0].removesuffix(".fits")


def check_plan(plan: str, table: Path, expect: dict, nights: int) -> list[str]:
    """What is wrong with the plan (empty when it is right)."""
    problems = []
    rows = read_table(table)
    group_of = dict(zip(rows["filename"].map(lambda f: Path(f).stem), rows["group"], strict=True))
    jobs = jobs_of(plan)
    counts = Counter(job["rule"] for job in jobs)
    z_stacks = sum(1 for night, band, _ in expect["stacks"].values() if band == "z")
    wanted = {
        "master_bias": nights,
        "master_flat": 2 * nights,
        "mosaic_frame": len(expect["night_of"]),
        "stack_science": len(expect["stacks"]),
        "fringe_frame": z_stacks,
        "calibrate_frame": z_stacks * DITHERS,
        "all": 1,
    }
    if dict(counts) != wanted:
        problems.append(f"planned jobs {dict(counts)}, expected {wanted}")

    bias_night = {
        root_of(j["output"][0]): expect_night(j["input"]) for j in jobs if j["rule"] == "master_bias"
    }
    flat_night = {
        root_of(j["output"][0]): expect_night(j["input"], band=True)
        for j in jobs
        if j["rule"] == "master_flat"
    }
    for job in jobs:
        if job["rule"] not in ("calibrate_frame", "mosaic_frame"):
            continue
        frame = root_of(job["output"][0])
        night, band = expect["night_of"][frame]
        for path in job["input"]:
            if path.endswith("_bias.fits") and bias_night[root_of(path)][0] != night:
                problems.append(f"{frame}: bias {path} is not from night {night}")
            if path.endswith("_flat.fits") and flat_night[root_of(path)] != (night, band):
                problems.append(f"{frame}: flat {path} is not the {band} flat of night {night}")
            if path.endswith("_fringe.fits") and root_of(path) != group_of[frame]:
                problems.append(f"{frame}: fringe frame {path} is not its group's")
    for job in jobs:
        if job["rule"] == "stack_science":
            stack = root_of(job["output"][0])
            if sorted(root_of(p) for p in job["input"]) != expect["stacks"][stack][2]:
                problems.append(f"stack {stack}: inputs {job['input']} are not its target's frames")

    group_jobs = Counter(re.findall(r"Group job (\w+)", plan))
    wanted_groups = {
        "mosaics": math.ceil(counts["mosaic_frame"] / GROUP_SIZE),
        "calibrated": math.ceil(counts["calibrate_frame"] / GROUP_SIZE),
    }
    if dict(group_jobs) != wanted_groups:
        problems.append(f"group jobs {dict(group_jobs)}, expected {wanted_groups}")
    return problems


def expect_night(inputs: list[str], *, band: bool = False):
    """(night, band) of a calibration group from its raw inputs' date (and flat filter)."""
    raws = [p for p in inputs if re.search(r"N\d{8}S\d{4}\.fits$", p)]
    day = dt.datetime.strptime(Path(raws[0]).name[1:9], "%Y%m%d")
    night = (day - dt.datetime(2017, 3, 10)).days // 4
    if not band:
        return night, None
    serial = int(Path(raws[0]).name[10:14])
    bands = ("g", "r") if night % 2 == 0 else ("i", "z")
    return night, bands[(serial - BIASES - 1) // FLATS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="write the dataset here and keep it")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_planning_"))
    try:
        raw = work / "raw"
        files, expect = plan_dataset(args.nights)
        if not (args.keep and len(list(raw.glob("*.fits"))) == len(files)):
            t0 = time.perf_counter()
            shutil.rmtree(raw, ignore_errors=True)
            write_dataset(raw, files)
            print(f"wrote {len(files)} header-only raw files in {time.perf_counter() - t0:.1f} s")
        table = work / "datasets.tsv"
        _, wall, cpu = timed([str(BIN / "gemred"), "table", str(raw), "-o", str(table)], work)
        print(f"gemred table: {wall:.1f} s wall, {cpu:.1f} s CPU")
        rows = pd.read_csv(table, sep="\t")
        print(f"table: {len(rows)} rows, roles {dict(Counter(rows['role']))}")

        plan_cmd = [
            str(BIN / "snakemake"),
            "-n",
            "--cores", "2",
            "--snakefile", str(REPO / "Snakefile"),
            "--group-components", f"mosaics={GROUP_SIZE}", f"calibrated={GROUP_SIZE}",
            "--config", f"datasets={table}", f"output_dir={work / 'out'}",
        ]  # fmt: skip
        proc, wall, cpu = timed(plan_cmd, work)
        print(f"snakemake -n: {wall:.1f} s wall, {cpu:.1f} s CPU (target {TARGET_SECONDS:.0f} s)")
        problems = check_plan(proc.stdout, table, expect, args.nights)
        for problem in problems[:20]:
            print("WRONG:", problem)
        print("plan:", "right" if not problems else f"{len(problems)} problems")
        # Judged on CPU time: on a shared machine the wall time measures the other users' load.
        if problems or cpu > TARGET_SECONDS:
            sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
