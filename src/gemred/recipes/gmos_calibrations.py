"""GMOS imaging calibration recipes: master bias, master twilight flat, calibrated science frames.

DRAGONS' ``makeProcessedBias`` (``geminidr/gmos/recipes/sq/recipes_BIAS.py``),
``makeProcessedFlat`` (``recipes_FLAT_IMAGE.py``) and the first steps of ``reduce``
(``recipes_IMAGE.py``, up to ``flatCorrect``); ``shared/reference/reduction-steps.md`` 3.1-3.3.
Files are read here (one at a time: a frame is reduced to its trimmed float32 planes before the
next is read), products are returned as :class:`~gemred.frame.Frame` and the caller writes them
(``<root>_bias.fits``, ``<root>_flat.fits``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from astropy.io import fits

from gemred.frame import Frame
from gemred.io import GemredInputError, read_bpm, read_frame
from gemred.primitives.ccd import adu_to_electrons, subtract_bias, subtract_overscan, trim_overscan
from gemred.primitives.flat import ccd2_mean, flat_correct, normalize_flat_gmos, scale_flats, threshold_flat
from gemred.primitives.standardize import add_dq, add_var, prepare
from gemred.stacking import n_threads, stack_frames

__all__ = [
    "OVERSCAN_DEFAULTS",
    "BIAS_STACK_DEFAULTS",
    "FLAT_STACK_DEFAULTS",
    "THRESHOLD_DEFAULTS",
    "flat_rejection",
    "make_master_bias",
    "make_master_flat",
    "calibrate_science",
]

#: GMOS ``overscanCorrect`` defaults (Hamamatsu): one level per row, 4 contaminated columns.
OVERSCAN_DEFAULTS: dict[str, object] = {
    "function": "none",
    "order": None,
    "lsigma": 3.0,
    "hsigma": 3.0,
    "niter": 0,
    "nbiascontam": 4,
}
#: ``stackBiases``: mean with variance clipping about the median, to convergence; the stack's
#: band work arrays are kept small because the inputs themselves are all in memory.
BIAS_STACK_DEFAULTS: dict[str, object] = {
    "operation": "mean",
    "reject_method": "varclip",
    "lsigma": 3.0,
    "hsigma": 3.0,
    "memory_mb": 64,
}
#: ``stackFlats`` (GMOS): mean with min/max rejection; ``nlow``/``nhigh`` from :func:`flat_rejection`.
FLAT_STACK_DEFAULTS: dict[str, object] = {"operation": "mean", "reject_method": "minmax", "memory_mb": 64}
#: Response range of a usable flat pixel.
THRESHOLD_DEFAULTS: dict[str, float] = {"low": 0.5, "high": 2.0}

PathLike = str | os.PathLike
T = TypeVar("T")


def flat_rejection(nflats: int) -> tuple[int, int]:
    """DRAGONS' GMOS ``stackFlats`` rule: (nlow, nhigh) rejected for ``nflats`` inputs.

    Examples
    --------
    >>> [flat_rejection(n) for n in (2, 5, 8, 12)]
    [(0, 0), (1, 1), (2, 2), (2, 3)]
    """
    if nflats <= 2:
        return 0, 0
    if nflats <= 5:
        return 1, 1
    if nflats <= 10:
        return 2, 2
    return 2, 3


def _overscan_params(overscan: Mapping[str, object] | None) -> dict[str, object]:
    params = dict(OVERSCAN_DEFAULTS)
    params.update(overscan or {})
    return params


def _standardized(
    path: PathLike, bpm: Frame | None, overscan: Mapping[str, object], *, kind: str | None = None
) -> Frame:
    """Raw file -> prepared, DQ and read variance added, overscan subtracted and trimmed (ADU)."""
    raw = read_frame(path, memmap=True)
    if kind == "BIAS" and str(raw.phu.get("OBSTYPE", "")).strip().upper() != "BIAS":
        msg = f"{path}: OBSTYPE={raw.phu.get('OBSTYPE')!r}, not a bias; remove it from the bias list"
        raise GemredInputError(msg)
    if kind == "FLAT" and not _is_flat(raw.phu):
        msg = f"{path}: OBJECT={raw.phu.get('OBJECT')!r}, not a twilight or lamp flat"
        raise GemredInputError(msg)
    frame = prepare(raw)
    del raw
    frame = add_var(add_dq(frame, bpm), read_noise=True)
    return trim_overscan(subtract_overscan(frame, **overscan))


def _share_constant_planes(frame: Frame, shared_dq: dict[int, np.ndarray]) -> Frame:
    """Hold a bias frame's repeated planes once, read-only, so ten full-size biases stay well
    under 1 GB: a VAR plane of one value (the read noise) becomes that value broadcast, and a
    DQ plane equal to the one stored for its extension in ``shared_dq`` (the static BPM, the
    same in every bias) becomes that array."""
    for i, ext in enumerate(frame):
        if ext.var is not None and ext.var.size and ext.var.min() == ext.var.max():
            ext.var = np.broadcast_to(ext.var.flat[0], ext.var.shape)
        if ext.dq is not None:
            reference = shared_dq.setdefault(i, ext.dq)
            if reference is not ext.dq and np.array_equal(reference, ext.dq):
                ext.dq = reference
            ext.dq.flags.writeable = False
    return frame


def _map_frames(work: Callable[[T], Frame], items: Sequence[T]) -> list[Frame]:
    """``[work(item) for item in items]`` on the job's threads (numpy frees the GIL for most
    of the pixel work), in order, so the result does not depend on the thread count."""
    workers = min(len(items), n_threads())
    if workers <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, items))


def _is_flat(phu: fits.Header) -> bool:
    obj = str(phu.get("OBJECT", "")).strip().lower()
    return obj in ("twilight", "domeflat") or str(phu.get("OBSTYPE", "")).strip().upper() == "FLAT"


def _bpm(bpm_path: PathLike | None) -> Frame | None:
    return None if bpm_path is None else read_bpm(bpm_path)


def _need_inputs(raw_paths: Sequence[PathLike], what: str) -> list[PathLike]:
    paths = list(raw_paths)
    if not paths:
        msg = f"no raw files given to make a master {what}"
        raise GemredInputError(msg)
    return paths


def make_master_bias(
    raw_paths: Sequence[PathLike],
    *,
    bpm_path: PathLike | None = None,
    overscan: Mapping[str, object] | None = None,
    stack: Mapping[str, object] | None = None,
) -> Frame:
    """Make a GMOS master bias (DRAGONS ``makeProcessedBias``).

    Each raw bias is prepared, gets DQ (BPM, saturation) and read-noise variance, is
    overscan-corrected and trimmed; the frames are mean-combined with variance clipping.

    Parameters
    ----------
    raw_paths : sequence of path-like
        Raw biases of one binning, read mode and read-out area.
    bpm_path : path-like, optional
        Static bad-pixel mask file.
    overscan : mapping, optional
        Overrides of :data:`OVERSCAN_DEFAULTS` (see :func:`~gemred.primitives.ccd.subtract_overscan`).
    stack : mapping, optional
        Overrides of :data:`BIAS_STACK_DEFAULTS` (see :func:`gemred.stacking.stack_frames`).

    Returns
    -------
    Frame
        The master bias in ADU, named after the first input (written as ``<root>_bias.fits``);
        ``PROCBIAS`` (and the stack's ``NCOMBINE``) in its primary header.

    Raises
    ------
    GemredInputError
        If there are no inputs, one is not a bias, or inputs do not match.
    """
    paths = _need_inputs(raw_paths, "bias")
    bpm = _bpm(bpm_path)
    params = _overscan_params(overscan)
    shared_dq: dict[int, np.ndarray] = {}
    frames = _map_frames(
        lambda path: _share_constant_planes(_standardized(path, bpm, params, kind="BIAS"), shared_dq), paths
    )
    master = stack_frames(frames, scale=False, zero=False, **{**BIAS_STACK_DEFAULTS, **(stack or {})})
    master.stamp("PROCBIAS", "UT time stamp: processed bias")
    return master


def make_master_flat(
    raw_paths: Sequence[PathLike],
    *,
    bias: Frame,
    bpm_path: PathLike | None = None,
    overscan: Mapping[str, object] | None = None,
    stack: Mapping[str, object] | None = None,
    threshold: Mapping[str, float] | None = None,
) -> Frame:
    """Make a normalised GMOS imaging flat from twilight flats (DRAGONS ``makeProcessedFlat``).

    Each flat is standardised and trimmed as the biases, bias-subtracted, converted to
    electrons and given Poisson variance; the flats are scaled to the first one's CCD2 level,
    mean-combined with min/max rejection (:func:`flat_rejection`), normalised by the CCD2
    level, and pixels of unusable response are flagged (:func:`~gemred.primitives.flat.threshold_flat`).

    Parameters
    ----------
    raw_paths : sequence of path-like
        Raw flats of one filter, binning, read mode and read-out area.
    bias : Frame
        The matching master bias.
    bpm_path : path-like, optional
        Static bad-pixel mask file.
    overscan, stack, threshold : mapping, optional
        Overrides of :data:`OVERSCAN_DEFAULTS`, :data:`FLAT_STACK_DEFAULTS` (plus the
        ``nlow``/``nhigh`` rule) and :data:`THRESHOLD_DEFAULTS`.

    Returns
    -------
    Frame
        The normalised flat (CCD2 level 1), named after the first input (``<root>_flat.fits``);
        ``PROCFLAT`` (and the stack's ``NCOMBINE``) in its primary header.

    Raises
    ------
    GemredInputError
        If there are no inputs, one is not a flat, or inputs and bias do not match.
    """
    paths = _need_inputs(raw_paths, "flat")
    bpm = _bpm(bpm_path)
    params = _overscan_params(overscan)

    def electrons(path: PathLike) -> Frame:
        frame = subtract_bias(_standardized(path, bpm, params, kind="FLAT"), bias)
        return add_var(adu_to_electrons(frame), read_noise=False, poisson=True)

    unscaled: list[Frame | None] = _map_frames(electrons, paths)
    reference = ccd2_mean(unscaled[0])

    def scaled(index: int) -> Frame:
        frame = scale_flats([unscaled[index]], reference=reference)[0]
        unscaled[index] = None  # so that no more flats than threads are held twice
        return frame

    frames = _map_frames(scaled, range(len(unscaled)))
    nlow, nhigh = flat_rejection(len(frames))
    stack_params = {**FLAT_STACK_DEFAULTS, "nlow": nlow, "nhigh": nhigh, **(stack or {})}
    stacked = stack_frames(frames, scale=False, zero=False, **stack_params)
    del frames
    flat = threshold_flat(normalize_flat_gmos(stacked), **{**THRESHOLD_DEFAULTS, **(threshold or {})})
    flat.stamp("PROCFLAT", "UT time stamp: processed flat")
    return flat


def calibrate_science(
    raw_path: PathLike,
    *,
    bias: Frame,
    flat: Frame,
    bpm_path: PathLike | None = None,
    overscan: Mapping[str, object] | None = None,
) -> Frame:
    """Reduce one raw GMOS science frame up to flat-fielding, per amplifier, in electrons.

    prepare, add_dq, add_var (read), overscan correction, trimming, bias subtraction,
    conversion to electrons, add_var (Poisson), flat correction: VAR is then
    ``RN**2 + max(counts, 0)`` (plus bias and flat terms) in electrons squared.

    Parameters
    ----------
    raw_path : path-like
        Raw science frame.
    bias, flat : Frame
        Matching master bias and normalised flat.
    bpm_path : path-like, optional
        Static bad-pixel mask file.
    overscan : mapping, optional
        Overrides of :data:`OVERSCAN_DEFAULTS`.

    Returns
    -------
    Frame
        The flat-fielded frame, root of the raw file.

    Raises
    ------
    GemredInputError
        If the file is unreadable or does not match the calibrations.
    """
    frame = subtract_bias(_standardized(raw_path, _bpm(bpm_path), _overscan_params(overscan)), bias)
    frame = add_var(adu_to_electrons(frame), read_noise=False, poisson=True)
    return flat_correct(frame, flat)
