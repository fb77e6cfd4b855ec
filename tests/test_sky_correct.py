"""Sky frames and sky subtraction (gemred.primitives.sky): tiny frames, and the small simulated
``gsaoi-offsetsky`` dataset checked against its truth (sky levels, star positions and fluxes).

Truth checks work on the residual ``SCI - truth star light`` of a sky-subtracted frame: its
mean on source-free pixels (truth star light below 0.05 sigma) is the error of the subtracted
sky level, and its mean in an annulus around a bright star, relative to that level, is the
depth of a dark halo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from scipy import ndimage

from gemred import dq
from gemred.frame import Extension, Frame
from gemred.io import GemredInputError, read_frame, write_frame
from gemred.primitives.sky import (
    SKY_DEFAULTS,
    _dilate,
    background_levels,
    make_sky,
    sky_object_masks,
    subtract_sky,
)
from gemred.recipes.gsaoi_calibrations import calibrate_gsaoi, make_lamp_flat
from gemred.recipes.gsaoi_sky import read_sky_mask, sky_frame, sky_mask, write_sky_mask
from gemred.simulation import gsaoi as sim

SEED = 3  # of the gsaoi_offsetsky_small fixture
BPM = "bpm_20121104_gsaoi_gsaoi_11_full_4amp.fits"
FLATS = [f"S20170505S{n:04d}.fits" for n in [*range(30, 45), *range(60, 75)]]
#: FWHM (pixels) of the simulated AO PSF: the 0.09" core (4.6 px) widened a little by the halo.
FWHM = 5.0
#: Largest tolerated dark ring, in standard errors of the ring's mean (the issue's 3 sigma).
RING_LIMIT = -3.0


# ----------------------------------------------------------------------------- tiny frames


def _frame(levels: list[float], root: str, *, var: float = 4.0, shape=(64, 64)) -> Frame:
    exts = [
        Extension(
            np.full(shape, level, np.float32), fits.Header(), var=np.full(shape, var), dq=np.zeros(shape)
        )
        for level in levels
    ]
    return Frame(fits.Header({"INSTRUME": "GSAOI"}), exts, root)


def _star(frame: Frame, ext: int, x: int, y: int, peak: float) -> None:
    yy, xx = np.indices(frame[ext].shape)
    frame[ext].sci += np.float32(peak) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2)).astype(
        np.float32
    )


def test_defaults_are_dragons_gsaoi():
    assert SKY_DEFAULTS == {
        "mask_objects": True,
        "dilation": 6.0,
        "operation": "median",
        "reject": "minmax",
        "nlow": 1,
        "nhigh": 1,
        "offset_sky": True,
        "follow_drift": True,  # gemred's; False is DRAGONS' behaviour
    }


def test_make_sky_offsets_levels_and_leaves_out_masked_sources():
    frames = [_frame([100.0 + d, 50.0 + d], f"f{i}") for i, d in enumerate([0.0, 10.0, -10.0, 5.0])]
    _star(frames[1], 0, 20, 30, 5000.0)
    _star(frames[3], 0, 20, 30, 3000.0)  # a source left at the same place by a small dither
    frames[2][1].dq[5, 5] = dq.BAD_PIXEL
    frames[2][1].sci[5, 5] = 1e6
    masks = [[np.zeros((64, 64), bool), np.zeros((64, 64), bool)] for _ in frames]
    masks[1][0][14:47, 4:37] = True
    masks[3][0][14:47, 4:37] = True
    sky = make_sky(frames, masks=masks)
    assert sky.root == "f0" and sky.phu["NCOMBINE"] == 4 and sky.phu["SKYMASK"]
    assert [sky.phu[f"SKYOFF{i}"] for i in range(1, 5)] == [0.0, -10.0, 10.0, -5.0]
    np.testing.assert_allclose(sky[0].sci, 100.0, atol=1e-4)  # star masked, levels matched
    np.testing.assert_allclose(sky[1].sci, 50.0, atol=1e-4)  # bad pixel left out
    # The median of the 2 inputs minmax leaves is that of all 4 (one dropped at each end): VAR
    # of a median of 4. Where the star was masked, minmax scaled to the 2 inputs left rejects
    # none (IRAF: int(2 * 1 / 4)): VAR of a median of 2.
    assert sky[0].var[0, 0] == pytest.approx(np.pi / 2 * 4.0 / 4)
    assert sky[0].var[30, 20] == pytest.approx(np.pi / 2 * 4.0 / 2)
    assert not (sky[1].dq & 0x8000).any() and sky[1].dq.max() == 0
    # Without masks the source of two frames survives the rejection of one high value.
    unmasked = make_sky(frames, mask_objects=False)
    assert not unmasked.phu["SKYMASK"]
    assert unmasked[0].sci[30, 20] == pytest.approx((100.0 + 3100.0) / 2, rel=1e-4)
    # A pixel masked in every frame still gets a value (all inputs are equally bad there).
    for frame_masks in masks:
        frame_masks[0][0, 0] = True
    assert np.isfinite(make_sky(frames, masks=masks)[0].sci[0, 0])


def test_make_sky_is_the_same_in_narrow_bands():
    rng = np.random.default_rng(1)
    frames = [_frame([100.0, 60.0], f"f{i}") for i in range(5)]
    for frame in frames:
        for ext in frame:
            ext.sci += rng.normal(0, 2, ext.shape).astype(np.float32)
    _star(frames[0], 0, 30, 30, 400.0)
    _star(frames[3], 1, 40, 20, 400.0)
    wide = make_sky(frames, memory_mb=64)
    narrow = make_sky(frames, memory_mb=0.01)
    for a, b in zip(wide, narrow, strict=True):
        np.testing.assert_array_equal(a.sci, b.sci)
        np.testing.assert_array_equal(a.var, b.var)
        np.testing.assert_array_equal(a.dq, b.dq)
    masks = sky_object_masks(frames)
    assert masks[0][0][30, 30] and masks[3][1][20, 40]
    assert masks[0][1].mean() < 0.1  # noise peaks only, at 1 sigma over 20 pixels
    # The disc of radius 6 around the star's detected pixels.
    assert masks[0][0][30, 30 + 6] and not masks[0][0][30, 30 + 16]


def test_make_sky_extensions_are_independent():
    """Each extension's sky is the one made from that extension alone, whatever the shapes of
    the others (the band work arrays are kept from one extension to the next)."""
    rng = np.random.default_rng(2)
    shapes = [(64, 64), (40, 64), (64, 64), (64, 48)]

    def frame(i: int) -> Frame:
        exts = [
            Extension(
                rng.normal(100.0 + 10 * k + i, 2.0, shape).astype(np.float32),
                fits.Header(),
                var=np.full(shape, 4.0),
                dq=(rng.random(shape) < 0.01).astype(np.uint16) * dq.BAD_PIXEL,
            )
            for k, shape in enumerate(shapes)
        ]
        return Frame(fits.Header({"INSTRUME": "GSAOI"}), exts, f"f{i}")

    frames = [frame(i) for i in range(4)]
    whole = make_sky(frames, mask_objects=False, memory_mb=0.05)
    for k in range(len(shapes)):
        alone = make_sky(
            [Frame(f.phu, [f[k]], f.root) for f in frames], mask_objects=False, memory_mb=0.05
        )
        np.testing.assert_array_equal(whole[k].sci, alone[0].sci)
        np.testing.assert_array_equal(whole[k].var, alone[0].var)
        np.testing.assert_array_equal(whole[k].dq, alone[0].dq)


def test_sky_masks_found_once_and_read_back_make_the_same_sky(tmp_path):
    rng = np.random.default_rng(4)
    frames = [_frame([100.0, 60.0], f"f{i}") for i in range(4)]
    for frame in frames:
        for ext in frame:
            ext.sci += rng.normal(0, 2, ext.shape).astype(np.float32)
    _star(frames[1], 0, 30, 30, 400.0)
    paths, mask_paths = [], []
    for frame in frames:
        paths.append(tmp_path / f"{frame.root}_flatCorrected.fits")
        write_frame(frame, paths[-1])
    for i, path in enumerate(paths):
        others = paths[:i] + paths[i + 1 :]
        mask_paths.append(tmp_path / f"f{i}_skyMask.fits")
        write_sky_mask(sky_mask(path, others), mask_paths[-1], frame=path)
    # The per-frame masks are those of sky_object_masks over the same frames, read back as bools.
    expected = sky_object_masks([read_frame(path) for path in paths])
    for got, want in zip((read_sky_mask(path) for path in mask_paths), expected, strict=True):
        for a, b in zip(got, want, strict=True):
            assert a.dtype == bool
            np.testing.assert_array_equal(a, b)
    assert read_sky_mask(mask_paths[1])[0][30, 30]
    from_files = sky_frame(paths, mask_paths=mask_paths)
    in_memory = make_sky([read_frame(path) for path in paths], masks=expected)
    for a, b in zip(from_files, in_memory, strict=True):
        np.testing.assert_array_equal(a.sci, b.sci)
        np.testing.assert_array_equal(a.dq, b.dq)
    with pytest.raises(GemredInputError, match="3 mask files given for 4 sky frames"):
        sky_frame(paths, mask_paths=mask_paths[:3])
    with pytest.raises(GemredInputError, match="no OBJMASK"):
        read_sky_mask(paths[0])
    # Cut short (astropy only warns, and would drop the arrays it cannot read): named.
    truncated = tmp_path / "truncated_skyMask.fits"
    truncated.write_bytes(Path(mask_paths[0]).read_bytes()[:-4000])
    with pytest.raises(GemredInputError, match=r"truncated_skyMask.fits: cannot read the sky mask.*trunc"):
        read_sky_mask(truncated)


@pytest.mark.parametrize(
    ("times", "levels", "at_zero"),
    [
        ([-60.0, 60.0, 180.0], [100.0, 110.0, 120.0], 105.0),  # between skies, on a line
        ([-100.0, 50.0, 200.0, 400.0], [110.0, 102.5, 140.0, 260.0], 100.0),  # 100 + 0.001 t^2
        ([60.0, 120.0, 180.0], [103.6, 114.4, 132.4], 100.0),  # one side, 100 + 0.001 t^2
        ([60.0, 120.0], [106.0, 112.0], 100.0),  # two skies: a line
        ([-30.0, -30.0], [100.0, 104.0], 100.0),  # no time span: the first frame's level
    ],
)
def test_make_sky_follows_the_level_to_the_object_time(times, levels, at_zero):
    frames = [_frame([level, level - 40.0], f"f{i}") for i, level in enumerate(levels)]
    sky = make_sky(frames, mask_objects=False, reject="none", operation="mean", times=times)
    np.testing.assert_allclose(sky[0].sci, at_zero, atol=1e-3)
    np.testing.assert_allclose(sky[1].sci, at_zero - 40.0, atol=1e-3)
    assert sky[0].header["SKYDRIFT"] == pytest.approx(at_zero - levels[0], abs=1e-3)
    assert "SKYDRIFT" not in make_sky(frames, mask_objects=False)[0].header
    with pytest.raises(GemredInputError, match=f"{len(times) + 1} times given for {len(frames)} sky frames"):
        make_sky(frames, times=[*times, 0.0])


def test_make_sky_carries_the_drift_outside_the_span_with_tracers():
    """A sky level that is no parabola, 100 + 1e-6 t^3: extrapolated from the skies at 60, 120
    and 180 s to the object frame at 0 the parabola is 1.296 off; an object frame at 120 s,
    whose level is 1.728 above the object frame's (the same diffuse light in both), gives it."""
    times = [60.0, 120.0, 180.0, 240.0]
    frames = [_frame([100.0 + 1e-6 * t**3, 50.0 + 1e-6 * t**3], f"f{i}") for i, t in enumerate(times)]
    options = {"mask_objects": False, "reject": "none", "operation": "mean", "times": times}
    extrapolated = make_sky(frames, **options)
    np.testing.assert_allclose(extrapolated[0].sci, 101.296, atol=1e-3)
    inside, beyond = (120.0, [1.728, 1.728]), (300.0, [27.0, 27.0])
    traced = make_sky(frames, tracers=[inside, beyond], **options)
    np.testing.assert_allclose(traced[0].sci, 100.0, atol=1e-3)
    np.testing.assert_allclose(traced[1].sci, 50.0, atol=1e-3)
    assert traced[0].header["SKYDRIFT"] == pytest.approx(-0.216, abs=1e-3)
    # A tracer outside the span is not used; nor are tracers when the frame is inside the span.
    np.testing.assert_allclose(make_sky(frames, tracers=[beyond], **options)[0].sci, 101.296, atol=1e-3)
    between = {**options, "times": [t - 150.0 for t in times]}
    np.testing.assert_allclose(
        make_sky(frames, tracers=[(-30.0, [5.0, 5.0])], **between)[0].sci,
        make_sky(frames, **between)[0].sci,
    )


