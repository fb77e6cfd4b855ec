"""End-to-end benchmark of the GSAOI imaging reduction on the full-size ``gsaoi-offsetsky`` preset.

Run on purpose (not collected by pytest); it takes several minutes::

    .venv/bin/python benchmarks/bench_gsaoi_reduction.py [--workdir DIR] [--keep] [--cores 2]

In one run it measures, with the monitoring of :mod:`bench_gmos_reduction` (its docstring
says how):

1. ``snakemake --cores N`` from the raw files into a fresh output folder, with the GSAOI
   tutorial's settings (``prepare: bad_wcs: fix``, ``skyCorrect: offset_sky: false``, the
   standard's magnitude): wall
   seconds, and per job its logged time, process lifetime, CPU seconds (user + system, all
   threads) and peak RSS (``VmHWM``).
2. The I/O floor in the same run: reading every raw input once and writing every FITS
   product once.
3. The stack's memory against the number of frames: the science group's full-size
   sky-subtracted frames are stacked from disk as the GSAOI stack does, in a fresh process,
   once as they are (N frames) and once with every frame given twice (2N); the peak RSS of
   both processes is printed (:func:`stack_memory`).

It prints a table (ours against DRAGONS' 16 minutes on this dataset on a 2-core machine and
the I/O floor; peak job memory against the 2 GB target; time per rule) and writes the numbers
as JSON beside the work folder (``DIR.json``). The raw files are simulated into ``DIR/raw``
unless an earlier run left them there (``--keep`` keeps them, and the products). Timings on a
shared machine vary: the load average before and after is printed and stored; CPU seconds
vary much less than wall seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gmos_reduction import (  # noqa: E402  (the benchmarks folder is not a package)
    BIN,
    DONE,
    REPO,
    cpu_floor_line,
    load_average,
    measure_run,
    run_monitored,
)

from gemred.simulation.gsaoi import STANDARD, STANDARD_MAG  # noqa: E402

#: DRAGONS on this dataset on a 2-core machine (the issue): seconds per recipe and peak memory.
DRAGONS_SECONDS = {"flat": 80.0, "standard": 270.0, "science": 618.0}
DRAGONS_TOTAL = 16 * 60.0
DRAGONS_PEAK_MB = 7.4 * 1024
TARGET_PEAK_MB = 2048.0
TARGET_SECONDS = 180.0
#: The tutorial's settings: its frames' WCS must be rebuilt from the telescope offsets, and the
#: target fills the field, so the sky's level is not matched to each frame's; the standard's
#: catalogue magnitude, so that its stack gets a zero point (as in the tests).
SETTINGS = (
    "prepare:\n  bad_wcs: fix\nskyCorrect:\n  offset_sky: false\n"
    f'standard_magnitudes:\n  "{STANDARD[0]}": {{Kshort: {STANDARD_MAG}}}\n'
)


def prepare_raw(workdir: Path, seed: int) -> tuple[Path, bool]:
    """Simulate full-size gsaoi-offsetsky into ``workdir/raw`` (kept from an earlier run if there).

    Returns the dataset table and whether the raw files were reused.
    """
    table = workdir / "datasets.tsv"
    raw = workdir / "raw"
    reused = table.exists() and raw.is_dir()
    if not reused:
        shutil.rmtree(raw, ignore_errors=True)
        simulate = [BIN / "gemred", "simulate", "gsaoi-offsetsky", "--out", raw, "--size", "full"]
        subprocess.run([*simulate, "--seed", str(seed)], check=True)
        subprocess.run([BIN / "gemred", "table", raw, "-o", table], check=True)
    return table, reused


def run_workflow(workdir: Path, table: Path, cores: int) -> dict:
    """Run the workflow from raw files into a fresh ``workdir/out``; timings, memory, job logs."""
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
    settings = workdir / "settings.yaml"
    settings.write_text(SETTINGS)
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile", str(REPO / "Snakefile"),
        "--cores", str(cores),
        "--configfile", str(settings),
        "--config", f"datasets={table.name}", "output_dir=out",
    ]  # fmt: skip
    result = run_monitored(cmd, workdir, workdir / "snakemake.log")
    if result["returncode"] != 0:
        sys.exit(f"snakemake failed (exit {result['returncode']}); see {workdir / 'snakemake.log'}")
    logged = defaultdict(list)
    for log in sorted((out / "logs").glob("*/*.log")):
        for rule, seconds in DONE.findall(log.read_text()):
            logged[rule].append(float(seconds))
    result["logged_seconds"] = dict(logged)
    result["first_job_start"] = min((job["start"] for job in result["jobs"]), default=None)
    return result


def stack_run(frames: list[str], out: Path) -> None:
    """Stack ``frames`` from disk as the GSAOI stack does (run in its own process)."""
    from gemred.io import write_frame
    from gemred.recipes.gsaoi_science import STACK_DEFAULTS
    from gemred.stacking import stack_files

    out.parent.mkdir(parents=True, exist_ok=True)
    write_frame(stack_files(frames, **STACK_DEFAULTS), out)


def stack_memory(workdir: Path) -> dict:
    """Peak RSS and seconds of stacking N full-size frames from disk, then each twice (2N).

    The frames are the science group's sky-subtracted ones (4 arrays of 2048 x 2048, as large
    as a resampled frame), combined by :func:`gemred.stacking.stack_files` with the GSAOI
    stack settings, each run in a fresh process. A frame given twice is read twice, so 2N
    entries move twice the pixels through the row bands. (Resampling, before the stack, holds
    one or two frames at a time whatever N: its memory is in the gsaoi_stack job's peak.)
    """
    frames = sorted(str(p) for p in (workdir / "out" / "frames").glob("S20170505*_skySubtracted.fits"))
    result = {}
    for label, entries in (("N", frames), ("2N", frames + frames)):
        out = workdir / "stackmem" / f"{label}.fits"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--stack-run", json.dumps([entries, str(out)])]
        run = run_monitored(cmd, workdir, workdir / f"stack_{label}.log")
        if run["returncode"] != 0:
            sys.exit(f"stack of {label} frames failed; see {workdir / f'stack_{label}.log'}")
        result[label] = {"frames": len(entries), "peak_mb": run["peak_mb"], "seconds": run["seconds"]}
    return result


def print_report(results: dict) -> None:
    """The summary table, memory, stacking memory and the time per rule."""
    ours = results["workflow"]["seconds"]
    floor = results["io_floor"]["total_s"]
    jobs = results["workflow"]["jobs"]
    peak = max((job["peak_mb"] for job in jobs), default=float("nan"))
    biggest = max(jobs, key=lambda job: job["peak_mb"], default={"rule": "?"})
    print(
        f"\nfull-size gsaoi-offsetsky, snakemake --cores {results['cores']} "
        f"(load average before {results['load_before']}, after {results['load_after']})"
    )
    print(f"{'':34s}{'seconds':>9s}{'ours / it':>11s}")
    print(f"{'ours: snakemake end to end':34s}{ours:9.1f}{1.0:11.2f}")
    print(f"{'target':34s}{TARGET_SECONDS:9.1f}{ours / TARGET_SECONDS:11.2f}")
    print(f"{'DRAGONS (issue, 2 cores)':34s}{DRAGONS_TOTAL:9.1f}{ours / DRAGONS_TOTAL:11.2f}")
    print(f"{'I/O floor (read raw + write prods)':34s}{floor:9.1f}{ours / floor:11.2f}")
    print(
        f"\npeak RSS of the largest job: {peak:.0f} MB ({biggest['rule']}); "
        f"target {TARGET_PEAK_MB:.0f} MB ({peak / TARGET_PEAK_MB:.2f}x), DRAGONS {DRAGONS_PEAK_MB:.0f} MB; "
        f"whole tree at once {results['workflow']['tree_peak_mb']:.0f} MB"
    )
    anon = max(results["workflow"]["jobs"], key=lambda job: job.get("private_mb", 0.0), default={"rule": "?"})
    private = anon.get("private_mb", float("nan"))
    print(
        f"peak private (anonymous) memory of a job: {private:.0f} MB ({anon['rule']}); "
        "the RSS above also counts the pages of input files a job maps"
    )
    io = results["io_floor"]
    print(
        f"I/O floor: read {io['read_mb']:.0f} MB in {io['read_s']:.1f} s, "
        f"write {io['write_mb']:.0f} MB in {io['write_s']:.1f} s (files in page cache)"
    )
    first = results["workflow"]["first_job_start"]
    if first is not None:
        print(f"snakemake start-up (launch to first job): {first:.1f} s")
    print(
        f"\n{'rule':20s}{'jobs':>5s}{'logged s':>10s}{'max job s':>10s}{'process s':>10s}"
        f"{'CPU s':>8s}{'peak MB':>9s}{'anon MB':>9s}"
    )
    for rule, entry in sorted(results["rules"].items(), key=lambda kv: -kv[1]["logged_sum"]):
        print(
            f"{rule:20s}{entry['jobs']:5d}{entry['logged_sum']:10.1f}{entry['logged_max']:10.1f}"
            f"{entry.get('process_sum', float('nan')):10.1f}{entry.get('cpu_s', float('nan')):8.1f}"
            f"{entry.get('peak_mb', float('nan')):9.0f}{entry.get('private_mb', float('nan')):9.0f}"
        )
    jobs_cpu = sum(job["cpu_s"] for job in jobs)
    print(f"CPU seconds: all jobs {jobs_cpu:.1f}, snakemake itself {results['workflow']['cpu_s']:.1f}")
    print(cpu_floor_line(results))
    print(
        "(logged s: sum of 'done in' over the rule's jobs; process s: sum of job process lifetimes, "
        "with interpreter start-up and imports; CPU s: user + system of the rule's jobs and their "
        "ended worker processes, polled; "
        "peak MB: largest VmHWM, mapped input files included; anon MB: largest private RssAnon seen)"
    )
    if "stack_memory" in results:
        print("\nstack memory against frame count (science group, one process each):")
        for label, entry in results["stack_memory"].items():
            print(
                f"  {label:3s} {entry['frames']:3d} frames: peak RSS {entry['peak_mb']:.0f} MB, "
                f"{entry['seconds']:.1f} s"
            )


def main() -> None:
    """Parse arguments, run the measurements, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="work folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep raw files and products")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-stack-memory", action="store_true", help="skip the N / 2N stacking memory runs")
    parser.add_argument("--stack-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stack_run:
        entries, out = json.loads(args.stack_run)
        stack_run(entries, Path(out))
        return

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="gemred-bench-gsaoi-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"cores": args.cores, "workdir": str(workdir), "load_before": load_average()}
    table, results["raw_reused"] = prepare_raw(workdir, args.seed)

    measure_run(workdir, table, args.cores, run_workflow, results)

    if not args.no_stack_memory:
        print("measuring the stack's memory for N and 2N frames ...", flush=True)
        results["stack_memory"] = stack_memory(workdir)
    results["load_after"] = load_average()
    results["dragons"] = {"total_s": DRAGONS_TOTAL, "recipes_s": DRAGONS_SECONDS, "peak_mb": DRAGONS_PEAK_MB}

    print_report(results)
    json_path = workdir.with_name(workdir.name + ".json")
    json_path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nnumbers: {json_path}")
    if not args.keep:
        for name in ("raw", "out", "stackmem", ".snakemake"):
            shutil.rmtree(workdir / name, ignore_errors=True)
        for name in ("datasets.tsv", "settings.yaml", "snakemake.log", "stack_N.log", "stack_2N.log"):
            (workdir / name).unlink(missing_ok=True)
        if args.workdir is None or not any(workdir.iterdir()):
            workdir.rmdir()


if __name__ == "__main__":
    main()
