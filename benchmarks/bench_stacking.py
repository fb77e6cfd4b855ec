"""Benchmark: gemred.stacking.stack_files against ccdproc.combine, time and peak memory.

Run on purpose (not collected by pytest)::

    .venv/bin/python benchmarks/bench_stacking.py [--frames 10] [--mosaics 5] [--workdir DIR]

Two cases, each stacked with mean + 3-sigma clipping about the median:

* ``bias``: ``--frames`` GMOS-like full frames of 12 amplifiers of 2112 x 256 (SCI, VAR, DQ);
  gemred also runs its bias preset (varclip).
* ``mosaic``: ``--mosaics`` single-extension 4224 x 6300 mosaics (SCI, VAR, DQ).

Every run is a separate process so that its peak RSS (``ru_maxrss``) is its own. ccdproc clips
once (it does not iterate) and reads one extension at a time; gemred iterates to convergence.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

AMP_SHAPE = (2112, 256)
N_AMPS = 12
MOSAIC_SHAPE = (4224, 6300)


def make_files(folder: Path, case: str, n_files: int) -> list[Path]:
    """Write ``n_files`` processed files: Gaussian noise, cosmic rays and a few DQ flags."""
    from gemred.frame import Extension, Frame
    from gemred.io import write_frame

    rng = np.random.default_rng(1)
    shapes = [AMP_SHAPE] * N_AMPS if case == "bias" else [MOSAIC_SHAPE]
    paths = []
    for i in range(n_files):
        extensions = []
        for shape in shapes:
            sci = rng.normal(1000.0, 10.0, shape).astype(np.float32)
            hits = rng.integers(0, sci.size, sci.size // 1000)
            sci.ravel()[hits] += 5000.0
            dq = np.zeros(shape, dtype=np.uint16)
            dq[:, :2] = 1
            var = np.full(shape, 100.0, dtype=np.float32)
            extensions.append(Extension(sci, fits.Header({"BUNIT": "electron"}), var=var, dq=dq))
        frame = Frame(fits.Header({"INSTRUME": "GMOS-N"}), extensions, f"N20240101S{i + 1:04d}")
        paths.append(write_frame(frame, folder / f"{case}{i:02d}.fits"))
    return paths


def run_gemred(paths: list[str], method: str) -> None:
    from gemred.stacking import stack_files

    stack_files(paths, operation="mean", reject_method=method, memory_mb=512)


def run_ccdproc(paths: list[str]) -> None:
    import ccdproc

    n_ext = sum(1 for h in fits.open(paths[0]) if h.name == "SCI")
    for ver in range(n_ext):
        ccdproc.combine(
            paths,
            method="average",
            hdu=1 + 3 * ver,
            unit="electron",
            sigma_clip=True,
            sigma_clip_low_thresh=3,
            sigma_clip_high_thresh=3,
            sigma_clip_func=np.ma.median,
            sigma_clip_dev_func=np.ma.std,
            dtype=np.float32,
        )


def child(argv: list[str]) -> None:
    """One timed run in this process; prints seconds and peak RSS (MB) as JSON."""
    what, paths = argv[0], argv[1:]
    start = time.perf_counter()
    if what == "ccdproc":
        run_ccdproc(paths)
    else:
        run_gemred(paths, what)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def timed(what: str, paths: list[Path]) -> dict:
    cmd = [sys.executable, __file__, "--child", what, *map(str, paths)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--mosaics", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        for case, n_files in (("bias", args.frames), ("mosaic", args.mosaics)):
            paths = make_files(folder, case, n_files)
            mb = sum(p.stat().st_size for p in paths) / 2**20
            print(f"\n{case}: {n_files} files, {mb:.0f} MB on disk")
            results = {what: timed(what, paths) for what in ("sigclip", "varclip", "ccdproc")}
            for what, res in results.items():
                print(f"  {what:8s} {res['seconds']:7.2f} s   peak RSS {res['peak_mb']:7.0f} MB")
            ratio = results["ccdproc"]["seconds"] / results["sigclip"]["seconds"]
            print(f"  gemred sigclip is {ratio:.1f}x faster than ccdproc.combine")
            for p in paths:
                p.unlink()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