def test_background_levels_skip_flagged_pixels():
    frame = _frame([10.0, 20.0], "f")
    frame[0].sci[:5] = 1e4
    frame[0].dq[:5] = dq.BAD_PIXEL
    frame[1].sci[:] = np.nan
    levels = background_levels(frame)
    assert levels[0] == 10.0 and np.isnan(levels[1])


def test_sky_frame_follows_the_drift_with_tracer_files(tmp_path):
    """Skies at 2, 4 and 6 minutes after the object frame at levels 90, 100, 130 put the
    parabola at 100 at 0; a target frame at 4 minutes 5 above the object frame says 95."""

    def write(root, start, level):
        frame = _frame([level], root)
        frame.phu.update({"DATE-OBS": "2017-05-05", "UT": start, "EXPTIME": 60.0})
        write_frame(frame, tmp_path / f"{root}.fits")
        return tmp_path / f"{root}.fits"

    obj = write("S20170505S0001", "03:00:00", 200.0)
    skies = [
        write(f"S20170505S000{i + 2}", f"03:0{2 * i + 2}:00", v) for i, v in enumerate([90.0, 100.0, 130.0])
    ]
    tracer = write("S20170505S0009", "03:04:00", 205.0)
    options = {"mask_objects": False, "reject": "none", "operation": "mean"}
    np.testing.assert_allclose(sky_frame(skies, options=options, object_path=obj)[0].sci, 100.0, atol=1e-3)
    traced = sky_frame(skies, options=options, object_path=obj, tracer_paths=[tracer])
    np.testing.assert_allclose(traced[0].sci, 95.0, atol=1e-3)
    dragons = sky_frame(
        skies, options={**options, "follow_drift": False}, object_path=obj, tracer_paths=[tracer]
    )
    np.testing.assert_allclose(dragons[0].sci, 90.0, atol=1e-3)
    other = _frame([205.0, 205.0], "S20170505S0010")
    other.phu.update({"DATE-OBS": "2017-05-05", "UT": "03:04:00", "EXPTIME": 60.0})
    write_frame(other, tmp_path / "S20170505S0010.fits")
    with pytest.raises(GemredInputError, match="S20170505S0010.fits: 2 extensions where the object frame"):
        sky_frame(skies, options=options, object_path=obj, tracer_paths=[tmp_path / "S20170505S0010.fits"])


