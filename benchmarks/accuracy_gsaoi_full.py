"""Accuracy of the full-size GSAOI reduction against the simulator's truth (issue 4's criteria).

The tests check these figures on the small ``gsaoi-offsetsky`` preset (four 256 x 256 tiles);
this script measures them on a full-size run (one 4600 x 4600 tile holding all four arrays),
with the tests' own helpers, imported from ``tests/test_gsaoi_reduction.py`` and
``tests/test_sky_correct.py``. Run on purpose (not collected by pytest); it takes a few
minutes::

    .venv/bin/python benchmarks/accuracy_gsaoi_full.py DIR [--seed 1] [--json PATH]

``DIR`` holds ``raw`` (the full-size simulated files, with the simulator's ``truth`` folder)
and ``out`` (the workflow's products). Make them with the GSAOI tutorial's settings, as the
test fixture ``reduced`` does, the standard's magnitude included so that its stack gets a
zero point; ``REPO`` is this repository. First the raw files and ``DIR/settings.yaml``::

    REPO/.venv/bin/gemred simulate gsaoi-offsetsky --out DIR/raw --size full --seed 1

    prepare:
      bad_wcs: fix
    skyCorrect:
      offset_sky: false
    standard_magnitudes:
      "9132": {Kshort: 13.5}

then, in ``DIR`` (about 9 minutes on 2 cores)::

    REPO/.venv/bin/gemred table raw -o datasets.tsv
    REPO/.venv/bin/snakemake --snakefile REPO/Snakefile --cores 2 --configfile settings.yaml \\
        --config datasets=datasets.tsv output_dir=out

``--seed`` must be the simulation's (it rebuilds the observing plan for the sky check). The
figures, each printed with the number of stars or pixels it rests on and the criterion:

1. Flat: rms of (flat / truth response - 1) on each array's good pixels (at most 0.5 %).
2. Sky: the stack's mean background on blank pixels, after the truth's starlight, in units
   of the noise (within 0.05 sigma); per sky-subtracted frame (the nine object frames and
   the four standard frames), the background error and the deepest dark ring 1 to 3 FWHM
   around each array's 20 brightest stars (no ring deeper than 3 sigma).
3. Astrometry: centroids of isolated stars against the truth after one common shift, rms
   over the field and per array of the reference frame (under 0.2 pixel).
4. Photometry: 15-pixel aperture sums of isolated stars against the truth's prediction:
   fitted scale (within 2 %), median ratio and the mean chi-square of the fit (under 2).
5. Noise: standard deviation of SCI / sqrt(VAR) on blank sky (0.9 to 1.15), and of 4 x 4
   block sums over sqrt(VAR sum x VARCORR).
6. Orientation: rotation of the measured star offsets from the truth's East / North offsets
   (under 0.05 degree), and the CD matrix's signs.
7. Standard star: the stack's ``MAGZP`` against the truth's zero point (within 0.02 mag).

The results are also written as JSON (``DIR/accuracy.json`` unless ``--json`` is given).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_gsaoi_reduction as tg  # noqa: E402  (the tests folder is not a package)
import test_sky_correct as ts  # noqa: E402

from gemred.io import read_frame  # noqa: E402
from gemred.simulation import gsaoi as sim  # noqa: E402

FLAT_LIMIT = 0.005
SKY_LIMIT = 0.05
ASTROMETRY_LIMIT = 0.2
PHOTOMETRY_LIMIT = 0.02
CHI2_LIMIT = 2.0
NOISE_RANGE = (0.9, 1.15)
ROTATION_LIMIT = 0.05
ZP_LIMIT = 0.02


def rms(values) -> float:
    """Root mean square."""
    return float(np.sqrt(np.mean(np.square(values))))


def flat_accuracy(raw: Path, out: Path) -> dict:
    """The processed flat against the truth response, per array (as test_gsaoi_calibrations)."""
    flat = read_frame(out / "calibrations" / f"{tg.FLAT}_flat.fits")
    with fits.open(raw / "truth" / "flat_response_Kshort.fits") as hdul:
        response = [hdu.data.astype(np.float64) for hdu in hdul[1:]]
    arrays, pulls = [], []
    for number, (ext, truth) in enumerate(zip(flat, response, strict=True), 1):
        lit = (ext.dq == 0) & (truth > 0)
        ratio = ext.sci[lit] / truth[lit]
        arrays.append(
            {"array": number, "pixels": int(lit.sum()), "lit": float(lit.mean()), "rms": rms(ratio - 1)}
        )
        pulls.append((ext.sci[lit] - truth[lit]) / np.sqrt(ext.var[lit]))
    worst = max(a["rms"] for a in arrays)
    return {
        "arrays": arrays,
        "worst_rms": worst,
        "pull_std": float(np.std(np.concatenate(pulls))),
        "ok": worst <= FLAT_LIMIT,
    }


def blank_sky(stack, stars: pd.DataFrame) -> dict:
    """Background level after the truth's starlight, and noise, on the stack's blank pixels."""
    tiles = []
    ratios, blocks = [], []
    for ext in stack:
        blank = tg._blank(ext, stars)
        background = ext.sci[blank] - tg._starlight(ext, stars, np.nonzero(blank))
        level = float(np.mean(background) / np.sqrt(np.mean(ext.var[blank])))
        ratios.append(ext.sci[blank] / np.sqrt(ext.var[blank]))
        # 4 x 4 block sums: their variance is the summed VAR times VARCORR.
        ny, nx = (n // 4 * 4 for n in ext.shape)
        shape = (ny // 4, 4, nx // 4, 4)
        sci = ext.sci[:ny, :nx].reshape(shape).sum(axis=(1, 3), dtype=np.float64)
        var = ext.var[:ny, :nx].reshape(shape).sum(axis=(1, 3), dtype=np.float64)
        good = blank[:ny, :nx].reshape(shape).all(axis=(1, 3))
        blocks.append(sci[good] / np.sqrt(var[good] * ext.header["VARCORR"]))
        tiles.append(
            {
                "pixels": int(blank.sum()),
                "share": float(blank.mean()),
                "level_sigma": level,
                "level_e": float(np.mean(background)),
                "sigma_e": float(np.sqrt(np.mean(ext.var[blank]))),
                "starlight_removed_e": float(np.mean(ext.sci[blank]) - np.mean(background)),
                "blocks": int(good.sum()),
            }
        )
    ratios, blocks = np.concatenate(ratios), np.concatenate(blocks)
    worst = max(abs(t["level_sigma"]) for t in tiles)
    noise = float(np.std(ratios))
    block_noise = float(np.std(blocks))
    return {
        "sky": {"tiles": tiles, "worst_level_sigma": worst, "ok": worst < SKY_LIMIT},
        "noise": {
            "pixels": int(ratios.size),
            "std": noise,
            "blocks": int(blocks.size),
            "block_std": block_noise,
            "ok": NOISE_RANGE[0] < noise < NOISE_RANGE[1] and NOISE_RANGE[0] < block_noise < NOISE_RANGE[1],
        },
    }


def sky_frames(raw: Path, out: Path, stars: pd.DataFrame, pixels: pd.DataFrame, seed: int) -> dict:
    """Background error, noise and deepest ring of each sky-subtracted frame
    (``_assess`` of tests/test_sky_correct.py, on the whole arrays)."""
    flat = read_frame(out / "calibrations" / f"{tg.FLAT}_flat.fits")
    with fits.open(raw / "truth" / "flat_response_Kshort.fits") as hdul:
        response = [hdu.data.astype(np.float64) for hdu in hdul[1:]]
    truth = {
        "gain": [r / np.where(e.sci > 0, e.sci, np.nan) for r, e in zip(response, flat, strict=True)],
        "frames": pd.read_csv(raw / "truth" / "frames.csv").set_index("filename"),
        "stars": stars,
        "pixels": pixels,
        "plan": {f"{f.filename}.fits": f for f in sim.observing_plan("full", seed)},
    }
    # _assess renders the truth on the small preset's regions; here they are the whole arrays.
    full = SimpleNamespace(
        render_electrons=sim.render_electrons, array_regions=lambda _: sim.array_regions("full")
    )
    frames = []
    with mock.patch.object(ts, "sim", full):
        for root in tg.OBJECT_FRAMES + tg.STANDARD_FRAMES:
            result = read_frame(out / "frames" / f"{root}_skySubtracted.fits")
            frame = read_frame(out / "frames" / f"{root}_flatCorrected.fits")
            for number, a in enumerate(ts._assess(result, frame, f"{root}.fits", truth), 1):
                frames.append({"frame": root, "array": number, **{k: float(v) for k, v in a.items()}})
    table = pd.DataFrame(frames)
    worst = float(table["ring"].min())
    return {
        "frames": frames,
        "worst_ring_sigma": worst,
        "background_sigma_range": [float(table["background"].min()), float(table["background"].max())],
        "noise_range": [float(table["noise"].min()), float(table["noise"].max())],
        "ok": worst > ts.RING_LIMIT,
    }


def astrometry(stack, stars: pd.DataFrame, pixels: pd.DataFrame, raw: Path) -> tuple[dict, pd.DataFrame]:
    """Centroids of isolated stars against the truth (as test_astrometry_across_the_four_arrays)."""
    m = tg._matched(stack, stars)
    m["array"] = 0
    for index, ext in enumerate(stack):
        here = m["tile"] == index
        m.loc[here, "array"] = tg._arrays(ext, stars, pixels, m.loc[here, "x_true"], m.loc[here, "y_true"])
    dx, dy = m["x"] - m["x_true"], m["y"] - m["y_true"]
    m["r"] = np.hypot(dx - dx.mean(), dy - dy.mean())
    per_array = {int(a): {"stars": len(g), "rms": rms(g["r"])} for a, g in m.groupby("array")}
    # The reference frame's linear header WCS (no distortion model) for the same stars.
    ref = pixels[pixels["filename"] == f"{tg.SCIENCE}.fits"].set_index("star_id")
    raw_frame = read_frame(raw / f"{tg.SCIENCE}.fits")
    linear = []
    for tile, star, x_true, y_true in m[["tile", "star", "x_true", "y_true"]].itertuples(index=False):
        if star in ref.index:
            row = ref.loc[star]
            ra, dec = WCS(raw_frame[int(row["ext"]) - 1].header).all_pix2world(row["x"], row["y"], 0)
            x, y = WCS(stack[int(tile)].header).all_world2pix(ra, dec, 0)
            linear.append(np.hypot(x - x_true, y - y_true))
    total = rms(m["r"])
    worst = max(a["rms"] for a in per_array.values())
    result = {
        "stars": len(m),
        "shift_px": [float(dx.mean()), float(dy.mean())],
        "rms_px": total,
        "arrays": per_array,
        "worst_array_rms_px": worst,
        "linear_wcs_stars": len(linear),
        "linear_wcs_rms_px": rms(linear) if linear else float("nan"),
        "ok": total < ASTROMETRY_LIMIT and worst < ASTROMETRY_LIMIT,
    }
    return result, m


def orientation(stack, stars: pd.DataFrame, m: pd.DataFrame) -> dict:
    """Rotation of the measured offsets from the truth's (test_stack_is_north_up_east_left)."""
    tiles = tg._rotation(stack, stars, m)
    arrays = tg._rotation(stack, stars, m, by="array")
    cds = [WCS(ext.header).wcs.cd for ext in stack]
    north_up = all(cd[0, 0] < 0 < cd[1, 1] and cd[0, 1] == 0 == cd[1, 0] for cd in cds)
    angle = float(np.mean(list(tiles.values())))
    return {
        "stars": len(m),
        "angle_deg": angle,
        "arrays_deg": {int(k): float(v) for k, v in arrays.items()},
        "cd_north_up_east_left": north_up,
        "ok": abs(angle) < ROTATION_LIMIT and north_up,
    }


