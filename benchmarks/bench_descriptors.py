"""Time ``gemred.table.build_table`` on 1,000 raw-like files (target: under 10 s).

The files are copies of the header-correct test files of ``tests/raw_headers.py`` (GMOS-N
biases, twilight flats and science frames, GSAOI flats and science frames) with 8 x 8 pixel
extensions, their headers padded to the card counts of real raw files (GMOS: 180 primary and
108 extension cards; GSAOI: 289 and 144), so that the time is that of reading real headers.

Usage::

    .venv/bin/python benchmarks/bench_descriptors.py [--files 1000] [--no-padding]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from astropy.io import fits

from gemred.io import read_headers
from gemred.table import build_table

#: Real raw header sizes in cards (primary, extension); reference gemini-raw-format.md section 6.
CARD_COUNTS = {"GMOS-N": (180, 108), "GSAOI": (289, 144)}
TARGET_SECONDS_PER_1000 = 10.0


def _templates(folder: Path, padding: bool) -> list[Path]:
    """One raw-like file of each kind, headers padded to real card counts if asked."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    raw = importlib.import_module("raw_headers")
    when = dt.datetime(2017, 6, 14, 6, 20)
    paths = [
        raw.gmos_bias(folder / "N20170613S0180.fits", when),
        raw.gmos_twilight(folder / "N20170702S0178.fits", when, 40.0),
        raw.gmos_science(folder / "N20170614S0201.fits", when),
        raw.gsaoi_lamp_flat(folder / "S20170505S0030.fits", when, on=True),
        raw.gsaoi_science(folder / "S20170505S0095.fits", when, guided=True),
    ]
    if padding:
        for path in paths:
            with fits.open(path, mode="update") as hdul:
                counts = CARD_COUNTS[hdul[0].header["INSTRUME"]]
                for hdu, target in zip(hdul, (counts[0], *[counts[1]] * (len(hdul) - 1)), strict=True):
                    for i in range(target - len(hdu.header)):
                        hdu.header[f"FILL{i:04d}"] = (1.5 * i, "stands for one of the real header cards")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="number of files (default 1000)")
    parser.add_argument("--no-padding", action="store_true", help="keep the test files' short headers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_descriptors_") as tmp:
        templates = _templates(Path(tmp) / "templates", padding=not args.no_padding)
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for i in range(args.files):
            template = templates[i % len(templates)]
            site = template.name[0]
            shutil.copyfile(template, raw / f"{site}20170101S{i:04d}.fits")
        files = sorted(raw.glob("*.fits"))

        start = time.perf_counter()
        for path in files:
            read_headers(path)
        read_seconds = time.perf_counter() - start

        start = time.perf_counter()
        table = build_table(raw)
        seconds = time.perf_counter() - start

    per_1000 = seconds * 1000 / args.files
    print(f"build_table: {args.files} files in {seconds:.2f} s ({per_1000:.2f} ms per file)")
    print(f"  gemred.io.read_headers alone on the same files: {read_seconds:.2f} s")
    print(f"  roles: {', '.join(f'{n} {role}' for role, n in table['role'].value_counts().items())}")
    verdict = "within" if per_1000 < TARGET_SECONDS_PER_1000 else "OVER"
    print(f"  {per_1000:.2f} s per 1,000 files: {verdict} the {TARGET_SECONDS_PER_1000:.0f} s target")


if __name__ == "__main__":
    main()