def test_sky_frame_follows_the_drift_to_the_object_frame_time(tmp_path):
    """The times come from the headers: mid-exposure of each sky minus the object frame's."""
    paths = []
    for i, (start, level) in enumerate(
        [("03:00:00", 200.0), ("03:02:00", 90.0), ("03:04:00", 100.0), ("03:06:00", 110.0)]
    ):
        frame = _frame([level], f"S2017050{i}")
        frame.phu.update({"DATE-OBS": "2017-05-05", "UT": start, "EXPTIME": 60.0})
        paths.append(tmp_path / f"{frame.root}.fits")
        write_frame(frame, paths[-1])
    obj, skies = paths[0], paths[1:]
    sky = sky_frame(skies, options={"mask_objects": False}, object_path=obj)
    np.testing.assert_allclose(sky[0].sci, 80.0, atol=1e-3)  # 10 per 2 minutes, back 2 minutes
    dragons = sky_frame(skies, options={"mask_objects": False, "follow_drift": False}, object_path=obj)
    np.testing.assert_allclose(dragons[0].sci, 90.0, atol=1e-3)  # the nearest sky's level
    with fits.open(obj, mode="update") as hdul:
        del hdul[0].header["UT"], hdul[0].header["DATE-OBS"]
    with pytest.raises(GemredInputError, match=f"{obj.name}: no UT start.*follow_drift: false"):
        sky_frame(skies, options={"mask_objects": False}, object_path=obj)