def photometry(stack, stars: pd.DataFrame, pixels: pd.DataFrame) -> dict:
    """Aperture sums of isolated stars against the truth (test_photometry_of_isolated_stars...)."""
    phot = tg._photometry(stack, stars, pixels)
    coef, chi, keep = tg._fit(phot)
    scale, _ = tg._fit_scale(phot)
    tiles = sorted(phot["tile"].unique())
    area = np.pi * tg.APERTURE**2
    level = phot["tile"].map(dict(zip(tiles, coef[1:], strict=True)))
    ratio = (phot["measured"] - level * area) / phot["model"]
    phot["array"] = 0
    for index, ext in enumerate(stack):
        here = phot["tile"] == index
        star = phot.loc[here, "star"].to_numpy()
        x, y = WCS(ext.header).all_world2pix(
            stars["ra_deg"].to_numpy()[star], stars["dec_deg"].to_numpy()[star], 0
        )
        phot.loc[here, "array"] = tg._arrays(ext, stars, pixels, x, y)
    arrays = {
        int(a): {
            "stars": int(keep[on].sum()),
            "median_ratio": float(np.median(ratio[on & keep])),
            "raw_pixel_size": float(phot["scale"][on].median()),
        }
        for a in sorted(phot["array"].unique())
        for on in [(phot["array"] == a).to_numpy()]
    }
    chi2 = float(np.mean(chi[keep] ** 2))
    return {
        "stars": len(phot),
        "kept": int(keep.sum()),
        "scale": scale,
        "levels_e_per_pixel": [float(c) for c in coef[1:]],
        "median_ratio": float(np.median(ratio[keep])),
        "mean_chi2": chi2,
        "reduced_chi2": float(np.sum(chi[keep] ** 2) / (keep.sum() - len(coef))),
        "arrays": arrays,
        "ok": abs(scale - 1.0) <= PHOTOMETRY_LIMIT and 0.5 < chi2 < CHI2_LIMIT,
    }


