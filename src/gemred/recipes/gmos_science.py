"""GMOS imaging science, DRAGONS' ``reduce`` recipe: frame by frame to a mosaic, then a stack.

:func:`reduce_to_mosaic` takes one raw frame (or a flat-corrected one when a fringe frame must
be made first) through calibration, fringe correction, mosaicking and source detection.
:func:`stack_science` aligns the mosaics of one group, resamples them onto one grid, flags
cosmic rays, brings them to the first frame's exposure time and stacks them into the
``_image`` product.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike

from gemred.alignment import adjust_wcs_to_reference
from gemred.detection import detect_sources
from gemred.frame import Extension, Frame
from gemred.io import read_catalogues, read_frame
from gemred.mosaic import mosaic_gmos
from gemred.preview import write_preview
from gemred.primitives.cosmic_rays import flag_cosmic_rays_by_stacking
from gemred.primitives.fringe import fringe_correct, make_fringe_frame
from gemred.primitives.scaling import scale_counts_to_reference
from gemred.recipes.gmos_calibrations import calibrate_science
from gemred.resample import resample_to_reference, stack_variance_correlation, variance_weight
from gemred.stacking import stack_frames

__all__ = [
    "reduce_to_mosaic",
    "make_fringe",
    "stack_science",
    "detect_options",
    "STACK_DEFAULTS",
]

log = logging.getLogger(__name__)

#: DRAGONS' detectSources parameter names -> :func:`gemred.detection.detect_sources` keywords.
DETECT_NAMES = {"detect_thresh": "threshold", "detect_minarea": "minarea", "deblend_mincont": "deblend_cont"}

#: DRAGONS' GMOS science stack: mean, sigma clipping, additive offsets.
STACK_DEFAULTS = {
    "operation": "mean",
    "reject_method": "sigclip",
    "lsigma": 3.0,
    "hsigma": 3.0,
    "zero": True,
    "memory_mb": 128,  # working memory of the row bands: the frames themselves are already in memory
}


def detect_options(params: Mapping | None) -> dict:
    """Source-detection keywords from parameters named as DRAGONS' ``detectSources`` names them."""
    return {DETECT_NAMES.get(key, key): value for key, value in dict(params or {}).items()}


def reduce_to_mosaic(
    *,
    raw_path: PathLike | None = None,
    bias: Frame | None = None,
    flat: Frame | None = None,
    bpm_path: PathLike | None = None,
    overscan: Mapping | None = None,
    flat_corrected: Frame | None = None,
    fringe: Frame | None = None,
    fringe_options: Mapping | None = None,
    interpolant: str = "poly3",
    detect: Mapping | None = None,
) -> Frame:
    """One science frame, calibrated, fringe-corrected, mosaicked, with its source catalogue.

    Give either ``raw_path`` with ``bias`` and ``flat`` (and optionally ``bpm_path``), or a
    ``flat_corrected`` frame made by :func:`~gemred.recipes.gmos_calibrations.calibrate_science`.

    Returns
    -------
    Frame
        A single-extension mosaic in electrons with SCI, VAR, DQ and an ``OBJCAT`` table.
    """
    if flat_corrected is None:
        if raw_path is None or bias is None or flat is None:
            msg = "reduce_to_mosaic needs raw_path with bias and flat, or a flat_corrected frame"
            raise ValueError(msg)
        flat_corrected = calibrate_science(
            raw_path, bias=bias, flat=flat, bpm_path=bpm_path, overscan=overscan
        )
    frame = flat_corrected
    if fringe is not None:
        frame = fringe_correct(frame, fringe, **dict(fringe_options or {}))
    mosaic = mosaic_gmos(frame, interpolant=interpolant)
    mosaic[0].objcat = detect_sources(mosaic[0], **detect_options(detect))
    log.info("%s: mosaic %s, %d sources", mosaic.root, mosaic[0].shape, len(mosaic[0].objcat))
    return mosaic


def make_fringe(
    frames: list[Frame], *, options: Mapping | None = None, detect: Mapping | None = None
) -> Frame:
    """The fringe frame of a group of flat-corrected science frames (DRAGONS ``makeProcessedFringe``)."""
    return make_fringe_frame(frames, detect=detect_options(detect), **dict(options or {}))


def stack_science(
    mosaics: Sequence[Frame | PathLike],
    *,
    align: Mapping | None = None,
    resample: Mapping | None = None,
    cosmic_rays: Mapping | None = None,
    stack: Mapping | None = None,
    detect: Mapping | None = None,
    preview: PathLike | None = None,
) -> Frame:
    """Align, resample, clean and stack the mosaics of one group into the ``_image`` product.

    Parameters
    ----------
    mosaics : sequence of Frame or path-like
        Single-extension mosaics with OBJCAT (from :func:`reduce_to_mosaic`), or their files;
        the first is the reference for alignment, pixel grid and exposure time. Files are read
        for their headers and catalogues, then for their pixels as they are resampled (the
        next one read while one is resampled), so at most two mosaics' pixels are held with
        the resampled frames.
    align, resample, cosmic_rays, stack, detect : mapping, optional
        Parameters of :func:`~gemred.alignment.adjust_wcs_to_reference`,
        :func:`~gemred.resample.resample_to_reference`,
        :func:`~gemred.primitives.cosmic_rays.flag_cosmic_rays_by_stacking`,
        :func:`~gemred.stacking.stack_frames` (defaults :data:`STACK_DEFAULTS`) and
        :func:`~gemred.detection.detect_sources`.
    preview : path-like, optional
        Also write a zscale PNG of the stack here (:func:`~gemred.preview.write_preview`),
        drawn on a second thread while the stack's sources are detected.

    Returns
    -------
    Frame
        The stack in electrons, named after the first input, with an OBJCAT of its sources.
    """

    def pixels(index: int) -> Extension:
        mosaic = mosaics[index]
        return mosaic[0] if isinstance(mosaic, Frame) else read_frame(mosaic, tables=False)[0]

    frames = [m if isinstance(m, Frame) else read_catalogues(m) for m in mosaics]
    frames = adjust_wcs_to_reference(frames, **dict(align or {}))
    frames = resample_to_reference(frames, pixels=pixels, **dict(resample or {}))
    frames = flag_cosmic_rays_by_stacking(frames, detect=detect_options(detect), **dict(cosmic_rays or {}))
    frames = scale_counts_to_reference(frames)
    stacked = stack_frames(frames, **{**STACK_DEFAULTS, **dict(stack or {})})
    stacked[0].header["VARCORR"] = (
        stack_variance_correlation(
            [variance_weight(frame[0]) for frame in frames],
            [frame[0].header.get("VARCORR", 1.0) for frame in frames],
        ),
        "Variance of a many-pixel sum / sum of its VAR",
    )
    del frames
    stacked[0].header["BUNIT"] = "electron"
    # Drawing reads the stack's planes and header, which detection leaves unchanged; sep frees
    # the GIL, so the two overlap.
    with ThreadPoolExecutor(max_workers=1) as pool:
        drawn = None if preview is None else pool.submit(write_preview, stacked, preview)
        stacked[0].objcat = detect_sources(stacked[0], **detect_options(detect))
        if drawn is not None:
            drawn.result()
    stacked.stamp("PROCSCI", "UT time stamp: processed science")
    log.info("%s: stack of %d frames, %d sources", stacked.root, len(mosaics), len(stacked[0].objcat))
    return stacked