@pytest.mark.parametrize("radius", [1.0, 1.5, 2.9, 6.0, 6.5])
def test_mask_dilation_is_the_disc_of_the_radius(radius):
    rng = np.random.default_rng(5)
    mask = rng.random((120, 90)) < 0.004
    mask[0, 0] = mask[-1, 40] = mask[60, -1] = True  # at the edges too
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    expected = ndimage.binary_dilation(mask, structure=xx**2 + yy**2 <= radius**2)
    np.testing.assert_array_equal(_dilate(mask, radius), expected)


def test_make_sky_with_too_few_frames_lowers_the_rejection(caplog):
    frames = [_frame([10.0], "a"), _frame([12.0], "b")]
    sky = make_sky(frames, mask_objects=False)
    assert sky[0].sci[0, 0] == pytest.approx(10.0)  # offset to the first: both 10
    assert "lowered" in caplog.text


def test_subtract_sky_level_match_and_as_is():
    sky = _frame([100.0, 50.0], "sky", var=2.0)
    sky[1].dq[3, 3] = dq.COSMIC_RAY
    frame = _frame([107.0, 45.0], "obj", var=4.0)
    rng = np.random.default_rng(2)
    for ext in frame:
        ext.sci += rng.normal(0, 2, ext.shape).astype(np.float32)
    _star(frame, 0, 32, 32, 500.0)
    matched = subtract_sky(frame, sky)
    assert matched[0].header["SKYLEVEL"] == pytest.approx(7.0, abs=0.3)
    assert matched[1].header["SKYLEVEL"] == pytest.approx(-5.0, abs=0.3)
    assert abs(np.median(matched[0].sci)) < 0.3 and matched[0].sci[32, 32] > 400.0
    np.testing.assert_allclose(matched[0].var, 6.0)
    assert matched[1].dq[3, 3] == dq.COSMIC_RAY and matched.phu["SKYOFFST"] and "SKYCORR" in matched.phu
    as_is = subtract_sky(frame, sky, offset_sky=False)
    for out, ext, s in zip(as_is, frame, sky, strict=True):
        np.testing.assert_array_equal(out.sci, ext.sci - s.sci)
        assert "SKYLEVEL" not in out.header
    assert not as_is.phu["SKYOFFST"]
    with pytest.raises(GemredInputError, match="already sky-subtracted"):
        subtract_sky(matched, sky)


