"""The whole GMOS reduction, run by Snakemake on the small simulated tutorial dataset and checked
against the simulator's truth: stack photometry, astrometry, noise, cosmic rays, bad columns;
and the fringe preset's fringe removal.

The workflow runs once per module (``--snakefile`` from another directory, as a user would);
the tests read its products.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sep
from astropy.io import fits
from astropy.wcs import WCS
from workflow_runs import REPO, run_command

from gemred import dq
from gemred.io import read_frame
from gemred.primitives.fringe import fringe_correct
from gemred.provenance import source_hash

SEEING_PIX = 0.75 / (0.0807 * 2)  # gmos-starfield seeing over the binned pixel scale
MOFFAT_BETA = 4.765


def _reduce(raw: Path, root: Path) -> Path:
    """Table and full workflow run, from a working directory outside the repository."""
    table = root / "tables" / "datasets.tsv"
    table.parent.mkdir()
    run_command(["gemred", "table", str(raw), "-o", str(table)], root, timeout=900)
    work = root / "work"
    work.mkdir()
    config = ["--config", f"datasets={table}", "output_dir=products"]
    run_command(
        [
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--cores",
            "2",
            *config,
        ],
        root,
        timeout=900,
    )
    return work / "products"


@pytest.fixture(scope="module")
def starfield(gmos_starfield_small, tmp_path_factory) -> tuple[Path, Path]:
    raw = gmos_starfield_small
    before = {p: p.stat().st_mtime_ns for p in raw.rglob("*")}
    code = source_hash()
    products = _reduce(raw, tmp_path_factory.mktemp("reduce-starfield"))
    (products / "source_hash.txt").write_text(code)
    assert {p: p.stat().st_mtime_ns for p in raw.rglob("*")} == before, "raw files must not change"
    return raw, products


@pytest.fixture(scope="module")
def stack(starfield):
    raw, products = starfield
    frame = read_frame(products / "science" / "N20170614S0201_image.fits")
    return frame


def _moffat_alpha(fwhm: float, beta: float = MOFFAT_BETA) -> float:
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _truth_pixels(raw: Path, header: fits.Header) -> pd.DataFrame:
    stars = pd.read_csv(raw / "truth" / "stars.csv")
    x, y = WCS(header).world_to_pixel_values(stars.ra_deg.to_numpy(), stars.dec_deg.to_numpy())
    return stars.assign(x=x, y=y)


def _star_mask(shape, stars: pd.DataFrame, exptime: float, level: float) -> np.ndarray:
    """Pixels where any truth star's light exceeds ``level`` electrons per pixel."""
    alpha = _moffat_alpha(SEEING_PIX)
    peak = stars.flux_e_per_s.to_numpy() * exptime * (MOFFAT_BETA - 1) / (np.pi * alpha**2)
    radius = alpha * np.sqrt(np.maximum((peak / level) ** (1 / MOFFAT_BETA) - 1, 0)) + 2
    mask = np.zeros(shape, dtype=bool)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for x, y, r in zip(stars.x, stars.y, radius, strict=True):
        if -r < x < shape[1] + r and -r < y < shape[0] + r and r > 0:
            x1, x2 = max(int(x - r), 0), min(int(x + r) + 2, shape[1])
            y1, y2 = max(int(y - r), 0), min(int(y + r) + 2, shape[0])
            mask[y1:y2, x1:x2] |= (xx[:, x1:x2] - x) ** 2 + (yy[y1:y2] - y) ** 2 <= r * r
    return mask


def _background(ext) -> np.ndarray:
    bad = (ext.dq != 0) | ~np.isfinite(ext.sci)
    return sep.Background(ext.sci.astype(np.float64), mask=bad, bw=64, bh=64, fw=3, fh=3).back()


