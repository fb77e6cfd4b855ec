"""Tests of gemred.stacking: rejection and combination against a per-pixel reference, ccdproc,
the DQ hierarchy, variance propagation, level matching and the banded file reader."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits

from gemred import dq as DQ
from gemred.frame import Extension, Frame
from gemred.io import read_frame, write_frame
from gemred.stacking import (
    DQ_HIERARCHY,
    clipped_median,
    level_offsets,
    stack_arrays,
    stack_files,
    stack_frames,
)

# --------------------------------------------------------------------------------------------
# A straightforward reference: loop over pixels, plain Python/numpy in float64.


def _reference_pixel(x, v, d, *, operation, reject_method, lsigma, hsigma, nlow, nhigh, max_iters, mclip):
    n_img = len(x)
    cand = list(range(n_img))
    if d is not None:
        allowed, chosen = 0, None
        for bits in DQ_HIERARCHY:
            allowed |= bits
            chosen = [i for i in range(n_img) if int(d[i]) & ~allowed == 0]
            if chosen:
                break
        cand = chosen or list(range(n_img))
    cand = [i for i in cand if not np.isnan(x[i])]
    if reject_method == "varclip" and v is None:
        reject_method = "sigclip"
    if reject_method == "minmax":
        cand = sorted(cand, key=lambda i: x[i])
        n = len(cand)
        nlo, nhi = int(n * nlow / n_img + 0.001), int(n * nhigh / n_img + 0.001)
        # A median after dropping as many low as high is the median of all: VAR over all.
        median_of = cand if nlo == nhi else cand[nlo : n - nhi]
        cand = cand[nlo : n - nhi]
    elif reject_method in ("sigclip", "varclip"):
        for iteration in range(100 if max_iters is None else max_iters):
            vals = np.array([x[i] for i in cand], dtype=np.float64)
            center = np.median(vals) if (mclip or iteration == 0) else vals.mean()
            if reject_method == "sigclip":
                std = vals.std()
                rej = [i for i in cand if x[i] < center - lsigma * std or x[i] > center + hsigma * std]
            else:
                rej = [
                    i
                    for i in cand
                    if x[i] - center < -lsigma * np.sqrt(v[i]) or x[i] - center > hsigma * np.sqrt(v[i])
                ]
            if not rej or len(rej) == len(cand):
                break
            cand = [i for i in cand if i not in rej]
    vals = np.array([x[i] for i in cand], dtype=np.float64)
    n = len(cand)
    out_dq = 0
    for i in cand:
        out_dq |= 0 if d is None else int(d[i])
    mean_var = None if v is None else np.mean([v[i] for i in cand])
    if operation == "wtmean" and v is not None:
        w = np.array([1.0 / v[i] for i in cand])
        return (vals * w).sum() / w.sum(), 1.0 / w.sum(), out_dq
    if operation in ("mean", "wtmean"):
        return vals.mean(), None if v is None else mean_var / n, out_dq
    svals = np.sort(vals)
    out = np.median(vals) if operation == "median" else svals[(n - 1) // 2]
    if reject_method == "minmax":
        mean_var, n = (None if v is None else np.mean([v[i] for i in median_of])), len(median_of)
    return out, None if v is None else np.pi / 2 * mean_var / n, out_dq


def _reference(sci, var, dq, **kw):
    opts = dict(
        operation="mean", reject_method="sigclip", lsigma=3.0, hsigma=3.0, nlow=0, nhigh=0, max_iters=None
    )
    opts["mclip"] = True
    opts.update(kw)
    n_img, ny, nx = sci.shape
    out = np.empty((ny, nx))
    out_var = np.empty((ny, nx))
    out_dq = np.empty((ny, nx), dtype=np.uint16)
    for y in range(ny):
        for x in range(nx):
            o, v, d = _reference_pixel(
                sci[:, y, x],
                None if var is None else var[:, y, x],
                None if dq is None else dq[:, y, x],
                **opts,
            )
            out[y, x], out_dq[y, x] = o, d
            out_var[y, x] = np.nan if v is None else v
    return out, out_var, out_dq


def _stack(rng, n_img=9, shape=(12, 15), *, outliers=True, flags=True):
    """Gaussian frames with per-frame noise, cosmic rays, and a sprinkling of DQ flags."""
    sigma = rng.uniform(2.0, 4.0, n_img)[:, None, None]
    sci = (100.0 + sigma * rng.standard_normal((n_img, *shape))).astype(np.float32)
    var = np.broadcast_to(sigma**2, sci.shape).astype(np.float32)
    dq = np.zeros(sci.shape, dtype=np.uint16)
    if outliers:
        hits = rng.random(sci.shape) < 0.05
        sci[hits] += rng.uniform(50, 500, hits.sum()).astype(np.float32)
    if flags:
        bits = np.array(
            [DQ.BAD_PIXEL, DQ.SATURATED, DQ.COSMIC_RAY, DQ.NO_DATA, DQ.UNILLUMINATED, DQ.NON_LINEAR],
            dtype=np.uint16,
        )
        flagged = rng.random(sci.shape) < 0.15
        dq[flagged] = rng.choice(bits, flagged.sum())
        dq[:, 0, 0] = DQ.NO_DATA  # every input flagged: the last level of the hierarchy
        dq[:-1, 0, 1] = DQ.BAD_PIXEL  # only one input left at level 0
    return sci, var, dq


CASES = [
    (op, rej)
    for op in ("mean", "median", "wtmean", "lmedian")
    for rej in ("none", "minmax", "sigclip", "varclip")
]


@pytest.mark.parametrize(("operation", "reject_method"), CASES)
@pytest.mark.parametrize("n_img", [4, 9])
def test_matches_reference(operation, reject_method, n_img):
    rng = np.random.default_rng(n_img)
    sci, var, dq = _stack(rng, n_img)
    kw = dict(operation=operation, reject_method=reject_method, nlow=1, nhigh=1)
    out, out_var, out_dq = stack_arrays(sci, var, dq, **kw)
    ref, ref_var, ref_dq = _reference(sci, var, dq, **kw)
    assert out.dtype == np.float32 and out_var.dtype == np.float32 and out_dq.dtype == np.uint16
    np.testing.assert_allclose(out, ref, rtol=2e-6)
    np.testing.assert_allclose(out_var, ref_var, rtol=2e-6)
    np.testing.assert_array_equal(out_dq, ref_dq)


@pytest.mark.parametrize("reject_method", ["sigclip", "varclip"])
@pytest.mark.parametrize(("mclip", "max_iters"), [(False, None), (True, 1), (False, 2)])
def test_clipping_options_match_reference(reject_method, mclip, max_iters):
    rng = np.random.default_rng(3)
    sci, var, dq = _stack(rng, 12, flags=False)
    kw = dict(reject_method=reject_method, mclip=mclip, max_iters=max_iters, lsigma=2.0, hsigma=2.5)
    out, out_var, out_dq = stack_arrays(sci, var, dq, **kw)
    ref, ref_var, _ = _reference(sci, var, dq, **kw)
    np.testing.assert_allclose(out, ref, rtol=2e-6)
    np.testing.assert_allclose(out_var, ref_var, rtol=2e-6)


def test_large_stack_and_no_var_or_dq():
    """More inputs than the sorting network handles (np.sort path); no VAR, no DQ."""
    rng = np.random.default_rng(5)
    sci, _, _ = _stack(rng, 40, shape=(6, 7), flags=False)
    for operation in ("mean", "median"):
        out, out_var, out_dq = stack_arrays(sci, operation=operation, reject_method="varclip")
        ref, _, _ = _reference(sci, None, None, operation=operation, reject_method="sigclip")
        np.testing.assert_allclose(out, ref, rtol=2e-6)
        assert out_var is None
        assert not out_dq.any()


def test_against_ccdproc():
    ccdproc = pytest.importorskip("ccdproc")
    rng = np.random.default_rng(11)
    sci, _, _ = _stack(rng, 10, shape=(30, 40), flags=False)
    images = [ccdproc.CCDData(s, unit="adu") for s in sci]

    combiner = ccdproc.Combiner(images)
    combiner.sigma_clipping(low_thresh=3, high_thresh=3, func=np.ma.median, dev_func=np.ma.std)
    expected = combiner.average_combine().data
    out, _, _ = stack_arrays(sci, reject_method="sigclip", max_iters=1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)

    combiner = ccdproc.Combiner(images)
    combiner.clip_extrema(nlow=2, nhigh=1)
    expected = combiner.average_combine().data
    out, _, _ = stack_arrays(sci, reject_method="minmax", nlow=2, nhigh=1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)

    combiner = ccdproc.Combiner(images)
    expected = combiner.median_combine().data
    out, _, _ = stack_arrays(sci, operation="median", reject_method="none")
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_cosmic_rays_rejected():
    rng = np.random.default_rng(2)
    truth = 100.0
    sci = (truth + 3.0 * rng.standard_normal((15, 64, 64))).astype(np.float32)
    var = np.full_like(sci, 9.0)
    hits = rng.random(sci.shape) < 0.03
    sci[hits] += rng.uniform(300, 3000, hits.sum()).astype(np.float32)
    # varclip knows the noise, so it removes any number of cosmic rays.
    out, _, _ = stack_arrays(sci, var, reject_method="varclip")
    assert np.abs(out - truth).max() < 4.0
    # sigclip measures the scatter from the data: one hit among 15 always goes.
    out, _, _ = stack_arrays(sci, var, reject_method="sigclip")
    single = hits.sum(axis=0) <= 1
    assert np.abs(out - truth)[single].max() < 4.0
    plain, _, _ = stack_arrays(sci, var, reject_method="none")
    assert np.abs(plain - truth).max() > 15.0


def _pixel(values, flags, **kw):
    sci = np.array(values, dtype=np.float32)[:, None, None]
    dq = np.array(flags, dtype=np.uint16)[:, None, None]
    out, _, out_dq = stack_arrays(sci, np.ones_like(sci), dq, **kw)
    return float(out[0, 0]), int(out_dq[0, 0])


def test_dq_hierarchy():
    # Bad pixels are left out; the result is clean.
    assert _pixel([1, 2, 3, 100], [0, 0, 0, DQ.BAD_PIXEL], reject_method="none") == (2.0, 0)
    # Saturated / non-linear pixels are used and flag the output.
    assert _pixel([1, 2, 3], [0, DQ.SATURATED, DQ.NON_LINEAR], reject_method="none") == (2.0, 6)
    # Nothing clean: cosmic rays come before bad pixels, which come before no_data.
    flags = [DQ.COSMIC_RAY, DQ.BAD_PIXEL, DQ.COSMIC_RAY | DQ.SATURATED, DQ.NO_DATA]
    assert _pixel([1, 2, 3, 4], flags, reject_method="none") == (2.0, DQ.COSMIC_RAY | DQ.SATURATED)
    flags = [DQ.OVERLAP, DQ.BAD_PIXEL, DQ.NO_DATA]
    assert _pixel([1, 2, 3], flags, reject_method="none") == (1.0, DQ.OVERLAP)
    flags = [DQ.UNILLUMINATED, DQ.BAD_PIXEL | DQ.UNILLUMINATED, DQ.NO_DATA]
    assert _pixel([1, 2, 3], flags, reject_method="none") == (1.5, DQ.BAD_PIXEL | DQ.UNILLUMINATED)
    assert _pixel([1, 2, 3], [DQ.NO_DATA] * 3, reject_method="none") == (2.0, DQ.NO_DATA)
    # apply_dq=False uses everything; the output DQ still says what was used.
    assert _pixel([1, 2, 6], [0, 0, DQ.BAD_PIXEL], reject_method="none", apply_dq=False) == (3.0, 1)


def test_output_dq_only_from_survivors():
    values = [10, 10.5, 9.5, 10.2, 9.8, 10.1, 9.9, 1000]
    flags = [0] * 7 + [DQ.SATURATED]
    out, out_dq = _pixel(values, flags, reject_method="sigclip")
    assert out == pytest.approx(np.mean(values[:7]))
    assert out_dq == 0
    out, out_dq = _pixel(values, flags, reject_method="minmax", nhigh=1)
    assert out_dq == 0
    _, out_dq = _pixel(values, flags, reject_method="minmax", nlow=1)
    assert out_dq == DQ.SATURATED


def test_minmax_counts_scale_with_good_pixels():
    # 6 inputs, nlow=nhigh=2; 3 are flagged so 3 remain: int(3 * 2 / 6 + 0.001) = 1 each end.
    values = [1, 2, 3, 50, 60, 70]
    flags = [0, 0, 0, DQ.BAD_PIXEL, DQ.BAD_PIXEL, DQ.BAD_PIXEL]
    assert _pixel(values, flags, reject_method="minmax", nlow=2, nhigh=2) == (2.0, 0)
    with pytest.raises(ValueError, match="nlow=3"):
        _pixel(values, flags, reject_method="minmax", nlow=3, nhigh=3)


def test_bad_options():
    sci = np.zeros((3, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="operation"):
        stack_arrays(sci, operation="sum")
    with pytest.raises(ValueError, match="reject_method"):
        stack_arrays(sci, reject_method="avsigclip")
    with pytest.raises(ValueError, match="shape"):
        stack_arrays(sci, np.zeros((3, 2, 3), dtype=np.float32))


def test_variance_of_mean_matches_scatter():
    rng = np.random.default_rng(7)
    n_img, shape = 10, (200, 200)
    sigma = rng.uniform(1.0, 5.0, n_img)[:, None, None]
    sci = (sigma * rng.standard_normal((n_img, *shape))).astype(np.float32)
    var = np.broadcast_to(sigma**2, sci.shape).astype(np.float32)
    out, out_var, _ = stack_arrays(sci, var, reject_method="none")
    np.testing.assert_allclose(out_var, np.mean(sigma**2) / n_img, rtol=1e-6)
    chi2 = np.mean(out.astype(np.float64) ** 2 / out_var)
    assert chi2 == pytest.approx(1.0, abs=0.02)
    # Clipping Gaussian data at 3 sigma barely changes this.
    out, out_var, _ = stack_arrays(sci, var, reject_method="varclip")
    assert np.mean(out.astype(np.float64) ** 2 / out_var) == pytest.approx(1.0, abs=0.04)
    # The inverse-variance weighted mean is better, and its variance says so.
    wt, wt_var, _ = stack_arrays(sci, var, operation="wtmean", reject_method="none")
    np.testing.assert_allclose(wt_var, 1.0 / np.sum(1.0 / sigma**2), rtol=1e-5)
    assert np.mean(wt.astype(np.float64) ** 2 / wt_var) == pytest.approx(1.0, abs=0.02)
    assert np.var(wt) < np.var(out)
    # The median's variance carries Laplace's pi/2.
    med, med_var, _ = stack_arrays(sci, var, operation="median", reject_method="none")
    np.testing.assert_allclose(med_var, np.pi / 2 * np.mean(sigma**2) / n_img, rtol=1e-6)


def test_wtmean_weights():
    sci = np.array([[[1.0]], [[4.0]]], dtype=np.float32)
    var = np.array([[[1.0]], [[2.0]]], dtype=np.float32)
    out, out_var, _ = stack_arrays(sci, var, operation="wtmean", reject_method="none")
    assert out[0, 0] == pytest.approx((1 / 1 + 4 / 2) / (1 + 1 / 2))
    assert out_var[0, 0] == pytest.approx(1 / 1.5)
    out, out_var, _ = stack_arrays(sci, operation="wtmean", reject_method="none")
    assert out[0, 0] == pytest.approx(2.5)
    assert out_var is None


# --------------------------------------------------------------------------------------------
# Frames and files


def _frames(rng, n_img=5, shape=(40, 30), *, offsets=None, scales=None, n_ext=2):
    frames = []
    base = rng.uniform(500, 1500, (n_ext, *shape)).astype(np.float32)
    for i in range(n_img):
        extensions = []
        for e in range(n_ext):
            s = 1.0 if scales is None else scales[i]
            z = 0.0 if offsets is None else offsets[i]
            sci = (base[e] * s + z + rng.standard_normal(shape)).astype(np.float32)
            dq = np.where(rng.random(shape) < 0.05, DQ.BAD_PIXEL, 0).astype(np.uint16)
            dq[0, :3] = DQ.NO_DATA
            header = fits.Header({"EXTNAME": "SCI", "BUNIT": "electron", "TESTEXT": e})
            extensions.append(Extension(sci, header, var=np.full(shape, s * s, np.float32), dq=dq))
        phu = fits.Header({"INSTRUME": "GMOS-N", "OBJECT": "test", "FRAMENUM": i})
        frames.append(Frame(phu, extensions, f"N20240101S{i + 1:04d}"))
    return frames, base


def test_zero_and_scale_recover_injected_levels():
    rng = np.random.default_rng(4)
    offsets = np.array([0.0, 35.0, -12.5, 80.0, 3.0])
    frames, base = _frames(rng, offsets=offsets)
    samples = [(f[0].sci, f[0].dq) for f in frames]
    _, found = level_offsets(samples, zero=True)
    np.testing.assert_allclose(found, -offsets, atol=0.25)
    stacked = stack_frames(frames, zero=True)
    good = stacked[0].dq == 0
    # Every frame brought to the frames' mean level.
    assert np.abs(stacked[0].sci - base[0] - offsets.mean())[good].mean() < 0.5
    unmatched = stack_frames(frames)
    assert np.abs(unmatched[0].sci - base[0])[good].mean() > 10

    scales = np.array([1.0, 1.2, 0.8, 1.5, 0.95])
    frames, base = _frames(rng, scales=scales)
    found, _ = level_offsets([(f[0].sci, f[0].dq) for f in frames], scale=True)
    np.testing.assert_allclose(found, 1 / scales, rtol=0.01)
    stacked = stack_frames(frames, scale=True, statsec="[1:30,1:40]")
    good = stacked[1].dq == 0
    assert np.abs(stacked[1].sci / base[1] - 1)[good].mean() < 0.002
    # VAR is scaled with the data: every input now has VAR 1, so the stack has about 1/N.
    assert np.median(stacked[1].var) == pytest.approx(1 / 5, rel=0.05)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipped_median_is_astropys_sigma_clipped_median(dtype):
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(11)
    for size, sources in [(200_001, 5000), (50_000, 20_000), (999, 0), (2, 0)]:
        values = rng.normal(4870.0, 30.0, size)
        values[:sources] += rng.exponential(400.0, sources)
        values = values.astype(dtype)
        for sigma, maxiters in [(3.0, 10), (2.0, 1), (2.5, 3)]:
            expected = float(sigma_clipped_stats(values, sigma=sigma, maxiters=maxiters)[1])
            assert clipped_median(values, sigma=sigma, maxiters=maxiters) == expected
        if sources:
            # Sources pull the plain median up; the clipping takes much of that away.
            assert float(np.median(values)) - clipped_median(values) > 0.5
    assert np.isnan(clipped_median(np.array([], dtype)))
    assert clipped_median(np.arange(10)) == 4.5


def test_stack_frames_output():
    rng = np.random.default_rng(8)
    frames, _ = _frames(rng, n_img=4)
    out = stack_frames(frames, operation="median", reject_method="minmax", nlow=1, nhigh=1)
    assert out.root == "N20240101S0001"
    assert out.phu["NCOMBINE"] == 4 and "STACKFRM" in out.phu and out.phu["FRAMENUM"] == 0
    assert [e.header["TESTEXT"] for e in out] == [0, 1]
    assert out[0].dq[0, 0] == DQ.NO_DATA and out[0].sci.dtype == np.float32
    direct = stack_arrays(
        np.stack([f[1].sci for f in frames]),
        np.stack([f[1].var for f in frames]),
        np.stack([f[1].dq for f in frames]),
        operation="median",
        reject_method="minmax",
        nlow=1,
        nhigh=1,
    )
    for got, expected in zip((out[1].sci, out[1].var, out[1].dq), direct, strict=True):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="shape"):
        stack_frames([frames[0], Frame(frames[1].phu, frames[1].extensions[:1], "x")])
    with pytest.raises(ValueError, match="outside"):
        stack_frames(frames, zero=True, statsec="[1:30,1:41]")
    with pytest.raises(ValueError, match="no frames"):
        stack_frames([])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"zero": True, "memory_mb": 0.05},
        {"scale": True, "reject_method": "varclip", "statsec": "[5:25,10:30]"},
        {"zero": True, "operation": "median", "reject_method": "minmax", "nlow": 1, "nhigh": 1},
        {"operation": "wtmean", "reject_method": "none", "memory_mb": 0.01},
    ],
)
def test_stack_files_identical_to_stack_frames(tmp_path, kwargs):
    rng = np.random.default_rng(9)
    frames, _ = _frames(rng, n_img=6, offsets=rng.uniform(-20, 20, 6))
    paths = []
    for frame in frames:
        paths.append(write_frame(frame, tmp_path / f"{frame.root}_flat.fits"))
    frames = [read_frame(p) for p in paths]
    from_memory = stack_frames(frames, **kwargs)
    from_files = stack_files(paths, **kwargs)
    assert from_files.root == from_memory.root
    assert from_files.phu["NCOMBINE"] == 6
    for a, b in zip(from_memory, from_files, strict=True):
        np.testing.assert_array_equal(a.sci, b.sci)
        np.testing.assert_array_equal(a.var, b.var)
        np.testing.assert_array_equal(a.dq, b.dq)
        assert a.header["TESTEXT"] == b.header["TESTEXT"]


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, shutil, sys
    from pathlib import Path
    import numpy as np
    from astropy.io import fits
    from gemred.frame import Extension, Frame
    from gemred.io import write_frame
    from gemred.stacking import stack_files

    folder = Path(sys.argv[1])
    sci = np.random.default_rng(0).normal(100, 3, (2000, 2000)).astype(np.float32)
    ext = Extension(sci, fits.Header(), var=np.full_like(sci, 9), dq=np.zeros(sci.shape, np.uint16))
    first = write_frame(Frame(fits.Header({"INSTRUME": "GMOS-N"}), [ext], "f"), folder / "f00.fits")
    del sci, ext
    paths = [first] + [shutil.copy(first, folder / f"f{i:02d}.fits") for i in range(1, 40)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = stack_files(paths, memory_mb=200, reject_method="sigclip", zero=True)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert abs(float(np.median(out[0].sci)) - 100) < 0.1
    print((after - before) / 1024)
    """
)