def test_wrong_inputs_are_named():
    with pytest.raises(GemredInputError, match="no sky frames"):
        make_sky([])
    with pytest.raises(GemredInputError, match="f1: array shapes"):
        make_sky([_frame([1.0], "f0"), _frame([1.0], "f1", shape=(32, 32))])
    with pytest.raises(GemredInputError, match="object masks"):
        make_sky([_frame([1.0], "f0"), _frame([1.0], "f1")], masks=[[np.zeros((64, 64), bool)]])
    with pytest.raises(GemredInputError, match="at least two"):
        sky_object_masks([_frame([1.0], "f0")])
    with pytest.raises(GemredInputError, match="obj: array shapes"):
        subtract_sky(_frame([1.0], "obj", shape=(32, 32)), _frame([1.0], "sky"))


# ----------------------------------------------------------------------------- simulated data


@pytest.fixture(scope="module")
def lamp_flat(gsaoi_offsetsky_small: Path) -> Frame:
    raw = gsaoi_offsetsky_small
    return make_lamp_flat([raw / f for f in FLATS], bpm_path=raw / BPM)


@pytest.fixture(scope="module")
def calibrated(gsaoi_offsetsky_small: Path, lamp_flat: Frame) -> dict[str, Frame]:
    raw = gsaoi_offsetsky_small
    names = [f"S20170505S{n:04d}.fits" for n in range(95, 111)]
    return {name: calibrate_gsaoi(raw / name, flat=lamp_flat, bpm_path=raw / BPM) for name in names}