def test_products_are_named_and_placed_as_dragons_does(starfield) -> None:
    _, products = starfield
    assert (products / "calibrations" / "N20170613S0180_bias.fits").is_file()
    assert (products / "calibrations" / "N20170702S0178_flat.fits").is_file()
    assert len(list((products / "frames").glob("N20170614S02*_mosaic.fits"))) == 5
    assert (products / "science" / "N20170614S0201_image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with fits.open(products / "science" / "N20170614S0201_image.fits") as hdul:
        names = [h.name for h in hdul]
        assert names[:4] == ["PRIMARY", "SCI", "VAR", "DQ"] and "OBJCAT" in names
        assert hdul["SCI"].header["BUNIT"] == "electron"
        assert hdul["SCI"].header["BITPIX"] == -32 and hdul["VAR"].header["BITPIX"] == -32
        assert hdul["DQ"].header["BITPIX"] == 16 and hdul["DQ"].header["BZERO"] == 32768  # uint16
        assert WCS(hdul["SCI"].header).has_celestial
        assert len(hdul["OBJCAT"].data) > 20


def test_second_run_has_nothing_to_do(starfield, tmp_path) -> None:
    _, products = starfield
    work = products.parent
    table = work.parent / "tables" / "datasets.tsv"
    proc = run_command(
        [
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--cores",
            "2",
            "-n",
            "--config",
            f"datasets={table}",
            "output_dir=products",
        ],
        tmp_path,
        timeout=900,
    )
    if source_hash() == (products / "source_hash.txt").read_text():
        assert "Nothing to be done" in proc.stdout + proc.stderr
    else:  # the library was edited while the tests ran: its hash param must be the reason
        assert "Params have changed" in proc.stdout


def _fraction_in_aperture(dx: float, dy: float, radius: float, alpha: float, step: float = 0.25) -> float:
    """Fraction of a Moffat star's light, centred (dx, dy) from an aperture's centre, inside it."""
    grid = np.arange(-radius, radius + step, step)
    x, y = np.meshgrid(grid, grid)
    inside = x**2 + y**2 <= radius**2
    profile = (
        (MOFFAT_BETA - 1)
        / (np.pi * alpha**2)
        * (1 + ((x - dx) ** 2 + (y - dy) ** 2) / alpha**2) ** -MOFFAT_BETA
    )
    return float((profile * inside).sum() * step * step)


def _covered_by_every_frame(products: Path, stars: pd.DataFrame, radius: float) -> np.ndarray:
    """Stars whose aperture has data in every input mosaic (none near a gap or strip edge)."""
    covered = np.ones(len(stars), dtype=bool)
    for path in sorted((products / "frames").glob("*_mosaic.fits")):
        ext = read_frame(path)[0]
        x, y = WCS(ext.header).world_to_pixel_values(stars.ra_deg.to_numpy(), stars.dec_deg.to_numpy())
        for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
            x1, x2, y1, y2 = int(xi - radius), int(xi + radius) + 2, int(yi - radius), int(yi + radius) + 2
            if x1 < 0 or y1 < 0 or x2 > ext.shape[1] or y2 > ext.shape[0]:
                covered[i] = False
            elif covered[i]:
                covered[i] = not (ext.dq[y1:y2, x1:x2] & dq.NO_DATA).any()
    return covered


def _photometry(raw: Path, stack, products: Path) -> pd.DataFrame:
    """Aperture photometry of the truth stars in the stack, with the flux the truth predicts there.

    The prediction adds every truth star's light that falls in the aperture; a star is kept as
    isolated when its own light is at least 97% of that prediction, and when every input frame
    covers its aperture (the small files' strips leave many stars half-covered in some frames).
    """
    ext = stack[0]
    exptime = float(stack.phu["EXPTIME"])
    stars = _truth_pixels(raw, ext.header)
    sci = ext.sci.astype(np.float64)
    var = ext.var.astype(np.float64)
    r = 3.0 * SEEING_PIX
    alpha = _moffat_alpha(SEEING_PIX)
    ny, nx = sci.shape
    inside = (stars.x > r + 3) & (stars.x < nx - r - 4) & (stars.y > r + 3) & (stars.y < ny - r - 4)
    # Unsaturated in every input frame: peak well below the 2x2 ADC limit (about 1e5 e-).
    peak = stars.flux_e_per_s * exptime * (MOFFAT_BETA - 1) / (np.pi * alpha**2)
    cand = stars[inside & (peak < 6e4)].copy()
    cand = cand[_covered_by_every_frame(products, cand, r + 2)]
    mask = (ext.dq & (dq.NO_DATA | dq.BAD_PIXEL)) != 0
    # Local sky: median of an annulus's pixels that no truth star lights (a crowded field's
    # unresolved light would bias a mesh background).
    sky = ~mask & ~_star_mask(sci.shape, stars, exptime, level=0.3)
    yy, xx = np.mgrid[:ny, :nx]
    levels, sky_var = [], []
    for x, y in zip(cand.x, cand.y, strict=True):
        x1, x2, y1, y2 = int(x - r - 25), int(x + r + 26), int(y - r - 25), int(y + r + 26)
        box = (slice(max(y1, 0), y2), slice(max(x1, 0), x2))
        d = np.hypot(xx[box] - x, yy[box] - y)
        annulus = (d > r + 4) & sky[box]
        pixels = sci[box][annulus]
        levels.append(np.median(pixels) if pixels.size >= 50 else np.nan)
        # Variance of a median of n pixels: pi/2 times that of their mean.
        sky_var.append(np.pi / 2 * var[box][annulus].mean() / max(pixels.size, 1))
    cand["sky"], cand["sky_var"] = levels, sky_var
    cand = cand[np.isfinite(cand.sky)]
    flux, ferr, flag = sep.sum_circle(sci, cand.x.to_numpy(), cand.y.to_numpy(), r, var=var, mask=mask)
    area, _, _ = sep.sum_circle(np.ones_like(sci), cand.x.to_numpy(), cand.y.to_numpy(), r)
    flux = flux - cand.sky.to_numpy() * area
    # Resampling correlates neighbouring pixels' noise: a sum's variance is VARCORR times the
    # sum of the (per-pixel) VAR it covers.
    varcorr = float(ext.header["VARCORR"])
    ferr = np.sqrt(varcorr * (ferr**2 + area**2 * cand.sky_var.to_numpy()))
    cand["flux"], cand["fluxerr"], cand["flag"] = flux, ferr, flag
    cand = cand[(cand.flag == 0) & (cand.flux / cand.fluxerr > 50)].copy()
    sx, sy = stars.x.to_numpy(), stars.y.to_numpy()
    counts = stars.flux_e_per_s.to_numpy() * exptime
    predicted, own = [], []
    for x, y, total in zip(cand.x, cand.y, cand.flux_e_per_s * exptime, strict=True):
        near = np.hypot(sx - x, sy - y) < r + 6 * SEEING_PIX
        predicted.append(
            sum(
                c * _fraction_in_aperture(a - x, b - y, r, alpha)
                for a, b, c in zip(sx[near], sy[near], counts[near], strict=True)
            )
        )
        own.append(total * _fraction_in_aperture(0.0, 0.0, r, alpha))
    cand["true"] = predicted
    cand["purity"] = np.asarray(own) / np.asarray(predicted)
    return cand[cand.purity > 0.97]


def test_stack_photometry_matches_truth(starfield, stack) -> None:
    raw, products = starfield
    good = _photometry(raw, stack, products)
    assert len(good) >= 5, f"only {len(good)} isolated, fully covered S/N>50 stars"
    ratio = good.flux / good.true
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)


