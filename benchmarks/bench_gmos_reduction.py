"""End-to-end benchmark of the GMOS imaging reduction on the full-size ``gmos-starfield`` preset.

Run on purpose (not collected by pytest); it takes a few minutes::

    .venv/bin/python benchmarks/bench_gmos_reduction.py [--workdir DIR] [--keep] [--cores 2]

In one run it measures:

1. ``snakemake --cores N`` from the raw files into a fresh output folder: wall seconds, each
   job's time (``rule X done in N s`` in its log, and its process lifetime, which adds Python
   start-up and imports) and each job's peak RSS. Peak RSS is the kernel's high-water mark
   (``VmHWM``) of every process under Snakemake, polled every 0.05 s; a job is recognised by the
   temporary script Snakemake runs (``.snakemake/scripts/tmpXXXX.<rule>.py``). Each job's CPU
   seconds (user + system, all its threads) are polled the same way, so they can miss a job's
   last 0.05 s; they depend much less than wall seconds on what else runs on the machine.
2. The I/O floor: reading every raw input once (astropy, every HDU's data loaded) plus writing
   every FITS product once (their HDU lists, loaded beforehand, written to a scratch folder).
3. A plain ccdproc baseline doing the same volume of work in one process: per amplifier
   overscan subtraction and trim, a read+Poisson deviation, an averaged sigma-clipped master
   bias, bias subtraction and gain correction, a master flat of the flats scaled to their CCD2
   median, flat correction, a tiled mosaic (amplifiers side by side, CCDs ``tile_gap`` apart,
   no interpolation), integer-pixel alignment from the header WCS and an averaged sigma-clipped
   stack. Its products (SCI, uncertainty, mask) are written like ours.

It prints a table (ours against DRAGONS' 105 s on this dataset on a 2-core machine, the I/O
floor and the baseline; peak job memory against the 1 GB target; time per rule) and writes the
numbers as JSON beside the work folder (``DIR.json``). The raw files are simulated into
``DIR/raw`` unless a kept run left them there. Without ``--keep`` everything the benchmark
wrote under ``DIR`` is removed. Timings on a shared machine vary: the load average before and
after is printed and stored.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: DRAGONS on this dataset on a 2-core machine (the issue): seconds per recipe and peak memory.
DRAGONS_SECONDS = {"bias": 20.0, "flat": 22.0, "science": 62.0}
DRAGONS_TOTAL = 105.0
DRAGONS_PEAK_MB = 2.4 * 1024
TARGET_PEAK_MB = 1024.0
POLL_SECONDS = 0.05
#: Unbinned pixels between GMOS-N Hamamatsu CCDs when tiling.
TILE_GAP = 67
JOB_SCRIPT = re.compile(r"\.snakemake/scripts/(tmp\w+\.(\w+)\.py)")
DONE = re.compile(r"rule (\w+) done in ([\d.]+) s")


# ---------------------------------------------------------------- monitoring a process tree


def _status_mb(proc, key: str) -> float | None:
    """A memory figure (MB) from ``/proc/PID/status`` (``VmHWM``, ``RssAnon``...); None off Linux."""
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb(proc) -> float:
    """Peak RSS (MB) of a psutil process so far: VmHWM on Linux, else its current RSS."""
    peak = _status_mb(proc, "VmHWM")
    return proc.memory_info().rss / 2**20 if peak is None else peak


def _private_mb(proc) -> float:
    """Anonymous (private) resident memory (MB) of a psutil process now: ``RssAnon`` on Linux.

    Unlike the RSS it leaves out file pages the process maps (a memory-mapped input that the
    file system's cache holds anyway); the peak is taken over the polls.
    """
    private = _status_mb(proc, "RssAnon")
    return float("nan") if private is None else private


def _cpu_seconds(proc, *, children: bool = False) -> float:
    """User plus system CPU seconds of a psutil process so far (all its threads); with
    ``children``, also those of its child processes that have ended (a job's worker
    processes, once its pool is closed)."""
    times = proc.cpu_times()
    own = times.user + times.system
    return own + times.children_user + times.children_system if children else own


def cpu_floor_line(results: dict) -> str:
    """The wall time the run's CPU seconds allow on its cores (every core busy throughout)."""
    cpu = sum(job["cpu_s"] for job in results["workflow"]["jobs"]) + results["workflow"]["cpu_s"]
    cores = results["cores"]
    floor = cpu / cores
    return (f"CPU-bound floor: {cpu:.1f} CPU s / {cores} cores = {floor:.1f} s; the run took "
            f"{results['workflow']['seconds'] / floor:.2f}x that")


def run_monitored(cmd: list[str], cwd: Path, log_path: Path) -> dict:
    """Run ``cmd``, polling its process tree; return wall seconds, its peak RSS and each job's.

    Returns
    -------
    dict
        ``seconds``, ``returncode``, ``peak_mb`` and ``cpu_s`` (the command's own process),
        ``tree_peak_mb`` (largest sum of RSS over the tree at one poll) and ``jobs``: one entry
        per Snakemake job script seen, with its ``rule``, ``peak_mb``, ``private_mb`` (peak
        anonymous memory over the polls, without mapped files), ``cpu_s``, ``start`` and
        ``end`` (seconds from launch).
    """
    import psutil

    jobs: dict[str, dict] = {}
    names: dict[int, str | None] = {}
    peak_self = tree_peak = cpu_self = 0.0
    with open(log_path, "w") as log:
        start = time.perf_counter()
        popen = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(popen.pid)
        while popen.poll() is None:
            now = time.perf_counter() - start
            try:
                peak_self = max(peak_self, _peak_rss_mb(root))
                cpu_self = max(cpu_self, _cpu_seconds(root))
                children = root.children(recursive=True)
            except psutil.Error:
                children = []
            tree_rss = 0.0
            for child in children:
                try:
                    if child.pid not in names:
                        match = JOB_SCRIPT.search(" ".join(child.cmdline()))
                        names[child.pid] = match.group(1) if match else None
                    tree_rss += child.memory_info().rss / 2**20
                    peak = _peak_rss_mb(child)
                    private = _private_mb(child)
                    cpu = _cpu_seconds(child, children=True)
                except psutil.Error:
                    continue
                key = names[child.pid]
                if key is None:
                    continue
                job = jobs.setdefault(
                    key,
                    {
                        "rule": key.split(".")[1],
                        "start": now,
                        "peak_mb": 0.0,
                        "private_mb": 0.0,
                        "cpu_s": 0.0,
                    },
                )
                job["peak_mb"] = max(job["peak_mb"], peak)
                job["private_mb"] = max(job["private_mb"], private)
                job["cpu_s"] = max(job["cpu_s"], cpu)
                job["end"] = now
            tree_peak = max(tree_peak, tree_rss)
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "returncode": popen.returncode,
        "peak_mb": peak_self,
        "cpu_s": cpu_self,
        "tree_peak_mb": tree_peak,
        "jobs": list(jobs.values()),
    }


