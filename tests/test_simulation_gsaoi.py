"""The simulated GSAOI tutorial dataset (small size): files, headers, pixels and truth agree."""

from __future__ import annotations

import filecmp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from gemred.instruments import gsaoi
from gemred.sections import parse_section
from gemred.simulation import gsaoi as sim
from gemred.simulation.sky import from_tangent_plane, tangent_plane

SEED = 3
SCIENCE = [f"S20170505S{n:04d}.fits" for n in range(95, 111)]
LAMP_ON = [f"S20170505S{n:04d}.fits" for n in range(30, 45)]
LAMP_OFF = [f"S20170505S{n:04d}.fits" for n in range(60, 75)]
STANDARD = [f"S20170504S{n:04d}.fits" for n in range(114, 118)]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gsaoi-small")
    sim.simulate_gsaoi_offsetsky(out, size="small", seed=SEED)
    return out


@pytest.fixture(scope="module")
def truth(small) -> dict[str, pd.DataFrame]:
    names = ("stars", "frames", "stars_pixels")
    return {name: pd.read_csv(small / "truth" / f"{name}.csv") for name in names}


@pytest.fixture(scope="module")
def response(small) -> list[np.ndarray]:
    with fits.open(small / "truth" / "flat_response_Kshort.fits") as hdul:
        return [hdu.data.astype(np.float64) for hdu in hdul[1:]]


@pytest.fixture(scope="module")
def bpm(small) -> list[np.ndarray]:
    with fits.open(small / sim.BPM_NAME) as hdul:
        return [hdu.data.astype(bool) for hdu in hdul[1:]]


def _read(path: Path) -> tuple[fits.Header, list[fits.Header], list[np.ndarray]]:
    with fits.open(path) as hdul:
        return hdul[0].header.copy(), [h.header.copy() for h in hdul[1:]], [h.data.copy() for h in hdul[1:]]


def _electrons(path: Path) -> list[np.ndarray]:
    """Linearised electrons per array, as DRAGONS' nonlinearityCorrect + ADUToElectrons give."""
    _, _, data = _read(path)
    return [gsaoi.linearize(d.astype(np.float64) * gsaoi.ARRAYS[i].gain, i) for i, d in enumerate(data)]


def test_file_names_and_counts(small):
    expected = set(SCIENCE + LAMP_ON + LAMP_OFF + STANDARD + [sim.BPM_NAME])
    assert {p.name for p in small.glob("*.fits")} == expected
    assert len(expected) == 51
    truth_files = {p.name for p in (small / "truth").iterdir()}
    assert {
        "stars.csv",
        "frames.csv",
        "stars_pixels.csv",
        "refcat.csv",
        "flat_response_Kshort.fits",
    } <= truth_files
    total = sum(p.stat().st_size for p in small.glob("*.fits"))
    assert 45e6 < total < 60e6


def test_raw_layout_and_sections(small):
    regions = sim.array_regions("small")
    for name in SCIENCE + LAMP_ON[:2] + STANDARD[:1]:
        with fits.open(small / name) as hdul:
            assert len(hdul) == 5
            assert hdul[0].header["NAXIS"] == 0
            assert hdul[0].header["SIMSIZE"] == "small"
            for i, hdu in enumerate(hdul[1:]):
                hdr = hdu.header
                assert hdr["BITPIX"] == -32 and "EXTNAME" not in hdr and "BIASSEC" not in hdr
                assert hdu.data.shape == (256, 256)
                data, ccd, det = (parse_section(hdr[k]) for k in ("DATASEC", "CCDSEC", "DETSEC"))
                assert data.shape == ccd.shape == det.shape == hdu.data.shape
                assert ccd == regions[i]
                origin = parse_section(gsaoi.ARRAYS[i].detsec)
                assert (det.x1 - origin.x1, det.y1 - origin.y1) == (ccd.x1, ccd.y1)
                assert hdr["ARRAYID"] == gsaoi.ARRAYS[i].array_id
                assert hdr["GAIN"] == gsaoi.ARRAYS[i].gain
    # The four windows sit at the outer corners of the field.
    corners = {(r.x1 == 0, r.y1 == 0) for r in regions}
    assert corners == {(False, True), (True, True), (True, False), (False, False)}
    assert regions[1] == (0, 256, 0, 256)