def test_stack_photometric_scatter_matches_variance(starfield, stack) -> None:
    raw, products = starfield
    good = _photometry(raw, stack, products)
    ratio = good.flux / good.true
    # Scatter about the common level, in units of the error the VAR plane predicts.
    chi2 = np.mean(((good.flux - np.median(ratio) * good.true) / good.fluxerr) ** 2)
    assert chi2 < 2.0


def _matched_offsets(cat, good: pd.DataFrame) -> np.ndarray:
    """(dx, dy) in pixels from each truth star of ``good`` to the nearest catalogue source
    within 1 pixel (stars with none are left out)."""
    xs, ys = np.asarray(cat["X_IMAGE"]) - 1.0, np.asarray(cat["Y_IMAGE"]) - 1.0
    offsets = []
    for x, y in zip(good.x, good.y, strict=True):
        d = np.hypot(xs - x, ys - y)
        if d.min() < 1.0:
            offsets.append((xs[d.argmin()] - x, ys[d.argmin()] - y))
    return np.asarray(offsets).reshape(-1, 2)


def test_stack_astrometry_matches_truth(starfield, stack) -> None:
    raw, products = starfield
    good = _photometry(raw, stack, products)
    offsets = _matched_offsets(stack[0].objcat, good)
    assert len(offsets) >= 5
    rms = np.sqrt(np.mean(np.sum(offsets**2, axis=1)))
    assert rms < 0.1, f"astrometric rms {rms:.3f} px"


def _coverage(products: Path, ext) -> np.ndarray:
    """Number of input mosaics with data at each pixel of the stack."""
    yy, xx = np.mgrid[: ext.shape[0], : ext.shape[1]]
    world = WCS(ext.header).pixel_to_world_values(xx.ravel(), yy.ravel())
    count = np.zeros(ext.shape, dtype=int)
    for path in sorted((products / "frames").glob("*_mosaic.fits")):
        mosaic = read_frame(path)[0]
        x, y = WCS(mosaic.header).world_to_pixel_values(*world)
        x, y = np.rint(x).astype(int), np.rint(y).astype(int)
        inside = (x >= 0) & (x < mosaic.shape[1]) & (y >= 0) & (y < mosaic.shape[0])
        has_data = np.zeros(x.size, dtype=bool)
        has_data[inside] = (mosaic.dq[y[inside], x[inside]] & dq.NO_DATA) == 0
        count += has_data.reshape(ext.shape)
    return count


