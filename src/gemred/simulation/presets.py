"""The simulated datasets: the two DRAGONS imaging tutorials, and a fringed GMOS-S field.

``gmos-starfield`` mirrors the GMOS-N Hamamatsu tutorial (GN-2017A-SV-151): ten biases,
five twilight flats in i and five 10 s dithered i-band science frames, 2x2 binning, full
frame, and its static BPM. ``gsaoi-offsetsky`` mirrors the GSAOI tutorial (GS-2017A-Q-29).
``gmos-fringe`` is a GMOS-S z-band field with strong fringes and enough dithered frames to
build a fringe frame from the science itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gemred.instruments import gmos
from gemred.simulation import gmos as gmos_sim

__all__ = ["PRESETS", "simulate"]

log = logging.getLogger(__name__)

#: Sparse high-latitude fields where the twilight flats are taken (RA, Dec in degrees).
TWILIGHT_FIELD_N = (236.25, 52.5)
TWILIGHT_FIELD_S = (15.0, -45.0)


def _frames(
    names: list[str],
    start: dt.datetime,
    exptimes: list[float],
    overhead: float,
    **common,
) -> list[gmos_sim.FrameSpec]:
    """Consecutive exposures with the same settings; ``datalab`` gets the sequence number."""
    datalab = common.pop("datalab")
    times = [start]
    for t in exptimes[:-1]:
        times.append(times[-1] + dt.timedelta(seconds=t + overhead))
    return [
        gmos_sim.FrameSpec(name=n, exptime=t, ut_start=ts, datalab=f"{datalab}-{i:03d}", **common)
        for i, (n, t, ts) in enumerate(zip(names, exptimes, times, strict=True), start=1)
    ]


def _biases(names: list[str], start: dt.datetime, program: str, obsid: str) -> list[gmos_sim.FrameSpec]:
    return _frames(
        names,
        start,
        [0.0] * len(names),
        20.0,
        obstype="BIAS",
        obsclass="dayCal",
        object="Bias",
        filter_name="open",
        program=program,
        obsid=obsid,
        datalab=obsid,
        tracking="AZEL",
        with_stars=False,
    )


def _twilights(
    names: list[str],
    start: dt.datetime,
    exptimes: list[float],
    levels: list[float],
    filter_name: str,
    program: str,
    obsid: str,
    base: tuple[float, float],
    rng: np.random.Generator,
) -> list[gmos_sim.FrameSpec]:
    """Twilight flats of the sparse field at ``base``: falling level, a weak gradient of random
    direction, stars moved each time."""
    frames = _frames(
        names,
        start,
        exptimes,
        25.0,
        obstype="OBJECT",
        obsclass="dayCal",
        object="Twilight",
        filter_name=filter_name,
        program=program,
        obsid=obsid,
        datalab=obsid,
        base_ra=base[0],
        base_dec=base[1],
        field="twilight",
    )
    for i, (frame, level) in enumerate(zip(frames, levels, strict=True)):
        frame.sky_rate = level / frame.exptime
        angle = rng.uniform(0, 2 * np.pi)
        frame.gradient = (0.002 * np.cos(angle), 0.002 * np.sin(angle))
        # Twilight fields are moved between exposures so that stacking rejects their stars.
        frame.p_offset, frame.q_offset = 30.0 + 12.0 * (i - 2), 4.0 * ((i % 3) - 1)
    return frames


def _science(
    names: list[str],
    start: dt.datetime,
    exptime: float,
    filter_name: str,
    obj: str,
    program: str,
    obsid: str,
    base: tuple[float, float],
    dithers: list[tuple[float, float]],
    sky: float,
    fringe: float,
    rng: np.random.Generator,
) -> list[gmos_sim.FrameSpec]:
    """Dithered science exposures; every frame after the first has a small pointing error."""
    frames = _frames(
        names,
        start,
        [exptime] * len(names),
        30.0,
        obstype="OBJECT",
        obsclass="science",
        object=obj,
        filter_name=filter_name,
        program=program,
        obsid=obsid,
        datalab=obsid,
        base_ra=base[0],
        base_dec=base[1],
        sky_rate=sky,
        fringe_rate=fringe,
    )
    for i, (frame, (p, q)) in enumerate(zip(frames, dithers, strict=True)):
        frame.p_offset, frame.q_offset = p, q
        if i:
            frame.pointing_error = tuple(rng.normal(0.0, 0.15, 2))
        frame.sky_rate = sky * (1.0 + 0.02 * i)
    return frames


def gmos_starfield_plan(size: str, rng: np.random.Generator) -> gmos_sim.PresetPlan:
    """The GMOS-N imaging tutorial dataset (DRAGONS GMOSImg-DRTutorial, example 1)."""
    dset = gmos.detector_set("GMOS-N", dt.date(2017, 6, 14))
    base = (283.7725, 33.0289)
    small = size == "small"
    # Small files keep about 1 arcmin^2 of sky: a denser field with relatively more bright stars
    # keeps enough isolated, well-measured stars there for alignment and photometry.
    scene = gmos_sim.make_scene(
        dset,
        size,
        rng,
        base=base,
        filters=["i"],
        seeing_arcsec=0.75,
        mag_range=(14.5, 23.0) if small else (14.5, 24.0),
        slope=0.25 if small else 0.3,
        density_per_arcmin2=250.0 if small else 40.0,
        margin_arcsec=(60.0, 12.0),
        twilight_base=TWILIGHT_FIELD_N,
    )
    dither = 2.5 if small else 10.0
    dithers = [(0.0, 0.0), (dither, dither), (-dither, dither), (-dither, -dither), (dither, -dither)]
    sky = gmos_sim.sky_rate(dset, "i", scene.geom.pixel_scale)
    frames = (
        _biases(
            [f"N20170613S{n:04d}" for n in range(180, 185)],
            dt.datetime(2017, 6, 13, 18, 2, 11),
            "GN-CAL20170613",
            "GN-CAL20170613-22",
        )
        + _biases(
            [f"N20170615S{n:04d}" for n in range(534, 539)],
            dt.datetime(2017, 6, 15, 17, 55, 40),
            "GN-CAL20170615",
            "GN-CAL20170615-9",
        )
        + _twilights(
            [f"N20170702S{n:04d}" for n in range(178, 183)],
            dt.datetime(2017, 7, 2, 15, 31, 5),
            [40.0, 34.0, 28.0, 22.0, 16.0],
            [32000.0, 29000.0, 26000.0, 23000.0, 20000.0],
            "i",
            "GN-CAL20170702",
            "GN-CAL20170702-5",
            TWILIGHT_FIELD_N,
            rng,
        )
        + _science(
            [f"N20170614S{n:04d}" for n in range(201, 206)],
            dt.datetime(2017, 6, 14, 8, 45, 30),
            10.0,
            "i",
            "starfield",
            "GN-2017A-SV-151",
            "GN-2017A-SV-151-382",
            base,
            dithers,
            sky,
            0.002 * sky,
            rng,
        )
    )
    return gmos_sim.PresetPlan(
        scene, frames, "bpm_20170306_gmos-n_Ham_22_full_12amp.fits", dt.date(2017, 3, 6)
    )


def gmos_fringe_plan(size: str, rng: np.random.Generator) -> gmos_sim.PresetPlan:
    """A GMOS-S Hamamatsu z-band field with strong fringes, six dithered 60 s frames."""
    dset = gmos.detector_set("GMOS-S", dt.date(2019, 5, 10))
    base = (210.8025, -33.8631)
    small = size == "small"
    scene = gmos_sim.make_scene(
        dset,
        size,
        rng,
        base=base,
        filters=["z"],
        seeing_arcsec=0.7,
        mag_range=(15.0, 24.0),
        density_per_arcmin2=120.0 if small else 15.0,
        margin_arcsec=(60.0, 12.0),
        twilight_base=TWILIGHT_FIELD_S,
    )
    step = 6.0
    dithers = [(0.0, 0.0), (step, step), (-step, step), (-step, -step), (step, -step), (0.0, step)]
    sky = gmos_sim.sky_rate(dset, "z", scene.geom.pixel_scale)
    frames = (
        _biases(
            [f"S20190509S{n:04d}" for n in range(101, 106)],
            dt.datetime(2019, 5, 9, 20, 10, 0),
            "GS-CAL20190509",
            "GS-CAL20190509-3",
        )
        + _twilights(
            [f"S20190510S{n:04d}" for n in range(20, 25)],
            dt.datetime(2019, 5, 10, 23, 5, 0),
            [8.0, 10.0, 12.0, 15.0, 18.0],
            [30000.0, 28000.0, 26000.0, 24000.0, 22000.0],
            "z",
            "GS-CAL20190510",
            "GS-CAL20190510-4",
            TWILIGHT_FIELD_S,
            rng,
        )
        + _science(
            [f"S20190511S{n:04d}" for n in range(101, 107)],
            dt.datetime(2019, 5, 11, 3, 20, 0),
            60.0,
            "z",
            "fringe-field",
            "GS-2019A-Q-101",
            "GS-2019A-Q-101-7",
            base,
            dithers,
            sky,
            0.04 * sky,
            rng,
        )
    )
    return gmos_sim.PresetPlan(
        scene, frames, "bpm_20150826_gmos-s_Ham_22_full_12amp.fits", dt.date(2015, 8, 26)
    )


def _gmos(plan_maker: Callable[[str, np.random.Generator], gmos_sim.PresetPlan]):
    def run(out: Path, size: str, seed: int) -> list[Path]:
        rng = np.random.default_rng(seed)
        return gmos_sim.write_preset(plan_maker(size, rng), out, rng)

    return run


def _gsaoi(out: Path, size: str, seed: int) -> list[Path]:
    from gemred.simulation.gsaoi import simulate_gsaoi_offsetsky

    return simulate_gsaoi_offsetsky(out, size=size, seed=seed)


PRESETS: dict[str, Callable[[Path, str, int], list[Path]]] = {
    "gmos-starfield": _gmos(gmos_starfield_plan),
    "gsaoi-offsetsky": _gsaoi,
    "gmos-fringe": _gmos(gmos_fringe_plan),
}


def simulate(preset: str, out: str | Path, *, size: str = "small", seed: int = 0) -> list[Path]:
    """Simulate a preset dataset into ``out`` (raw files) and ``out/truth`` (truth files).

    Parameters
    ----------
    preset : str
        One of ``gmos-starfield``, ``gsaoi-offsetsky``, ``gmos-fringe``.
    out : path-like
        Output folder, created if needed.
    size : {'small', 'full'}
        ``small`` crops every amplifier or array (a few MB in all, the same code paths);
        ``full`` writes real dimensions.
    seed : int
        Random seed; the same seed gives the same files.

    Returns
    -------
    list of pathlib.Path
        The raw files written (and the BPM).
    """
    if preset not in PRESETS:
        msg = f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
        raise ValueError(msg)
    if size not in ("small", "full"):
        msg = f"size must be 'small' or 'full', not {size!r}"
        raise ValueError(msg)
    start = time.perf_counter()
    paths = PRESETS[preset](Path(out), size, seed)
    log.info("simulated %s (%s): %d files in %.1f s", preset, size, len(paths), time.perf_counter() - start)
    return paths