def test_stack_files_memory_bounded(tmp_path):
    """40 frames of 2000 x 2000 (640 MB of SCI+VAR+DQ) within a 200 MB budget, offsets measured
    (their 512 sample rows of all 40 frames at once would be 410 MB)."""
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    growth_mb = float(result.stdout.split()[-1])
    assert growth_mb < 400


@pytest.mark.parametrize(("n_img", "low", "high"), [(3, 0.80, 0.90), (5, 0.87, 0.95), (7, 0.90, 0.97)])
def test_median_after_symmetric_minmax_var_matches_its_scatter(n_img, low, high):
    """Dropping one input at each end leaves the median of all N, whose variance is about
    pi/2 sigma^2 / N (Laplace's factor overstates it a little for few inputs: the exact
    values are 0.449, 0.287 and 0.210 sigma^2 for 3, 5 and 7); VAR taken over the N - 2
    survivors would put the ratio at 0.29, 0.55 and 0.67."""
    rng = np.random.default_rng(n_img)
    sci = rng.normal(0.0, 2.0, (n_img, 100_000)).astype(np.float32)
    out, var, _ = stack_arrays(
        sci, np.full_like(sci, 4.0), operation="median", reject_method="minmax", nlow=1, nhigh=1
    )
    assert low < np.var(out) / np.mean(var) < high