def test_classification_keywords(small):
    heads = {p.name: fits.getheader(p) for p in small.glob("S*.fits")}
    for h in heads.values():
        assert h["INSTRUME"] == "GSAOI" and h["OBSERVAT"] == h["TELESCOP"] == "Gemini-South"
        assert (h["FILTER1"], h["FILTER2"], h["INPORT"], h["AOFOLD"]) == ("Kshort_G1106", "Clear", 1, "IN")
        assert h["PA"] == 0
        assert h["COADDS"] == 1 and h["READMODE"] == "FOWLER" and h["BUNIT"] == "adu"
        assert h["DATALAB"].startswith(h["OBSID"] + "-") and h["OBSID"].startswith(h["GEMPRGID"] + "-")
        assert "GEM-TLM" not in h and not any("PREPAR" in k for k in h)
        assert len(h["UTSTART"]) == 12 and "." in h["UTSTART"]
    for name in LAMP_ON + LAMP_OFF:
        h = heads[name]
        assert (h["OBSTYPE"], h["OBSCLASS"], h["EXPTIME"], h["LNRS"]) == ("FLAT", "dayCal", 13.0, 2)
        assert h["OBJECT"] == ("Domeflat" if name in LAMP_ON else "Domeflat OFF")
        assert h["FRAME"] == "AZEL_TOPO" and h["AIRMASS"] != 1.0
    for name in STANDARD:
        h = heads[name]
        assert (h["OBJECT"], h["OBSCLASS"], h["EXPTIME"]) == ("9132", "partnerCal", 30)
        assert h["GEMPRGID"] == "GS-CAL20170504"
        assert "GWFS1CFG" in h
    for name in SCIENCE:
        h = heads[name]
        assert (h["OBSTYPE"], h["OBSCLASS"], h["GEMPRGID"], h["EXPTIME"], h["LNRS"]) == (
            "OBJECT",
            "science",
            "GS-2017A-Q-29",
            60.0,
            8,
        )
        states = [h[k] for k in ("OIWFS_ST", "PWFS1_ST", "PWFS2_ST", "AOWFS_ST")]
        if "GWFS1CFG" in h:
            assert h["AOWFS_ST"] == "guiding"
        else:
            assert states == ["parked"] * 4
    guided = [n for n in SCIENCE if "GWFS1CFG" in heads[n]]
    assert len(guided) == 9


def test_science_sequence_interleaved(truth):
    frames = truth["frames"].set_index("filename").loc[SCIENCE]
    roles = "".join("O" if r == "science_object" else "S" for r in frames["role"])
    assert roles.count("O") == 9 and roles.count("S") == 7
    assert "SS" not in roles and roles.startswith("OO")
    obj = frames[frames.role == "science_object"]
    sky = frames[frames.role == "science_sky"]
    assert (obj[["p_offset", "q_offset"]].abs() <= 1.5).all().all()
    assert (np.hypot(sky.p_offset, sky.q_offset) > 120).all()
    starts = pd.to_datetime(frames["ut_start"])
    assert starts.is_monotonic_increasing
    # Dead time between frames stays below DRAGONS' 60 s grouping limit.
    gaps = (starts.diff().dt.total_seconds() - 60.0).iloc[1:]
    assert (gaps < 60).all()
    sky_rate = frames["sky_e_per_s_per_pixel"]
    assert 0.01 < sky_rate.max() / sky_rate.min() - 1 < 0.12


def test_windows_hold_enough_stars(truth):
    pix = truth["stars_pixels"]
    frames = truth["frames"]
    on_target = frames.loc[frames.role == "science_object", "filename"]
    counts = pix[pix.filename.isin(on_target)].groupby(["filename", "ext"]).size()
    assert len(counts) == 9 * 4
    assert counts.min() >= 30


def test_nonlinearity_is_recovered_on_flats(small, truth, response, bpm):
    frames = truth["frames"].set_index("filename")
    for name in LAMP_ON[:3]:
        level = frames.loc[name, "lamp_e_per_s_per_pixel"] * frames.loc[name, "exptime"]
        _, _, raw = _read(small / name)
        for i, adu in enumerate(raw):
            good = ~bpm[i]
            expected = level * response[i][good]
            linear = gsaoi.linearize(adu[good] * gsaoi.ARRAYS[i].gain, i)
            assert abs(np.median(linear / expected) - 1) < 1e-3
            # Without the correction the level is visibly off.
            assert abs(np.median(adu[good] * gsaoi.ARRAYS[i].gain / expected) - 1) > 3e-3