# ---------------------------------------------------------------- data set and workflow


def prepare_raw(workdir: Path, seed: int) -> tuple[Path, bool]:
    """Simulate full-size gmos-starfield into ``workdir/raw`` (kept from an earlier run if there).

    Returns the dataset table and whether the raw files were reused.
    """
    table = workdir / "datasets.tsv"
    raw = workdir / "raw"
    reused = table.exists() and raw.is_dir()
    if not reused:
        shutil.rmtree(raw, ignore_errors=True)
        simulate = [BIN / "gemred", "simulate", "gmos-starfield", "--out", raw, "--size", "full"]
        subprocess.run([*simulate, "--seed", str(seed)], check=True)
        subprocess.run([BIN / "gemred", "table", raw, "-o", table], check=True)
    return table, reused


def read_table_rows(table: Path) -> list[dict]:
    """Rows of a gemred dataset table, with ``path`` resolved against the table's folder."""
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        row["path"] = table.parent / row["filename"]
    return rows


def run_workflow(workdir: Path, table: Path, cores: int) -> dict:
    """Run the workflow from raw files into a fresh ``workdir/out``; timings, memory, job logs."""
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile", str(REPO / "Snakefile"),
        "--cores", str(cores),
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


def per_rule(result: dict) -> dict[str, dict]:
    """Per rule: job count, logged seconds (sum, max), process lifetime and CPU sums, peak RSS."""
    rules: dict[str, dict] = {}
    for rule, seconds in result["logged_seconds"].items():
        rules[rule] = {"jobs": len(seconds), "logged_sum": sum(seconds), "logged_max": max(seconds)}
    for job in result["jobs"]:
        entry = rules.setdefault(job["rule"], {"jobs": 0, "logged_sum": 0.0, "logged_max": 0.0})
        entry["process_sum"] = entry.get("process_sum", 0.0) + job["end"] - job["start"]
        entry["peak_mb"] = max(entry.get("peak_mb", 0.0), job["peak_mb"])
        entry["private_mb"] = max(entry.get("private_mb", 0.0), job.get("private_mb", float("nan")))
        entry["cpu_s"] = entry.get("cpu_s", 0.0) + job["cpu_s"]
    return rules