@pytest.mark.parametrize("n_img", [3, 6, 7])
def test_symmetric_minmax_median_shortcut_is_exact(n_img):
    """The median after minmax with nlow = nhigh is taken without sorting VAR and DQ; where a
    good input is flagged the rejection is done: SCI and DQ are the rejection's bit for bit,
    VAR to float32 rounding."""
    from gemred.stacking import _check_options, _combine_block

    rng = np.random.default_rng(n_img)
    sci = rng.normal(100.0, 5.0, (n_img, 20_000)).astype(np.float32)
    var = rng.uniform(20.0, 30.0, sci.shape).astype(np.float32)
    dq = np.zeros(sci.shape, np.uint16)
    dq[rng.random(sci.shape) < 0.02] = DQ.NON_LINEAR
    dq[rng.random(sci.shape) < 0.05] = DQ.BAD_PIXEL
    dq[:, :50] = DQ.BAD_PIXEL  # every input bad: the hierarchy's fallback
    sci[0, 60:70] = np.nan
    for op in ("median", "lmedian"):
        opts = _check_options(
            n_img, operation=op, reject_method="minmax", lsigma=3.0, hsigma=3.0, nlow=1, nhigh=1,
            max_iters=None, mclip=True, apply_dq=True,
        )  # fmt: skip
        fast = _combine_block(sci, var, dq, opts)
        exact = _combine_block(sci, var, dq, opts, shortcut=False)
        np.testing.assert_array_equal(fast[0], exact[0])
        np.testing.assert_allclose(fast[1], exact[1], rtol=1e-6)  # summed in another order
        np.testing.assert_array_equal(fast[2], exact[2])
