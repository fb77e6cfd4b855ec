"""Accuracy of the full-size GMOS reduction against the simulator's truth (the issue's GMOS criteria).

The tests check these figures on the small ``gmos-starfield`` and ``gmos-fringe`` presets (every
amplifier cropped); this script measures them on full-size runs (twelve 256 x 2112 amplifiers,
binned 2 x 2), with the tests' own helpers, imported from ``tests/test_gmos_calibrations.py``
and ``tests/test_gmos_reduction.py``; where a test computes its figure in the test function
itself, the computation is repeated here with the same masks and limits. Run on purpose (not
collected by pytest); it takes under a minute::

    .venv/bin/python benchmarks/accuracy_gmos_full.py DIR [--fringe DIR2] [--json PATH]

``DIR`` holds ``raw`` (the full-size simulated files, with the simulator's ``truth`` folder)
and ``out`` (the workflow's products), made with the default settings, as the tests'
``starfield`` fixture does; ``REPO`` is this repository. First the raw files::

    REPO/.venv/bin/gemred simulate gmos-starfield --out DIR/raw --size full --seed 1

then, in ``DIR`` (under a minute on 2 cores)::

    REPO/.venv/bin/gemred table raw -o datasets.tsv
    REPO/.venv/bin/snakemake --snakefile REPO/Snakefile --cores 2 \\
        --config datasets=datasets.tsv output_dir=out

``DIR2`` is made likewise from the fringe preset (the tests' ``fringe_products``, default
settings too), starting with ``gemred simulate gmos-fringe --out DIR2/raw --size full --seed 1``.
The workflow records its calibrations in the calibration database (``~/.gemred`` unless
``GEMRED_CALDB`` names another file). The figures, each printed with the number of pixels or
stars it rests on and the criterion:

1. Master bias: rms of (master bias - truth bias structure) per amplifier, at most
   1.15 x read noise / sqrt(number of biases); and sqrt(median VAR) against that noise.
2. Master flat: rms of (flat / its median - truth / its median) on each amplifier's good
   pixels, both normalised on CCD2 (at most 0.5 %).
3. Stack photometry: aperture sums of isolated, unsaturated truth stars with S/N > 50 over
   the truth's prediction (flux_e_per_s x EXPTIME in the aperture): median within 1 % of 1,
   and the mean of ((flux - median ratio x truth) / error)^2 below 2.
4. Astrometry: the stack catalogue's positions of those stars against the truth's (rms under
   0.1 pixel).
5. Noise: std of (SCI - sky) / sqrt(VAR) on source-free sky of the stack (0.9 to 1.1), and of
   the calibrated (flat-fielded) first science frame, per amplifier, sigma-clipped.
6. Cosmic rays: pixels above 5 sigma on the stack's source-free sky covered by any frame (at
   most 2 as in the test, or at full size what noise alone exceeds with probability 0.001);
   also split into sky covered by one frame, by two and by three or more.
7. Bad columns: the BPM's bad pixels flagged in the flat, its bad columns in the first frame's
   mosaic, and the mean of (SCI - sky) / sqrt(VAR) along each in the stack (under 0.5 sigma).
8. Fringe (with ``--fringe``): least-squares amplitude of the true fringe pattern in each
   flat-corrected science frame before and after the fringe correction the workflow applies
   (before within 0.15 of 1, after under 0.1).

The results are also written as JSON (``DIR/accuracy.json`` unless ``--json`` is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS
from scipy.stats import poisson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_gmos_calibrations as tc  # noqa: E402  (the tests folder is not a package)
import test_gmos_reduction as tr  # noqa: E402

from gemred import dq  # noqa: E402
from gemred.instruments import gmos  # noqa: E402
from gemred.io import read_bpm, read_frame  # noqa: E402
from gemred.primitives.fringe import fringe_correct  # noqa: E402
from gemred.recipes.gmos_calibrations import calibrate_science  # noqa: E402
from gemred.sections import parse_section  # noqa: E402

BIAS = tc.BIASES[0].removesuffix(".fits")
FLAT = tc.FLATS[0].removesuffix(".fits")
SCIENCE = tc.SCIENCE.removesuffix(".fits")
FRINGE = "S20190511S0101"  # the fringe preset's first science frame, root of its fringe frame

BIAS_LIMIT = 1.15
VAR_TOLERANCE = 0.02
FLAT_LIMIT = 0.005
FLAT_NORM_LIMIT = 0.005
RATIO_LIMIT = 0.01
CHI2_LIMIT = 2.0
ASTROMETRY_LIMIT = 0.1
NOISE_RANGE = (0.9, 1.1)
MEDIAN_LIMIT = 0.1
CR_SIGMA = 5.0
CR_LIMIT = 2
#: Noise alone puts pixels above 5 sigma too (1.8 expected on the full stack's 6.4 million
#: pixels of sky, 0.02 on the small one's): at full size the count may reach what a Gaussian
#: gives with probability 0.999 (Poisson), if that is above the test's limit.
CR_CHANCE = 0.999
COLUMN_LIMIT = 0.5
INJECTED_TOLERANCE = 0.15
FRINGE_LIMIT = 0.1


def rms(values) -> float:
    """Root mean square."""
    return float(np.sqrt(np.mean(np.square(values))))


def master_bias(raw: Path, out: Path) -> dict:
    """The master bias against the truth structure (test_master_bias_matches_truth_structure)."""
    bias = read_frame(out / "calibrations" / f"{BIAS}_bias.fits")
    dset = gmos.detector_set("GMOS-N", dt.date(2017, 6, 13))
    amps = []
    with fits.open(raw / "truth" / "bias_structure_adu.fits") as truth:
        for i, ext in enumerate(bias):
            cal = gmos.amp_calibration(dset, ext.header["AMPNAME"], "Normal")
            expected = cal.read_noise / cal.gain / np.sqrt(len(tc.BIASES))
            amps.append(
                {
                    "amp": ext.header["AMPNAME"],
                    "pixels": int(ext.sci.size),
                    "expected_adu": float(expected),
                    "rms_adu": rms(ext.sci - truth[i + 1].data),
                    "var_noise_adu": float(np.sqrt(np.median(ext.var))),
                }
            )
    worst = max(a["rms_adu"] / a["expected_adu"] for a in amps)
    var_worst = max(abs(a["var_noise_adu"] / a["expected_adu"] - 1) for a in amps)
    return {
        "ncombine": int(bias.phu["NCOMBINE"]),
        "biases": len(tc.BIASES),
        "amps": amps,
        "worst_rms_over_expected": worst,
        "worst_var_noise_error": var_worst,
        "ok": worst <= BIAS_LIMIT and var_worst <= VAR_TOLERANCE,
    }


def flat_residue(raw: Path, catalogue: str) -> list[np.ndarray]:
    """Pixels lit by stars in two or more twilights (the tests' ``flat_star_residue`` fixture)."""
    stars = pd.read_csv(raw / "truth" / catalogue)
    lit = [tc._star_light(raw / name, stars, threshold=20.0) for name in tc.FLATS]
    return [np.sum(per_frame, axis=0) >= 2 for per_frame in zip(*lit, strict=True)]


def flat_accuracy(flat, truth: list[np.ndarray], residue: list[np.ndarray]) -> dict:
    """The master flat against the truth response (test_master_flat_matches_truth_response)."""
    good = [(ext.dq == 0) & ~lit for ext, lit in zip(flat, residue, strict=True)]
    ccd2 = range(4, 8)
    truth_norm = np.median(np.concatenate([truth[i][good[i]] for i in ccd2]))
    flat_norm = np.median(np.concatenate([flat[i].sci[good[i]] for i in ccd2]))
    amps = []
    for i, ext in enumerate(flat):
        resid = ext.sci[good[i]] / flat_norm - truth[i][good[i]] / truth_norm
        amps.append(
            {
                "pixels": int(good[i].sum()),
                "good": float(good[i].mean()),
                "masked": int(residue[i].sum()),
                "rms": rms(resid),
            }
        )
    worst = max(a["rms"] for a in amps)
    return {
        "flat_norm": float(flat_norm),
        "amps": amps,
        "worst_rms": worst,
        "ok": abs(flat_norm - 1) <= FLAT_NORM_LIMIT
        and worst <= FLAT_LIMIT
        and min(a["good"] for a in amps) > 0.4,
    }


def master_flat(raw: Path, out: Path) -> tuple[dict, list[np.ndarray]]:
    """The master flat's accuracy with the tests' star mask, and with the twilights' own stars."""
    flat = read_frame(out / "calibrations" / f"{FLAT}_flat.fits")
    with fits.open(raw / "truth" / "flat_response_i.fits") as hdul:
        truth = [hdu.data.astype(np.float64) for hdu in hdul[1:]]
    # The tests mask the science field's stars (truth/stars.csv), as the fixture does; the
    # twilights point elsewhere, at the stars of truth/twilight_stars.csv.
    residue = flat_residue(raw, "stars.csv")
    result = flat_accuracy(flat, truth, residue)
    twilight = flat_accuracy(flat, truth, flat_residue(raw, "twilight_stars.csv"))
    result["twilight_stars_masked"] = {k: twilight[k] for k in ("flat_norm", "worst_rms", "ok")}
    result["twilight_stars_masked"]["masked"] = sum(a["masked"] for a in twilight["amps"])
    return result, residue


def calibrated_noise(raw: Path, out: Path, residue: list[np.ndarray]) -> dict:
    """Noise of the first calibrated science frame (test_calibrated_science_noise_model)."""
    bias = read_frame(out / "calibrations" / f"{BIAS}_bias.fits")
    flat = read_frame(out / "calibrations" / f"{FLAT}_flat.fits")
    science = calibrate_science(raw / tc.SCIENCE, bias=bias, flat=flat, bpm_path=raw / tc.BPM)
    frames = pd.read_csv(raw / "truth" / "frames.csv").set_index("filename")
    stars = pd.read_csv(raw / "truth" / "stars.csv")
    with fits.open(raw / "truth" / "flat_response_i.fits") as truth:
        scale = np.median(np.concatenate([truth[i + 1].data[flat[i].dq == 0] for i in range(4, 8)]))
    sky = frames.loc[tc.SCIENCE, "sky_e_per_s_per_pixel"] * frames.loc[tc.SCIENCE, "exptime"] * scale
    lit = tc._star_light(raw / tc.SCIENCE, stars, threshold=0.002 * sky)
    amps = []
    for i, ext in enumerate(science):
        use = (ext.dq == 0) & ~lit[i] & ~residue[i]
        z = (ext.sci[use] - sky) / np.sqrt(ext.var[use])
        _, median, std = sigma_clipped_stats(z, sigma=5.0)
        amps.append({"pixels": int(use.sum()), "median": float(median), "std": float(std)})
    stds = [a["std"] for a in amps]
    worst_median = max(abs(a["median"]) for a in amps)
    return {
        "amps": amps,
        "std_range": [min(stds), max(stds)],
        "worst_median": worst_median,
        "ok": NOISE_RANGE[0] <= min(stds) and max(stds) <= NOISE_RANGE[1] and worst_median < MEDIAN_LIMIT,
    }


def photometry(raw: Path, stack, out: Path) -> tuple[dict, pd.DataFrame]:
    """Aperture photometry of isolated truth stars (test_stack_photometry_matches_truth and
    test_stack_photometric_scatter_matches_variance)."""
    good = tr._photometry(raw, stack, out)
    ratio = good.flux / good.true
    median = float(np.median(ratio))
    chi2 = float(np.mean(((good.flux - median * good.true) / good.fluxerr) ** 2))
    return {
        "stars": len(good),
        "median_ratio": median,
        "ratio_quartiles": [float(q) for q in np.percentile(ratio, [25, 75])],
        "snr_range": [float((good.flux / good.fluxerr).min()), float((good.flux / good.fluxerr).max())],
        "chi2": chi2,
        "ok": len(good) >= 5 and abs(median - 1) <= RATIO_LIMIT and chi2 < CHI2_LIMIT,
    }, good


def astrometry(stack, good: pd.DataFrame) -> dict:
    """The stack catalogue's positions against the truth (test_stack_astrometry_matches_truth)."""
    offsets = tr._matched_offsets(stack[0].objcat, good)
    total = float(np.sqrt(np.mean(np.sum(offsets**2, axis=1))))
    return {
        "stars": len(good),
        "matched": len(offsets),
        "catalogue": len(stack[0].objcat),
        "mean_offset_px": [float(v) for v in offsets.mean(axis=0)],
        "rms_px": total,
        "ok": len(offsets) >= 5 and total < ASTROMETRY_LIMIT,
    }


def stack_noise(raw: Path, stack, out: Path) -> dict:
    """Noise and cosmic rays on the stack's source-free sky
    (test_stack_noise_matches_variance_and_has_no_cosmic_rays)."""
    ext = stack[0]
    stars = tr._truth_pixels(raw, ext.header)
    sky = (ext.dq == 0) & ~tr._star_mask(ext.shape, stars, float(stack.phu["EXPTIME"]), level=0.3)
    normalised = (ext.sci - tr._background(ext))[sky] / np.sqrt(ext.var[sky])
    std = float(np.std(normalised))
    frames = pd.read_csv(raw / "truth" / "frames.csv")
    injected = frames[frames.object == "starfield"].cosmic_rays
    coverage = tr._coverage(out, ext)[sky]
    overlap = coverage >= 1
    high = int(np.sum(normalised[overlap] > CR_SIGMA))
    tail = 0.5 * math.erfc(CR_SIGMA / math.sqrt(2))  # a Gaussian's share above 5 sigma
    limit = max(CR_LIMIT, int(poisson.ppf(CR_CHANCE, overlap.sum() * tail)))
    # Where one or two frames cover the sky the stack's median cannot single out a cosmic ray:
    # the frame's own neighbourhood, or the lower of the two, is the reference there.
    by_coverage = {
        name: {
            "pixels": int(where.sum()),
            "above_5_sigma": int(np.sum(normalised[where] > CR_SIGMA)),
            "gaussian_expectation": float(where.sum() * tail),
        }
        for name, where in (("1", coverage == 1), ("2", coverage == 2), ("3+", coverage >= 3))
    }
    return {
        "noise": {
            "pixels": int(sky.sum()),
            "share": float(sky.mean()),
            "std": std,
            "ok": sky.sum() > 5000 and NOISE_RANGE[0] < std < NOISE_RANGE[1],
        },
        "cosmic_rays": {
            "injected": int(injected.sum()),
            "frames_with_cosmic_rays": int((injected > 0).sum()),
            "pixels": int(overlap.sum()),
            "above_5_sigma": high,
            "gaussian_expectation": float(overlap.sum() * tail),
            "max_sigma": float(normalised[overlap].max()),
            "below_minus_5_sigma": int(np.sum(normalised[overlap] < -CR_SIGMA)),
            "by_coverage": by_coverage,
            "limit": limit,
            "ok": (injected > 0).all() and overlap.sum() > 5000 and high <= limit,
        },
    }


def bad_columns(raw: Path, stack, out: Path) -> dict:
    """Bad pixels flagged in the flat (test_master_flat_flags_bad_columns_and_dead_pixels), bad
    columns flagged in the mosaic and flat in the stack (test_bad_columns_are_flagged_...)."""
    flat = read_frame(out / "calibrations" / f"{FLAT}_flat.fits")
    bpm = read_bpm(raw / tc.BPM)
    bad_total, weak_total, flat_ok = 0, 0, True
    with fits.open(raw / "truth" / "flat_response_i.fits") as truth:
        for i, ext in enumerate(flat):
            bad = bpm[i].dq[parse_section(bpm[i].header["DATASEC"]).slices()] != 0
            weak = truth[i + 1].data < 0.5  # dead pixels and the 25 % response columns
            bad_total, weak_total = bad_total + int(bad.sum()), weak_total + int(weak.sum())
            flat_ok &= bool(
                np.all(ext.dq[bad] & dq.BAD_PIXEL)
                and np.all(ext.sci[bad] == 1.0)
                and weak.any() == bad.any()
                and np.all(ext.dq[weak] != 0)
            )
    mosaic = read_frame(out / "frames" / f"{SCIENCE}_mosaic.fits")[0]
    covered = (mosaic.dq & dq.NO_DATA) == 0
    bad_fraction = ((mosaic.dq & dq.BAD_PIXEL) != 0).sum(axis=0) / np.maximum(covered.sum(axis=0), 1)
    columns = np.flatnonzero((bad_fraction > 0.9) & (covered.sum(axis=0) > 50))
    ext = stack[0]
    stars = tr._truth_pixels(raw, ext.header)
    sky = ~tr._star_mask(ext.shape, stars, float(stack.phu["EXPTIME"]), level=0.3)
    normalised = (ext.sci - tr._background(ext)) / np.sqrt(np.maximum(ext.var, 1e-6))
    # The test maps each column at the small mosaic's middle row (96); here the full one's.
    middle = mosaic.shape[0] / 2
    world = WCS(mosaic.header).pixel_to_world_values(columns.astype(float), np.full(len(columns), middle))
    xs, _ = WCS(ext.header).world_to_pixel_values(*world)
    means, pixels = [], []
    for x in np.rint(xs).astype(int):
        column = (ext.dq[:, x] & dq.NO_DATA == 0) & sky[:, x]
        pixels.append(int(column.sum()))
        means.append(float(np.mean(normalised[column, x])))
    worst = max(abs(m) for m in means)
    return {
        "flat_bpm_bad_pixels": bad_total,
        "flat_weak_pixels": weak_total,
        "flat_flags_ok": flat_ok,
        "mosaic_bad_columns": [int(c) for c in columns],
        "stack_columns": [int(x) for x in np.rint(xs)],
        "stack_column_pixels": pixels,
        "stack_column_means": means,
        "worst_mean_sigma": worst,
        "ok": flat_ok and len(columns) >= 3 and min(pixels) > 50 and worst < COLUMN_LIMIT,
    }


def fringe(raw: Path, out: Path) -> dict:
    """Fringe amplitude before and after correction (test_fringe_residual_is_under_ten_percent),
    for every science frame; the test measures the first."""
    frames = pd.read_csv(raw / "truth" / "frames.csv").set_index("filename")
    fringe_frame = read_frame(out / "calibrations" / f"{FRINGE}_fringe.fits")
    results = []
    with fits.open(raw / "truth" / "fringe_pattern_z.fits") as truth:
        patterns = [hdu.data.astype(np.float64) for hdu in truth[1:]]
    for filename in frames.index[frames.fringe_e_per_s_per_pixel > 0]:
        name = filename.removesuffix(".fits")
        exptime = frames.loc[filename, "exptime"]
        corrected = read_frame(out / "frames" / f"{name}_flatCorrected.fits")
        # The correction the mosaic_frame job applied before mosaicking (default settings).
        defringed = fringe_correct(corrected, fringe_frame)
        residual_amp, injected_amp = [], []
        pixels = 0
        for ext, after_ext, fr, truth_ext in zip(corrected, defringed, fringe_frame, patterns, strict=True):
            pattern = truth_ext * exptime
            good = (ext.dq == 0) & (fr.dq == 0)
            pixels += int(good.sum())
            before = ext.sci[good].astype(np.float64)
            after = after_ext.sci[good].astype(np.float64)
            p = pattern[good] - pattern[good].mean()
            # Least-squares amplitude of the true pattern in the frame before and after correction.
            for data, amplitudes in ((before, injected_amp), (after, residual_amp)):
                d = data - np.median(data)
                keep = np.abs(d) < 5 * 1.4826 * np.median(np.abs(d))
                amplitudes.append(np.dot(d[keep], p[keep]) / np.dot(p[keep], p[keep]))
        results.append(
            {
                "frame": name,
                "pixels": pixels,
                "scale": float(defringed.phu.get("FRNGSCAL", float("nan"))),
                "injected": float(np.median(injected_amp)),
                "residual": float(np.median(residual_amp)),
                "residual_amps": [float(v) for v in residual_amp],
            }
        )
    worst = max(abs(r["residual"]) for r in results)
    return {
        "frames": results,
        "worst_residual": worst,
        "ok": worst < FRINGE_LIMIT and all(abs(r["injected"] - 1) <= INJECTED_TOLERANCE for r in results),
    }


def report(results: dict) -> None:
    """Print every figure with its sample size and criterion."""

    def verdict(entry: dict) -> str:
        return "ok" if entry["ok"] else "NOT MET"

    b = results["bias"]
    print(
        f"\n1. master bias vs truth structure ({b['ncombine']} biases combined; "
        f"rms <= {BIAS_LIMIT} x RN / sqrt({b['biases']})): {verdict(b)}"
    )
    for a in b["amps"]:
        print(
            f"   {a['amp']}: rms {a['rms_adu']:.3f} ADU = {a['rms_adu'] / a['expected_adu']:.3f} x "
            f"{a['expected_adu']:.3f} over {a['pixels']} pixels; sqrt(median VAR) "
            f"{a['var_noise_adu'] / a['expected_adu']:.3f} x"
        )
    print(
        f"   worst {b['worst_rms_over_expected']:.3f} x; worst sqrt(VAR) error "
        f"{b['worst_var_noise_error']:.2%} (within {VAR_TOLERANCE:.0%})"
    )

    f = results["flat"]
    print(
        f"\n2. master flat vs truth response (rms <= {FLAT_LIMIT:.1%}; CCD2 median within "
        f"{FLAT_NORM_LIMIT} of 1): {verdict(f)}"
    )
    for number, a in enumerate(f["amps"], 1):
        print(
            f"   amp {number:2d}: rms {a['rms']:.4%} over {a['pixels']} pixels ({a['good']:.1%} good, "
            f"{a['masked']} star-lit pixels masked)"
        )
    t = f["twilight_stars_masked"]
    print(
        f"   CCD2 median {f['flat_norm']:.5f}; with the twilights' own stars masked instead "
        f"({t['masked']} pixels): worst rms {t['worst_rms']:.4%}, CCD2 median {t['flat_norm']:.5f}"
    )

    p = results["photometry"]
    print(
        f"\n3. stack photometry of {p['stars']} isolated, unsaturated truth stars with S/N > 50 "
        f"(median within {RATIO_LIMIT:.0%} of 1; chi^2 < {CHI2_LIMIT}): {verdict(p)}"
    )
    print(
        f"   median flux / truth {p['median_ratio']:.4f} (quartiles {p['ratio_quartiles'][0]:.4f}, "
        f"{p['ratio_quartiles'][1]:.4f}); mean chi^2 about it {p['chi2']:.3f}; "
        f"S/N {p['snr_range'][0]:.0f} to {p['snr_range'][1]:.0f}"
    )

    a = results["astrometry"]
    print(
        f"\n4. astrometry: {a['matched']} of those {a['stars']} stars matched within 1 px in the "
        f"stack's {a['catalogue']}-source catalogue (rms < {ASTROMETRY_LIMIT} px): {verdict(a)}"
    )
    print(
        f"   rms {a['rms_px']:.4f} px; mean offset ({a['mean_offset_px'][0]:+.4f}, "
        f"{a['mean_offset_px'][1]:+.4f}) px"
    )

    n = results["noise"]
    print(f"\n5a. stack noise on source-free sky ({NOISE_RANGE[0]} to {NOISE_RANGE[1]}): {verdict(n)}")
    print(f"   (SCI - sky) / sqrt(VAR): std {n['std']:.4f} over {n['pixels']} pixels ({n['share']:.1%})")
    c = results["calibrated_noise"]
    print(
        f"5b. calibrated frame {SCIENCE} noise, per amplifier, 5-sigma clipped "
        f"({NOISE_RANGE[0]} to {NOISE_RANGE[1]}; |median| < {MEDIAN_LIMIT}): {verdict(c)}"
    )
    for number, a in enumerate(c["amps"], 1):
        print(f"   amp {number:2d}: std {a['std']:.4f}, median {a['median']:+.4f} over {a['pixels']} pixels")

    r = results["cosmic_rays"]
    print(
        f"\n6. cosmic rays: {r['injected']} injected in {r['frames_with_cosmic_rays']} frames; pixels above "
        f"{CR_SIGMA:.0f} sigma on sky covered by any frame (at most {r['limit']}, "
        f"what noise alone exceeds with probability {1 - CR_CHANCE:.3f}; the test's {CR_LIMIT} on small "
        f"data): {verdict(r)}"
    )
    print(
        f"   {r['above_5_sigma']} of {r['pixels']} pixels (a Gaussian gives "
        f"{r['gaussian_expectation']:.1f}); highest {r['max_sigma']:.2f} sigma; "
        f"{r['below_minus_5_sigma']} below -{CR_SIGMA:.0f} sigma"
    )
    for name, v in r["by_coverage"].items():
        print(
            f"   covered by {name} frames: {v['above_5_sigma']} of {v['pixels']} pixels "
            f"(a Gaussian gives {v['gaussian_expectation']:.1f})"
        )

    c = results["bad_columns"]
    print(
        f"\n7. bad columns flagged and leaving no artefact (|column mean| < {COLUMN_LIMIT} sigma): "
        f"{verdict(c)}"
    )
    print(
        f"   flat: {c['flat_bpm_bad_pixels']} BPM-bad pixels flagged BAD_PIXEL and set to 1, "
        f"{c['flat_weak_pixels']} weak-response pixels flagged: {c['flat_flags_ok']}"
    )
    print(f"   mosaic: {len(c['mosaic_bad_columns'])} bad columns {c['mosaic_bad_columns']}")
    print(
        "   stack: "
        + "; ".join(
            f"x {x}: {m:+.3f} sigma over {n} px"
            for x, m, n in zip(
                c["stack_columns"], c["stack_column_means"], c["stack_column_pixels"], strict=True
            )
        )
    )

    if "fringe" in results:
        g = results["fringe"]
        print(
            f"\n8. fringe: amplitude of the true pattern before (within {INJECTED_TOLERANCE} of 1) "
            f"and after correction (under {FRINGE_LIMIT}): {verdict(g)}"
        )
        for r in g["frames"]:
            print(
                f"   {r['frame']}: before {r['injected']:.4f}, after {r['residual']:+.4f} "
                f"(amplifiers {min(r['residual_amps']):+.3f} to {max(r['residual_amps']):+.3f}) "
                f"over {r['pixels']} pixels; scale {r['scale']:.4f}"
            )
    else:
        print("\n8. fringe: not measured (no --fringe folder)")
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()))