def test_stack_noise_matches_variance_and_has_no_cosmic_rays(starfield, stack) -> None:
    raw, products = starfield
    ext = stack[0]
    stars = _truth_pixels(raw, ext.header)
    sky = (ext.dq == 0) & ~_star_mask(ext.shape, stars, float(stack.phu["EXPTIME"]), level=0.3)
    assert sky.sum() > 5000
    normalised = (ext.sci - _background(ext))[sky] / np.sqrt(ext.var[sky])
    assert 0.9 < np.std(normalised) < 1.1
    # Every input frame had cosmic rays; none may survive above 5 sigma on source-free sky,
    # also where one frame alone covers it (beside the others' chip gaps and at the edges).
    frames = pd.read_csv(raw / "truth" / "frames.csv")
    assert (frames[frames.object == "starfield"].cosmic_rays > 0).all()
    coverage = _coverage(products, ext)[sky]
    assert (coverage == 1).sum() > 1000 and (coverage >= 2).sum() > 5000
    assert int(np.sum(normalised > 5.0)) <= 2


def test_bad_columns_are_flagged_and_leave_no_artefact(starfield, stack) -> None:
    raw, products = starfield
    mosaic = read_frame(products / "frames" / "N20170614S0201_mosaic.fits")[0]
    covered = (mosaic.dq & dq.NO_DATA) == 0
    bad_fraction = ((mosaic.dq & dq.BAD_PIXEL) != 0).sum(axis=0) / np.maximum(covered.sum(axis=0), 1)
    columns = np.flatnonzero((bad_fraction > 0.9) & (covered.sum(axis=0) > 50))
    assert len(columns) >= 3, "the BPM's bad columns are flagged in the mosaic"
    ext = stack[0]
    stars = _truth_pixels(raw, ext.header)
    sky = ~_star_mask(ext.shape, stars, float(stack.phu["EXPTIME"]), level=0.3)
    normalised = (ext.sci - _background(ext)) / np.sqrt(np.maximum(ext.var, 1e-6))
    world = WCS(mosaic.header).pixel_to_world_values(columns.astype(float), np.full(len(columns), 96.0))
    xs, _ = WCS(ext.header).world_to_pixel_values(*world)
    for x in np.rint(xs).astype(int):
        column = (ext.dq[:, x] & dq.NO_DATA == 0) & sky[:, x]
        assert column.sum() > 50
        assert abs(np.mean(normalised[column, x])) < 0.5


@pytest.fixture(scope="module")
def fringe_products(gmos_fringe_small, tmp_path_factory) -> tuple[Path, Path]:
    return gmos_fringe_small, _reduce(gmos_fringe_small, tmp_path_factory.mktemp("reduce-fringe"))


def test_fringe_residual_is_under_ten_percent(fringe_products) -> None:
    raw, products = fringe_products
    truth = fits.open(raw / "truth" / "fringe_pattern_z.fits")
    frames = pd.read_csv(raw / "truth" / "frames.csv").set_index("filename")
    name = "S20190511S0101"
    exptime = frames.loc[f"{name}.fits", "exptime"]
    corrected = read_frame(products / "frames" / f"{name}_flatCorrected.fits")
    fringe = read_frame(products / "calibrations" / "S20190511S0101_fringe.fits")
    # The correction the mosaic_frame job applied before mosaicking (default settings).
    defringed = fringe_correct(corrected, fringe)
    residual_amp, injected_amp = [], []
    for ext, out, fr, tr in zip(corrected, defringed, fringe, truth[1:], strict=True):
        pattern = tr.data.astype(np.float64) * exptime
        good = (ext.dq == 0) & (fr.dq == 0)
        before = ext.sci[good].astype(np.float64)
        after = out.sci[good].astype(np.float64)
        p = pattern[good] - pattern[good].mean()
        # Least-squares amplitude of the true pattern in the frame before and after correction.
        for data, out in ((before, injected_amp), (after, residual_amp)):
            d = data - np.median(data)
            keep = np.abs(d) < 5 * 1.4826 * np.median(np.abs(d))
            out.append(np.dot(d[keep], p[keep]) / np.dot(p[keep], p[keep]))
    assert np.median(injected_amp) == pytest.approx(1.0, abs=0.15)
    assert abs(np.median(residual_amp)) < 0.1