def test_pixels_follow_the_noise_free_render(small, truth, response, bpm):
    """Linearised raw electrons scatter about the flat-fielded render of sky and truth stars."""
    plan = {f"{f.filename}.fits": f for f in sim.observing_plan("small", SEED)}
    regions = sim.array_regions("small")
    frames = truth["frames"].set_index("filename")
    for name in SCIENCE[:3] + STANDARD[:1]:
        expected = sim.render_electrons(plan[name], truth["stars"], regions, response=response)
        for i, (e, model) in enumerate(zip(_electrons(small / name), expected, strict=True)):
            good = ~bpm[i] & (model < 40000)
            assert abs(np.median(e[good] / model[good]) - 1) < 2e-3
        flat_free = sim.render_electrons(plan[name], truth["stars"].iloc[:0], regions)
        sky = frames.loc[name, "sky_e_per_s_per_pixel"] * frames.loc[name, "exptime"]
        assert all(np.allclose(image, sky) for image in flat_free)


def test_isolated_star_flux_matches_truth(small, truth):
    stars = truth["stars"]
    plan = {f"{f.filename}.fits": f for f in sim.observing_plan("small", SEED)}
    frame = plan[STANDARD[0]]
    standard = stars[(stars.field == "standard") & (stars.mag == sim.STANDARD_MAG)]
    assert len(standard) == 1
    regions = sim.array_regions("small")
    images = sim.render_electrons(frame, standard, regions)
    background = frame.sky_e_per_s * frame.exptime
    flux = [float((image - background).sum()) for image in images]
    expected = standard["flux_e_per_s"].iloc[0] * frame.exptime
    assert flux[3] == pytest.approx(expected, rel=0.01)
    assert max(abs(f) for f in flux[:3]) < 1e-6 * expected
    # Centroid at the truth pixel.
    pix = truth["stars_pixels"]
    row = pix[(pix.filename == STANDARD[0]) & (pix.star_id == standard.index[0])].iloc[0]
    assert row.ext == 4
    image = images[3] - background
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    near = np.hypot(xx - row.x, yy - row.y) < 20
    cx = (image * xx)[near].sum() / image[near].sum()
    cy = (image * yy)[near].sum() / image[near].sum()
    assert np.hypot(cx - row.x, cy - row.y) < 0.05


def test_wcs_distortion_and_true_pointing(small, truth):
    stars = truth["stars"].set_index("star_id")
    frames = truth["frames"].set_index("filename")
    pix = truth["stars_pixels"]
    worst_linear = 0.0
    for name in SCIENCE + STANDARD:
        phu, exts, _ = _read(small / name)
        rows = pix[pix.filename == name]
        fr = frames.loc[name]
        sky = stars.loc[rows.star_id]
        true_pointing = (fr.ra_centre_true, fr.dec_centre_true)
        xi, eta = tangent_plane(sky.ra_deg.to_numpy(), sky.dec_deg.to_numpy(), *true_pointing)
        for ext in range(1, 5):
            sel = (rows.ext == ext).to_numpy()
            if not sel.any():
                continue
            ccd = parse_section(exts[ext - 1]["CCDSEC"])
            x, y = gsaoi.static_to_pixel(ext - 1, xi[sel], eta[sel])
            err = np.hypot(x - ccd.x1 - rows.x[sel], y - ccd.y1 - rows.y[sel])
            assert err.max() < 0.05
            if name == SCIENCE[0]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    wcs = WCS(exts[ext - 1])
                sky = stars.loc[rows.star_id[sel]]
                lx, ly = wcs.all_world2pix(sky.ra_deg, sky.dec_deg, 0)
                linear = np.hypot(lx - rows.x[sel], ly - rows.y[sel])
                assert linear.max() < 12
                worst_linear = max(worst_linear, linear.max())
        # CRVAL is the commanded pointing: RA/DEC + offsets (DRAGONS' self-consistency check).
        ra, dec = from_tangent_plane(phu["POFFSET"], phu["QOFFSET"], phu["RA"], phu["DEC"])
        crval = (exts[0]["CRVAL1"], exts[0]["CRVAL2"])
        assert all((h["CRVAL1"], h["CRVAL2"]) == crval for h in exts)
        wcs_error = np.hypot(*tangent_plane(crval[0], crval[1], ra, dec))
        true_error = np.hypot(*tangent_plane(*true_pointing, ra, dec))
        assert true_error == pytest.approx(fr.pointing_error_arcsec, abs=1e-6)
        if fr.bad_wcs:
            assert 35 < wcs_error < 45
        else:
            assert wcs_error < 1e-4
        if name == SCIENCE[0]:
            assert fr.pointing_error_arcsec == 0
        else:
            assert 0.1 <= fr.pointing_error_arcsec <= 0.3
    assert worst_linear > 2.0
    bad = frames[frames.bad_wcs]
    assert list(bad.index) == [f"{sim.BAD_WCS_FRAME}.fits"] and bad.role.iloc[0] == "science_object"


