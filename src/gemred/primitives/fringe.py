"""Fringe frames and fringe correction (DRAGONS ``makeFringeFrame`` and ``fringeCorrect``).

A fringe frame is made from flat-fielded science frames dithered on the sky: each frame's
background level is removed, sources are masked (on the frame minus the median of all
frames, so the fringes themselves are not mistaken for sources), and the frames are
combined. It is then scaled and subtracted from each frame.
"""

from __future__ import annotations

import logging

import numpy as np

from gemred import dq
from gemred.detection import object_mask
from gemred.frame import Extension, Frame
from gemred.io import GemredInputError
from gemred.stacking import stack_frames

__all__ = ["make_fringe_frame", "fringe_scale", "fringe_correct"]

log = logging.getLogger(__name__)


def _good(ext: Extension) -> np.ndarray:
    good = np.isfinite(ext.sci)
    if ext.dq is not None:
        good &= (ext.dq & (dq.FAIL | dq.UNILLUMINATED)) == 0
    return good


def _background(frame: Frame) -> float:
    """Median of the DQ-good pixels of all extensions: the frame's background level."""
    return float(np.median(np.concatenate([ext.sci[_good(ext)] for ext in frame])))


def make_fringe_frame(
    frames: list[Frame],
    *,
    subtract_median_image: bool | None = None,
    dilation: int = 2,
    reject_method: str = "varclip",
    lsigma: float = 3.0,
    hsigma: float = 3.0,
    detect: dict | None = None,
) -> Frame:
    """Combine dithered, flat-fielded science frames into a fringe frame.

    Parameters
    ----------
    frames : list of Frame
        At least three flat-corrected frames of one filter, in electrons, dithered on the sky.
    subtract_median_image : bool, optional
        Find sources on each frame minus the median of all frames, so strong fringes are not
        taken for sources; None means True when any frame is from GMOS-S, as in DRAGONS.
    dilation : int
        Pixels added around every source in the mask.
    reject_method, lsigma, hsigma
        Rejection of the combination (mean).
    detect : dict, optional
        Parameters of :func:`gemred.detection.object_mask`.

    Returns
    -------
    Frame
        The fringe frame (background zero), named after the first input; ``PROCFRNG`` set.

    Raises
    ------
    GemredInputError
        With fewer than three frames.
    """
    if len(frames) < 3:
        names = ", ".join(f.root for f in frames) or "none"
        msg = f"a fringe frame needs at least 3 dithered science frames, got {len(frames)} ({names})"
        raise GemredInputError(msg)
    if subtract_median_image is None:
        subtract_median_image = any(f.instrument == "GMOS-S" for f in frames)
    levels = [_background(f) for f in frames]
    work = []
    for frame, level in zip(frames, levels, strict=True):
        copy = frame.copy()
        for ext in copy:
            ext.sci -= np.float32(level)
        work.append(copy)
    medians = (
        [np.median(np.stack([f[i].sci for f in work]), axis=0) for i in range(len(work[0]))]
        if subtract_median_image
        else [np.zeros_like(ext.sci) for ext in work[0]]
    )
    for frame in work:
        for ext, median in zip(frame, medians, strict=True):
            residual = Extension(ext.sci - median, ext.header, ext.var, ext.dq)
            mask = object_mask(residual, dilation=dilation, **(detect or {}))
            if ext.dq is None:
                ext.dq = np.zeros(ext.shape, dtype=np.uint16)
            ext.dq[mask] |= dq.BAD_PIXEL
    fringe = stack_frames(
        work,
        operation="mean",
        reject_method=reject_method,
        lsigma=lsigma,
        hsigma=hsigma,
        zero=False,
        scale=False,
    )
    fringe.phu["NCOMBINE"] = (len(frames), "Frames combined into the fringe frame")
    fringe.stamp("PROCFRNG", "UT time stamp: processed fringe")
    log.info(
        "fringe frame from %d frames (background levels %s)",
        len(frames),
        ", ".join(f"{v:.0f}" for v in levels),
    )
    return fringe


def fringe_scale(frame: Frame, fringe: Frame, *, iterations: int = 5, clip: float = 3.0) -> float:
    """Least-squares factor ``k`` that minimises the variance of ``frame - k * fringe``.

    Computed over pixels good in both, with iterative sigma clipping of the residual so that
    stars and cosmic rays do not pull the fit (DRAGONS' fallback when no control pairs apply).
    """
    sci = np.concatenate([e.sci[_good(e) & _good(f)] for e, f in zip(frame, fringe, strict=True)]).astype(
        np.float64
    )
    fr = np.concatenate([f.sci[_good(e) & _good(f)] for e, f in zip(frame, fringe, strict=True)]).astype(
        np.float64
    )
    keep = np.ones(sci.size, dtype=bool)
    k = 0.0
    for _ in range(iterations):
        s = sci[keep] - np.mean(sci[keep])
        f = fr[keep] - np.mean(fr[keep])
        k = float(np.dot(s, f) / np.dot(f, f))
        resid = sci - k * fr
        centre = np.median(resid[keep])
        sigma = 1.4826 * np.median(np.abs(resid[keep] - centre))
        keep = np.abs(resid - centre) < clip * sigma
    return k


def fringe_correct(
    frame: Frame,
    fringe: Frame,
    *,
    scale: bool | None = None,
    scale_factor: float | None = None,
) -> Frame:
    """Subtract a scaled fringe frame.

    Parameters
    ----------
    frame : Frame
        Flat-corrected frame, in electrons.
    fringe : Frame
        Fringe frame with the same extensions.
    scale : bool, optional
        Fit the scale (:func:`fringe_scale`). None means DRAGONS' rule: no scaling when the
        fringe frame was made from frames of the same observation, scaling otherwise.
    scale_factor : float, optional
        Use this factor, neither 1 nor fitted.

    Returns
    -------
    Frame
        The corrected frame; ``FRINGEIM`` and ``FRNGSCAL`` in its primary header.
    """
    if len(frame) != len(fringe) or any(a.shape != b.shape for a, b in zip(frame, fringe, strict=True)):
        msg = f"fringe frame {fringe.root} does not match {frame.root} (extensions or shapes differ)"
        raise GemredInputError(msg)
    if scale_factor is not None:
        k = float(scale_factor)
    else:
        if scale is None:
            scale = str(fringe.phu.get("OBSID", "")) != str(frame.phu.get("OBSID", ""))
        k = fringe_scale(frame, fringe) if scale else 1.0
    out = frame.copy()
    for ext, fr in zip(out, fringe, strict=True):
        ext.sci -= np.float32(k) * fr.sci
        if ext.var is not None and fr.var is not None:
            ext.var += np.float32(k * k) * fr.var
        if ext.dq is not None and fr.dq is not None:
            ext.dq |= fr.dq & np.uint16(dq.NO_DATA | dq.UNILLUMINATED)
    out.phu["FRINGEIM"] = (f"{fringe.root}_fringe.fits", "Fringe frame subtracted")
    out.phu["FRNGSCAL"] = (k, "Scale applied to the fringe frame")
    out.stamp("FRINGCOR", "UT time stamp: fringe correction")
    log.info("%s: fringe subtracted with scale %.4f", frame.root, k)
    return out