def zero_point(out: Path, stars: pd.DataFrame) -> dict:
    """The standard's stack zero point against the truth (test_standard_star_zero_point...)."""
    phu = fits.getheader(out / "science" / f"{tg.STANDARD_STACK}_image.fits")
    star = stars[stars["field"] == "standard"].sort_values("mag").iloc[0]
    true_zp = float(star["mag"] + 2.5 * np.log10(star["flux_e_per_s"]))
    if "MAGZP" not in phu:
        return {"true_zp": true_zp, "ok": False, "note": "no MAGZP: run with standard_magnitudes"}
    return {
        "magzp": float(phu["MAGZP"]),
        "magzperr": float(phu["MAGZPERR"]),
        "true_zp": true_zp,
        "difference": float(phu["MAGZP"] - true_zp),
        "ok": abs(phu["MAGZP"] - true_zp) <= ZP_LIMIT and 0 < phu["MAGZPERR"] < 0.01,
    }


def report(results: dict) -> None:
    """Print every figure with its sample size and criterion."""

    def verdict(entry: dict) -> str:
        return "ok" if entry["ok"] else "NOT MET"

    f = results["flat"]
    print(f"\n1. flat vs truth response (rms <= {FLAT_LIMIT:.1%}): {verdict(f)}")
    for a in f["arrays"]:
        print(f"   array {a['array']}: rms {a['rms']:.4%} over {a['pixels']} pixels ({a['lit']:.1%} good)")
    print(f"   (flat - truth) / sqrt(VAR): std {f['pull_std']:.3f}")

    s = results["sky"]
    print(f"\n2a. stack background on blank sky (|level| < {SKY_LIMIT} sigma): {verdict(s)}")
    for t in s["tiles"]:
        print(
            f"   {t['pixels']} blank pixels ({t['share']:.1%}): level {t['level_sigma']:+.4f} sigma "
            f"({t['level_e']:+.2f} e, sigma {t['sigma_e']:.1f} e; "
            f"truth starlight removed {t['starlight_removed_e']:.2f} e)"
        )
    r = results["sky_frames"]
    print(
        f"2b. sky-subtracted frames, deepest ring around the 20 brightest stars of each array "
        f"(> {ts.RING_LIMIT} sigma): {verdict(r)}"
    )
    frames = pd.DataFrame(r["frames"])
    for root, g in frames.groupby("frame", sort=False):
        print(
            f"   {root}: ring {g['ring'].min():+.2f} (arrays {', '.join(f'{v:+.1f}' for v in g['ring'])}); "
            f"background {', '.join(f'{v:+.3f}' for v in g['background'])} sigma; "
            f"noise {g['noise'].min():.3f}-{g['noise'].max():.3f}"
        )

    a = results["astrometry"]
    print(f"\n3. astrometry of {a['stars']} isolated stars (rms < {ASTROMETRY_LIMIT} px): {verdict(a)}")
    print(
        f"   common shift ({a['shift_px'][0]:+.3f}, {a['shift_px'][1]:+.3f}) px; "
        f"rms about it {a['rms_px']:.3f} px"
    )
    for k, v in a["arrays"].items():
        print(f"   array {k}: {v['stars']} stars, rms {v['rms']:.3f} px")
    print(
        f"   linear header WCS instead (no distortion model), {a['linear_wcs_stars']} stars: "
        f"rms {a['linear_wcs_rms_px']:.2f} px"
    )

    p = results["photometry"]
    print(
        f"\n4. photometry of {p['stars']} isolated stars, {p['kept']} kept by the clipped fit: {verdict(p)}"
    )
    print(
        f"   fitted scale {p['scale']:.4f} (within {PHOTOMETRY_LIMIT:.0%} of 1); "
        f"median ratio {p['median_ratio']:.4f}; "
        f"mean chi^2 {p['mean_chi2']:.3f} (reduced {p['reduced_chi2']:.3f}; < {CHI2_LIMIT}); "
        f"level {', '.join(f'{v:+.2f}' for v in p['levels_e_per_pixel'])} e/pixel"
    )
    for k, v in p["arrays"].items():
        print(
            f"   array {k}: {v['stars']} stars, median ratio {v['median_ratio']:.4f}, "
            f"raw pixel {v['raw_pixel_size']:.4f} px"
        )

    n = results["noise"]
    print(f"\n5. noise on blank sky ({NOISE_RANGE[0]} to {NOISE_RANGE[1]}): {verdict(n)}")
    print(f"   SCI / sqrt(VAR): std {n['std']:.4f} over {n['pixels']} pixels")
    print(f"   4x4 block sums / sqrt(VAR sum x VARCORR): std {n['block_std']:.4f} over {n['blocks']} blocks")

    o = results["orientation"]
    print(f"\n6. orientation from {o['stars']} stars (|angle| < {ROTATION_LIMIT} deg): {verdict(o)}")
    print(
        f"   angle {o['angle_deg']:+.4f} deg; per array "
        f"{', '.join(f'{k}: {v:+.4f}' for k, v in o['arrays_deg'].items())}; "
        f"CD North up East left: {o['cd_north_up_east_left']}"
    )

    z = results["zero_point"]
    print(f"\n7. standard star zero point (within {ZP_LIMIT} mag): {verdict(z)}")
    if "magzp" in z:
        print(
            f"   MAGZP {z['magzp']:.4f} +- {z['magzperr']:.4f}, truth {z['true_zp']:.4f}: "
            f"{z['difference']:+.4f} mag"
        )
    else:
        print(f"   {z['note']}")
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()))