@pytest.fixture(scope="module")
def truth(gsaoi_offsetsky_small: Path, lamp_flat: Frame) -> dict:
    folder = gsaoi_offsetsky_small / "truth"
    frames = pd.read_csv(folder / "frames.csv").set_index("filename")
    with fits.open(folder / "flat_response_Kshort.fits") as hdul:
        response = [hdu.data.astype(np.float64) for hdu in hdul[1:]]
    return {
        # What a star's light becomes in a flat-fielded frame: times the true response, over
        # the measured flat (so that the flat's own errors do not count as sky errors).
        "gain": [r / np.where(e.sci > 0, e.sci, np.nan) for r, e in zip(response, lamp_flat, strict=True)],
        "frames": frames,
        "stars": pd.read_csv(folder / "stars.csv"),
        "pixels": pd.read_csv(folder / "stars_pixels.csv"),
        "plan": {f"{f.filename}.fits": f for f in sim.observing_plan("small", SEED)},
        "objects": [n for n in frames.index if frames.loc[n, "role"] == "science_object"],
        "skies": [n for n in frames.index if frames.loc[n, "role"] == "science_sky"],
    }


def _sky_level(truth: dict, name: str) -> float:
    row = truth["frames"].loc[name]
    return float(row["sky_e_per_s_per_pixel"] * row["exptime"])


def _assess(result: Frame, frame: Frame, name: str, truth: dict) -> list[dict[str, float]]:
    """Per array of ``result = frame - sky``: background error and noise on source-free pixels,
    and the deepest ring of the sky error around the 20 brightest stars (module notes)."""
    sky = _sky_level(truth, name)
    model = sim.render_electrons(truth["plan"][name], truth["stars"], sim.array_regions("small"))
    placed = truth["pixels"][truth["pixels"]["filename"] == name]
    report = []
    for i, (ext, raw) in enumerate(zip(result, frame, strict=True)):
        gain = truth["gain"][i]
        starlight = (model[i] - sky) * gain
        resid = ext.sci - starlight
        free = (starlight < 0.05 * np.sqrt(sky)) & (ext.dq == 0) & np.isfinite(starlight)
        sigma = float(np.sqrt(np.median(ext.var[free])))
        background, _, _ = sigma_clipped_stats(resid[free], sigma=5.0)  # unflagged cosmic rays
        _, _, noise = sigma_clipped_stats(resid[free] / np.sqrt(ext.var[free]), sigma=5.0)
        # True sky of this frame minus the sky subtracted: negative where the sky was too high.
        sky_error = ext.sci - raw.sci + sky * gain
        level = np.nanmean(sky_error[free])
        yy, xx = np.indices(ext.shape)
        brightest = placed[placed["ext"] == i + 1].nlargest(20, "counts_e")
        rings = []
        for star in brightest.itertuples():
            r = np.hypot(xx - star.x, yy - star.y)
            ring = (r >= FWHM) & (r < 3 * FWHM) & (ext.dq == 0) & np.isfinite(sky_error)
            if ring.sum() >= 20:
                depth = sky_error[ring].mean() - level
                rings.append(depth / (np.sqrt(ext.var[ring].sum()) / ring.sum()))
        report.append({"background": background / sigma, "sigma": sigma, "noise": noise, "ring": min(rings)})
    return report


def test_offset_sky_sequence_against_truth(calibrated: dict[str, Frame], truth: dict):
    """The tutorial sequence: the offset-sky frames make the sky of the target frames."""
    skies = [calibrated[n] for n in truth["skies"]]
    sky = make_sky(skies)
    assert sky.phu["NCOMBINE"] == 7 and sky.root == "S20170505S0097"
    for name in truth["objects"][:3]:
        frame = calibrated[name]
        matched = _assess(subtract_sky(frame, sky), frame, name, truth)
        as_is = _assess(subtract_sky(frame, sky, offset_sky=False), frame, name, truth)
        change = _sky_level(truth, name) - _sky_level(truth, truth["skies"][0])
        for m, a in zip(matched, as_is, strict=True):
            assert 0.9 <= m["noise"] <= 1.15 and 0.9 <= a["noise"] <= 1.15, (name, m, a)
            assert m["ring"] > RING_LIMIT, (name, m)
            # As is, the background is the sky change since the first sky frame (levels of the
            # stack are those of that frame).
            assert a["background"] == pytest.approx(change / a["sigma"], abs=0.1), (name, a, change)
            # Matched, it is zero but for the diffuse light of the crowded target's faint stars,
            # which a level measured on this frame alone cannot tell from sky (measured
            # -0.12 to -0.23 sigma; DRAGONS' advice: offset_sky=False for such fields).
            assert -0.3 < m["background"] < 0.0, (name, m)