# ---------------------------------------------------------------- I/O floor


def io_floor(raw_paths: list[Path], products: list[Path], scratch: Path) -> dict:
    """Seconds to read every raw input once and to write every FITS product once."""
    start = time.perf_counter()
    nbytes = 0
    for path in raw_paths:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None:
                    nbytes += hdu.data.nbytes
    read_s = time.perf_counter() - start
    scratch.mkdir(parents=True, exist_ok=True)
    loaded = []
    for path in products:
        hdul = fits.open(path, memmap=False)
        for hdu in hdul:
            _ = hdu.data  # load before timing the write
        loaded.append((path.name, hdul))
    start = time.perf_counter()
    for name, hdul in loaded:
        hdul.writeto(scratch / name, overwrite=True)
    write_s = time.perf_counter() - start
    for _, hdul in loaded:
        hdul.close()
    written = sum((scratch / name).stat().st_size for name, _ in loaded)
    return {
        "read_s": read_s,
        "write_s": write_s,
        "total_s": read_s + write_s,
        "read_mb": nbytes / 2**20,
        "write_mb": written / 2**20,
    }


# ---------------------------------------------------------------- ccdproc baseline


def _section(text: str) -> tuple[slice, slice]:
    """FITS section '[x1:x2,y1:y2]' (1-based, inclusive) as numpy (y, x) slices."""
    (x1, x2), (y1, y2) = (map(int, part.split(":")) for part in text.strip("[] ").split(","))
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _ccdproc_amps(path: Path, bias=None, flat=None) -> tuple[list, list[fits.Header]]:
    """One raw file's amplifiers processed with ccdproc, in DETSEC order (float32 planes kept)."""
    import astropy.units as u
    import ccdproc

    amps, headers = [], []
    with fits.open(path, memmap=False) as hdul:
        exts = sorted(hdul[1:], key=lambda h: _section(h.header["DETSEC"])[1].start)
        for i, hdu in enumerate(exts):
            hdr = hdu.header
            ccd = ccdproc.CCDData(hdu.data.astype(np.float32), unit="adu")
            ccd = ccdproc.subtract_overscan(ccd, fits_section=hdr["BIASSEC"], median=True, overscan_axis=1)
            ccd = ccdproc.trim_image(ccd, fits_section=hdr["DATASEC"])
            gain = hdr["GAIN"] * u.electron / u.adu
            ccd = ccdproc.create_deviation(
                ccd, gain=gain, readnoise=hdr["RDNOISE"] * u.electron, disregard_nan=True
            )
            if bias is not None:
                ccd = ccdproc.subtract_bias(ccd, bias[i])
                ccd = ccdproc.gain_correct(ccd, gain)
            if flat is not None:
                ccd = ccdproc.flat_correct(ccd, flat[i], norm_value=1.0)
            ccd.data = ccd.data.astype(np.float32)
            ccd.uncertainty.array = ccd.uncertainty.array.astype(np.float32)
            amps.append(ccd)
            headers.append(hdr)
    return amps, headers