def main() -> None:
    """Parse arguments, measure every figure, print them and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="gmos-starfield folder: raw/ (with raw/truth) and out/")
    parser.add_argument("--fringe", type=Path, help="gmos-fringe folder: raw/ (with raw/truth) and out/")
    parser.add_argument("--json", type=Path, help="where to write the figures (default DIR/accuracy.json)")
    args = parser.parse_args()
    raw, out = args.workdir / "raw", args.workdir / "out"
    results: dict = {"workdir": str(args.workdir.resolve()), "seconds": {}}

    def timed(name: str, function, *arguments):
        start = time.perf_counter()
        value = function(*arguments)
        results["seconds"][name] = time.perf_counter() - start
        print(f"{name}: {results['seconds'][name]:.0f} s", flush=True)
        return value

    results["bias"] = timed("bias", master_bias, raw, out)
    results["flat"], residue = timed("flat", master_flat, raw, out)
    results["calibrated_noise"] = timed("calibrated noise", calibrated_noise, raw, out, residue)
    stack = read_frame(out / "science" / f"{SCIENCE}_image.fits")
    results["photometry"], good = timed("photometry", photometry, raw, stack, out)
    results["astrometry"] = timed("astrometry", astrometry, stack, good)
    results.update(timed("stack noise", stack_noise, raw, stack, out))
    results["bad_columns"] = timed("bad columns", bad_columns, raw, stack, out)
    if args.fringe is not None:
        results["fringe_workdir"] = str(args.fringe.resolve())
        results["fringe"] = timed("fringe", fringe, args.fringe / "raw", args.fringe / "out")

    report(results)
    path = args.json or args.workdir / "accuracy.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nfigures: {path}")


if __name__ == "__main__":
    main()