def main() -> None:
    """Parse arguments, measure every figure, print them and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="folder holding raw/ (with raw/truth) and out/")
    parser.add_argument("--seed", type=int, default=1, help="the simulation's seed (default 1)")
    parser.add_argument("--json", type=Path, help="where to write the figures (default DIR/accuracy.json)")
    args = parser.parse_args()
    raw, out = args.workdir / "raw", args.workdir / "out"
    stars = pd.read_csv(raw / "truth" / "stars.csv")
    pixels = pd.read_csv(raw / "truth" / "stars_pixels.csv")
    results: dict = {"workdir": str(args.workdir.resolve()), "seconds": {}}

    def timed(name: str, function, *arguments):
        start = time.perf_counter()
        value = function(*arguments)
        results["seconds"][name] = time.perf_counter() - start
        print(f"{name}: {results['seconds'][name]:.0f} s", flush=True)
        return value

    results["flat"] = timed("flat", flat_accuracy, raw, out)
    stack = read_frame(out / "science" / f"{tg.SCIENCE}_image.fits")
    results.update(timed("blank sky", blank_sky, stack, stars))
    results["astrometry"], matched = timed("astrometry", astrometry, stack, stars, pixels, raw)
    results["orientation"] = timed("orientation", orientation, stack, stars, matched)
    results["photometry"] = timed("photometry", photometry, stack, stars, pixels)
    results["zero_point"] = timed("zero point", zero_point, out, stars)
    results["sky_frames"] = timed("sky frames", sky_frames, raw, out, stars, pixels, args.seed)

    report(results)
    path = args.json or args.workdir / "accuracy.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nfigures: {path}")


if __name__ == "__main__":
    main()