def test_sky_following_the_drift_against_truth(calibrated: dict[str, Frame], truth: dict):
    """The tutorial's offset_sky=False: the sky brought to each object frame's time from the
    skies' own levels leaves a background near zero, where the nearest sky's level leaves the
    drift (the simulated sky moves by 3 % over 40 minutes)."""
    skies = truth["skies"]
    masks = dict(zip(skies, sky_object_masks([calibrated[n] for n in skies]), strict=True))

    def middle(name: str) -> float:
        spec = truth["plan"][name]
        return spec.start.timestamp() + spec.exptime / 2

    followed, nearest = [], []
    for name in truth["objects"]:
        order = sorted(skies, key=lambda n: abs(middle(n) - middle(name)))
        frames, frame_masks = [calibrated[n] for n in order], [masks[n] for n in order]
        times = [middle(n) - middle(name) for n in order]
        for sky, report in (
            (make_sky(frames, masks=frame_masks, times=times), followed),
            (make_sky(frames, masks=frame_masks), nearest),
        ):
            assessed = _assess(
                subtract_sky(calibrated[name], sky, offset_sky=False), calibrated[name], name, truth
            )
            report.extend(a["background"] for a in assessed if np.isfinite(a["background"]))
    # Measured -0.08 to +0.10 sigma, mean -0.002: what is left is the drift's interpolation
    # between skies and extrapolation before the first one, and the offset field's own faint
    # starlight, which the sky carries (median 0.1 to 0.5 e per pixel).
    assert max(np.abs(followed)) < 0.15 and abs(np.mean(followed)) < 0.03, followed
    # The nearest sky's level (DRAGONS): the drift is left, measured -0.72 to +0.19 sigma.
    assert max(np.abs(nearest)) > 0.5


def _dither_only(frames: list[Frame], *, mask_objects: bool) -> list[Frame]:
    """Every frame is sky for the others, never for itself (masks found once per frame)."""
    masks = sky_object_masks(frames) if mask_objects else None
    results = []
    for k, frame in enumerate(frames):
        others = [f for j, f in enumerate(frames) if j != k]
        other_masks = None if masks is None else [m for j, m in enumerate(masks) if j != k]
        sky = make_sky(others, mask_objects=mask_objects, masks=other_masks)
        results.append(subtract_sky(frame, sky))
    return results


def test_dither_only_sequence_against_truth(calibrated: dict[str, Frame], truth: dict):
    """The seven sky-field frames as a dither-only sequence: every frame is object and sky."""
    names = truth["skies"]
    frames = [calibrated[n] for n in names]
    masked = _dither_only(frames, mask_objects=True)
    unmasked = _dither_only(frames, mask_objects=False)
    worst_unmasked = 0.0
    for name, result, leaky in list(zip(names, masked, unmasked, strict=True))[:4]:
        for a in _assess(result, calibrated[name], name, truth):
            # Measured -0.017 to +0.006 sigma.
            assert abs(a["background"]) < 0.05, (name, a)
            assert 0.9 <= a["noise"] <= 1.15, (name, a)
            assert a["ring"] > RING_LIMIT, (name, a)
        worst_unmasked = min(
            worst_unmasked, *(a["ring"] for a in _assess(leaky, calibrated[name], name, truth))
        )
    # Without object masks the stars of the other frames dig dark halos (measured down to -7).
    assert worst_unmasked < RING_LIMIT


def test_crowded_dither_only_halos_are_shallower_with_masks(calibrated: dict[str, Frame], truth: dict):
    """The crowded target as a dither-only sequence (five frames, 1" dithers).

    Masks make the halos several times shallower (measured -9 to -12 against -41 to -65), but
    in this field the halos of neighbouring bright stars overlap beyond any mask, so the
    3-sigma criterion is not met here (it is for the offset-sky and sparse dither cases).
    """
    names = truth["objects"][:5]
    frames = [calibrated[n] for n in names]
    masked = _dither_only(frames, mask_objects=True)
    unmasked = _dither_only(frames, mask_objects=False)
    for name, with_masks, without in list(zip(names, masked, unmasked, strict=True))[:3]:
        good = min(a["ring"] for a in _assess(with_masks, calibrated[name], name, truth))
        bad = min(a["ring"] for a in _assess(without, calibrated[name], name, truth))
        assert bad < 3 * RING_LIMIT and good > bad / 2, (name, good, bad)