def _combine(ccds: list, **kwargs):
    """ccdproc.combine, average with 3-sigma clipping about the median, float32."""
    import ccdproc

    return ccdproc.combine(
        ccds,
        method="average",
        sigma_clip=True,
        sigma_clip_low_thresh=3,
        sigma_clip_high_thresh=3,
        sigma_clip_func=np.ma.median,
        sigma_clip_dev_func=np.ma.std,
        dtype=np.float32,
        **kwargs,
    )


def _write(ccds: list, path: Path) -> None:
    """Write CCDData planes as SCI/UNCERT/MASK extensions of one file."""
    hdus = [fits.PrimaryHDU()]
    for ccd in ccds:
        hdus.append(fits.ImageHDU(np.asarray(ccd.data, dtype=np.float32), name="SCI"))
        if ccd.uncertainty is not None:
            hdus.append(fits.ImageHDU(np.asarray(ccd.uncertainty.array, dtype=np.float32), name="UNCERT"))
        if ccd.mask is not None:
            hdus.append(fits.ImageHDU(ccd.mask.astype(np.uint8), name="MASK"))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _tile(amps: list, headers: list[fits.Header]):
    """Amplifiers side by side per CCD, CCDs TILE_GAP unbinned pixels apart (NaN in the gaps)."""
    import ccdproc

    xbin = int(str(headers[0]["CCDSUM"]).split()[0])
    gap = TILE_GAP // xbin
    ccd_names = list(dict.fromkeys(h["CCDNAME"] for h in headers))
    sci, unc = [], []
    for n, name in enumerate(ccd_names):
        members = [i for i, h in enumerate(headers) if h["CCDNAME"] == name]
        if n:
            blank = np.full((amps[0].shape[0], gap), np.nan, dtype=np.float32)
            sci.append(blank)
            unc.append(blank)
        sci.extend(amps[i].data for i in members)
        unc.extend(amps[i].uncertainty.array for i in members)
    data, deviation = np.hstack(sci), np.hstack(unc)
    return ccdproc.CCDData(
        data, unit=amps[0].unit, uncertainty=StdDevUncertainty(deviation), mask=np.isnan(data)
    )


def _offsets(headers: list[fits.Header]) -> list[tuple[int, int]]:
    """Integer (dy, dx) of each frame against the first, from the WCS of its first CCD2 amp."""
    from astropy.wcs import WCS

    ref = WCS(headers[0])
    x0, y0 = ref.wcs.crpix
    sky = ref.pixel_to_world(x0, y0)
    shifts = []
    for hdr in headers:
        x, y = WCS(hdr).world_to_pixel(sky)
        shifts.append((round(float(y - y0)), round(float(x - x0))))
    return shifts


def _align(mosaics: list, shifts: list[tuple[int, int]]) -> list:
    """Place each mosaic on a common canvas at minus its integer offset (NaN, masked, elsewhere)."""
    import ccdproc

    dys, dxs = [-dy for dy, _ in shifts], [-dx for _, dx in shifts]
    ny, nx = mosaics[0].shape
    shape = (ny + max(dys) - min(dys), nx + max(dxs) - min(dxs))
    aligned = []
    for mosaic, dy, dx in zip(mosaics, dys, dxs, strict=True):
        y, x = dy - min(dys), dx - min(dxs)
        data = np.full(shape, np.nan, dtype=np.float32)
        dev = np.full(shape, np.nan, dtype=np.float32)
        data[y : y + ny, x : x + nx] = mosaic.data
        dev[y : y + ny, x : x + nx] = mosaic.uncertainty.array
        aligned.append(
            ccdproc.CCDData(
                data, unit=mosaic.unit, uncertainty=StdDevUncertainty(dev), mask=np.isnan(data)
            )
        )
    return aligned