def test_sources_move_opposite_to_offsets(truth):
    pix = truth["stars_pixels"]
    frames = truth["frames"].set_index("filename")
    on_target = [n for n in SCIENCE if frames.loc[n, "role"] == "science_object"]
    base = pix[pix.filename == on_target[0]].set_index(["star_id", "ext"])
    for name in on_target[1:]:
        other = pix[pix.filename == name].set_index(["star_id", "ext"])
        common = base.index.intersection(other.index)
        dx = np.median(other.loc[common, "x"] - base.loc[common, "x"])
        dy = np.median(other.loc[common, "y"] - base.loc[common, "y"])
        dp = frames.loc[name, "p_offset"] - frames.loc[on_target[0], "p_offset"]
        dq = frames.loc[name, "q_offset"] - frames.loc[on_target[0], "q_offset"]
        tolerance = 0.35 / gsaoi.PIXEL_SCALE  # pointing errors
        assert abs(dx + dp / gsaoi.PIXEL_SCALE) < tolerance
        assert abs(dy + dq / gsaoi.PIXEL_SCALE) < tolerance


def test_flat_response_normalised(response, bpm):
    good = np.concatenate([r[~b] for r, b in zip(response, bpm, strict=True)])
    assert np.median(good) == pytest.approx(1.0, abs=1e-6)
    assert 0.005 < np.std(good) < 0.1
    for r, b in zip(response, bpm, strict=True):
        # Unilluminated, dead and bad-column pixels respond little; only hot pixels respond normally.
        assert (r[b] < 0.3).mean() > 0.9


def test_bpm_matches_injected_defects(small, bpm, response):
    with fits.open(small / sim.BPM_NAME) as hdul:
        assert hdul[0].header["OBSTYPE"] == "BPM" and len(hdul) == 5
        assert all(
            h.name == "DQ" and h.data.dtype.kind in "ui" and set(np.unique(h.data)) <= {0, 1}
            for h in hdul[1:]
        )
    on = [_electrons(small / n) for n in LAMP_ON]
    off = [_electrons(small / n) for n in LAMP_OFF]
    for i in range(4):
        on_i = np.median([f[i] for f in on], axis=0)
        off_i = np.median([f[i] for f in off], axis=0)
        lamp = on_i - off_i
        low = lamp < 0.5 * np.median(lamp)
        thermal = off_i - np.median(off_i[~low]) * response[i] / np.median(response[i][~low])
        hot = thermal > 120.0
        found = low | hot
        assert np.array_equal(found, bpm[i])
    # The unilluminated outer rows and columns are flagged on every array.
    regions = sim.array_regions("small")
    for i, region in enumerate(regions):
        yy, xx = np.mgrid[region.y1 : region.y2, region.x1 : region.x2]
        edge = (xx < 4) | (xx >= 2044) | (yy < 4) | (yy >= 2044)
        assert edge.sum() == 2 * 4 * 256 - 16
        assert bpm[i][edge].all()


def test_saturation_clip(small):
    for name in SCIENCE:
        _, _, data = _read(small / name)
        for i, d in enumerate(data):
            assert d.dtype == np.dtype(">f4")
            assert d.max() <= gsaoi.ARRAYS[i].saturation_adu


def test_full_size_headers_without_pixels():
    frame = sim.observing_plan("full", 0)[-1]
    phu, exts = sim.frame_headers(frame, "full", 0)
    small_exts = sim.frame_headers(frame, "small", 0)[1]
    assert phu["SIMSIZE"] == "full"
    for i, (h, s) in enumerate(zip(exts, small_exts, strict=True)):
        assert h["DETSEC"] == gsaoi.ARRAYS[i].detsec
        assert h["CCDSEC"] == h["DATASEC"] == "[1:2048,1:2048]"
        ccd = parse_section(s["CCDSEC"])
        assert s["CRPIX1"] == pytest.approx(h["CRPIX1"] - ccd.x1)
        assert s["CRPIX2"] == pytest.approx(h["CRPIX2"] - ccd.y1)
        # Mirrored parity: +x is East, +y is North.
        assert h["CD1_1"] > 0 and h["CD2_2"] > 0
        assert np.sqrt(abs(h["CD1_1"] * h["CD2_2"] - h["CD1_2"] * h["CD2_1"])) * 3600 == pytest.approx(
            gsaoi.PIXEL_SCALE, rel=0.03
        )


def test_same_seed_same_bytes(small, tmp_path):
    again = tmp_path / "again"
    sim.simulate_gsaoi_offsetsky(again, size="small", seed=SEED)
    names = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(small, again, [str(n) for n in names], shallow=False)
    assert not mismatch and not errors


def test_invalid_size():
    with pytest.raises(ValueError, match="size"):
        sim.array_regions("medium")