def ccdproc_baseline(table: Path, out: Path) -> None:
    """The plain ccdproc reduction of the table's biases, twilight flats and science frames."""
    import astropy.units as u
    import ccdproc

    out.mkdir(parents=True, exist_ok=True)
    rows = read_table_rows(table)
    by_role = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["filename"]):
        by_role[row["role"]].append(row["path"])

    biases = [_ccdproc_amps(path)[0] for path in by_role["bias"]]
    master_bias = [_combine([frame[i] for frame in biases]) for i in range(len(biases[0]))]
    del biases
    _write(master_bias, out / "bias.fits")

    flats = []
    for path in by_role["twilight_flat"]:
        amps, headers = _ccdproc_amps(path, bias=master_bias)
        ccd2_name = headers[4]["CCDNAME"]  # amplifiers are in DETSEC order: 4-7 are CCD2
        ccd2 = [amp.data for amp, hdr in zip(amps, headers, strict=True) if hdr["CCDNAME"] == ccd2_name]
        flats.append((amps, float(np.nanmedian(np.hstack(ccd2)))))
    master_flat = []
    for i in range(len(flats[0][0])):
        flat = _combine([amps[i] for amps, _ in flats], scale=[1.0 / level for _, level in flats])
        master_flat.append(
            ccdproc.CCDData(
                flat.data,
                unit=u.dimensionless_unscaled,
                uncertainty=StdDevUncertainty(flat.uncertainty.array),
            )
        )
    del flats
    _write(master_flat, out / "flat.fits")

    mosaics, wcs_headers = [], []
    for path in by_role["science"]:
        amps, headers = _ccdproc_amps(path, bias=master_bias, flat=master_flat)
        mosaic = _tile(amps, headers)
        _write([mosaic], out / f"{Path(path).stem}_mosaic.fits")
        mosaics.append(mosaic)
        wcs_headers.append(headers[4])
    stack = _combine(_align(mosaics, _offsets(wcs_headers)))
    _write([stack], out / "stack.fits")


# ---------------------------------------------------------------- report


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def print_report(results: dict) -> None:
    """The summary table and the time per rule."""
    ours = results["workflow"]["seconds"]
    floor = results["io_floor"]["total_s"]
    base = results["baseline"]["seconds"]
    peak = max((job["peak_mb"] for job in results["workflow"]["jobs"]), default=float("nan"))
    biggest = max(results["workflow"]["jobs"], key=lambda job: job["peak_mb"], default={"rule": "?"})
    print(f"\nfull-size gmos-starfield, snakemake --cores {results['cores']} "
          f"(load average before {results['load_before']}, after {results['load_after']})")
    print(f"{'':34s}{'seconds':>9s}{'ours / it':>11s}")
    print(f"{'ours: snakemake end to end':34s}{ours:9.1f}{1.0:11.2f}")
    print(f"{'DRAGONS (issue, 2 cores)':34s}{DRAGONS_TOTAL:9.1f}{ours / DRAGONS_TOTAL:11.2f}")
    print(f"{'I/O floor (read raw + write prods)':34s}{floor:9.1f}{ours / floor:11.2f}")
    print(f"{'ccdproc baseline (1 process)':34s}{base:9.1f}{ours / base:11.2f}")
    print(f"\npeak RSS of the largest job: {peak:.0f} MB ({biggest['rule']}); "
          f"target {TARGET_PEAK_MB:.0f} MB ({peak / TARGET_PEAK_MB:.2f}x), DRAGONS {DRAGONS_PEAK_MB:.0f} MB; "
          f"whole tree at once {results['workflow']['tree_peak_mb']:.0f} MB; "
          f"ccdproc baseline {results['baseline']['peak_mb']:.0f} MB")
    anon = max(results["workflow"]["jobs"], key=lambda job: job.get("private_mb", 0.0), default={"rule": "?"})
    private = anon.get("private_mb", float("nan"))
    print(f"peak private (anonymous) memory of a job: {private:.0f} MB ({anon['rule']}); "
          "the RSS above also counts the pages of input files a job maps")
    io = results["io_floor"]
    print(f"I/O floor: read {io['read_mb']:.0f} MB in {io['read_s']:.1f} s, "
          f"write {io['write_mb']:.0f} MB in {io['write_s']:.1f} s (files in page cache)")
    first = results["workflow"]["first_job_start"]
    if first is not None:
        print(f"snakemake start-up (launch to first job): {first:.1f} s")
    print(f"\n{'rule':16s}{'jobs':>5s}{'logged s':>10s}{'max job s':>10s}{'process s':>10s}"
          f"{'CPU s':>8s}{'peak MB':>9s}{'anon MB':>9s}")
    for rule, entry in sorted(results["rules"].items(), key=lambda kv: -kv[1]["logged_sum"]):
        print(f"{rule:16s}{entry['jobs']:5d}{entry['logged_sum']:10.1f}{entry['logged_max']:10.1f}"
              f"{entry.get('process_sum', float('nan')):10.1f}{entry.get('cpu_s', float('nan')):8.1f}"
              f"{entry.get('peak_mb', float('nan')):9.0f}{entry.get('private_mb', float('nan')):9.0f}")
    jobs_cpu = sum(job["cpu_s"] for job in results["workflow"]["jobs"])
    print(f"CPU seconds: all jobs {jobs_cpu:.1f}, snakemake itself {results['workflow']['cpu_s']:.1f}, "
          f"ccdproc baseline {results['baseline']['cpu_s']:.1f}")
    print(cpu_floor_line(results))
    print("(logged s: sum of 'done in' over the rule's jobs; process s: sum of job process lifetimes, "
          "with interpreter start-up and imports; CPU s: user + system of the rule's jobs and their "
          "ended worker processes, polled; "
          "peak MB: largest VmHWM, mapped input files included; anon MB: largest private RssAnon seen)")


def measure_run(workdir: Path, table: Path, cores: int, run, results: dict) -> None:
    """Into ``results``: the Snakemake run ``run(workdir, table, cores)``, its per-rule figures
    and the I/O floor of its raw inputs and FITS products (scratch folder removed after)."""
    print(f"running snakemake in {workdir} ...", flush=True)
    results["workflow"] = run(workdir, table, cores)
    results["rules"] = per_rule(results["workflow"])
    print("measuring the I/O floor ...", flush=True)
    raw_paths = [row["path"] for row in read_table_rows(table) if row["role"] != "ignore"]
    products = sorted((workdir / "out").glob("*/*.fits"))
    results["io_floor"] = io_floor(raw_paths, products, workdir / "io_scratch")
    results["io_floor"]["products"] = [str(p.relative_to(workdir)) for p in products]
    shutil.rmtree(workdir / "io_scratch", ignore_errors=True)


def main() -> None:
    """Parse arguments, run the three measurements, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="work folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep raw files and products")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-run", nargs=2, metavar=("TABLE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_run:
        ccdproc_baseline(Path(args.baseline_run[0]), Path(args.baseline_run[1]))
        return

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="gemred-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"cores": args.cores, "workdir": str(workdir), "load_before": load_average()}
    table, results["raw_reused"] = prepare_raw(workdir, args.seed)

    measure_run(workdir, table, args.cores, run_workflow, results)

    print("running the ccdproc baseline ...", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve())]
    cmd += ["--baseline-run", str(table), str(workdir / "baseline")]
    baseline = run_monitored(cmd, workdir, workdir / "baseline.log")
    if baseline["returncode"] != 0:
        sys.exit(f"ccdproc baseline failed; see {workdir / 'baseline.log'}")
    results["baseline"] = {key: baseline[key] for key in ("seconds", "peak_mb", "cpu_s")}
    results["load_after"] = load_average()
    results["dragons"] = {"total_s": DRAGONS_TOTAL, "recipes_s": DRAGONS_SECONDS, "peak_mb": DRAGONS_PEAK_MB}

    print_report(results)
    json_path = workdir.with_name(workdir.name + ".json")
    json_path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nnumbers: {json_path}")
    if not args.keep:
        for name in ("raw", "out", "baseline", "io_scratch", ".snakemake"):
            shutil.rmtree(workdir / name, ignore_errors=True)
        for name in ("datasets.tsv", "snakemake.log", "baseline.log"):
            (workdir / name).unlink(missing_ok=True)
        if args.workdir is None or not any(workdir.iterdir()):
            workdir.rmdir()


if __name__ == "__main__":
    main()
