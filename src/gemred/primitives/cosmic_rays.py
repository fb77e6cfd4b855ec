"""Cosmic rays found by comparing aligned frames (DRAGONS ``flagCosmicRaysByStacking``).

The frames are median-combined (with additive offsets); sources found on the median are
protected; a pixel of one frame that stands more than ``hsigma`` times its own noise above
the median is flagged ``COSMIC_RAY`` in DQ, and the flag is grown by ``dilation`` pixels.
Where only two frames are usable (the edges of a dither pattern) the lower of the two takes
the median's place, for the sources and the threshold: their median is their mean, which a
cosmic ray in either pulls halfway up. Where only one is (beside another frame's chip gap or
bad column), the median of the usable pixels in a 5 x 5 box around the pixel does: a cosmic
ray covers too few of them to move it, a star is still found on it and protected.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import bottleneck as bn
import numpy as np
from scipy import ndimage

from gemred import dq
from gemred.detection import object_mask
from gemred.frame import Extension, Frame

__all__ = ["flag_cosmic_rays_by_stacking"]

log = logging.getLogger(__name__)

_UNUSABLE = dq.NO_DATA | dq.BAD_PIXEL | dq.UNILLUMINATED
#: Row bands the stack medians are split into (computed two at a time; bottleneck frees the GIL).
_BANDS = 8
#: Half-width of the box whose median is the reference where only one frame is usable.
_LONE_RADIUS = 2
#: Rows of a lone region's box whose medians are computed at a time (bounds the 25 copies).
_LONE_BAND = 256


def _stack_nanmedian(cube: np.ndarray, pool: ThreadPoolExecutor) -> np.ndarray:
    """``bn.nanmedian(cube, axis=0)``, computed in row bands on two threads."""
    out = np.empty(cube.shape[1:], dtype=cube.dtype)
    edges = np.linspace(0, cube.shape[1], _BANDS + 1).astype(int)

    def band(k: int) -> None:
        rows = slice(edges[k], edges[k + 1])
        out[rows] = bn.nanmedian(cube[:, rows], axis=0)

    list(pool.map(band, range(_BANDS)))
    return out


def _fill_local_median(
    image: np.ndarray, where: np.ndarray, radius: int, out: np.ndarray, pool: ThreadPoolExecutor
) -> None:
    """Set ``out`` on the pixels of ``where`` to the median of the finite pixels of ``image``
    in the ``2 radius + 1`` square box around each, computed on the boxes that hold
    ``where``'s regions, :data:`_LONE_BAND` rows at a time, on the pool's threads (boxes may
    overlap, but a pixel's value does not depend on the box it is computed in)."""
    labels, _ = ndimage.label(where)
    ny, nx = image.shape
    size = 2 * radius + 1

    def fill(rows: slice, cols: slice, start: int) -> None:
        x0, x1 = max(cols.start - radius, 0), min(cols.stop + radius, nx)
        stop = min(start + _LONE_BAND, rows.stop)
        y0, y1 = max(start - radius, 0), min(stop + radius, ny)
        box = np.pad(image[y0:y1, x0:x1], radius, constant_values=np.nan)
        windows = np.lib.stride_tricks.sliding_window_view(box, (size, size))
        local = bn.nanmedian(windows.reshape(*windows.shape[:2], size * size), axis=2)
        band = (slice(start, stop), slice(x0, x1))
        inside = where[band]
        out[band][inside] = local[start - y0 : stop - y0][inside]

    work = [
        (rows, cols, start)
        for rows, cols in ndimage.find_objects(labels)
        for start in range(rows.start, rows.stop, _LONE_BAND)
    ]
    list(pool.map(lambda item: fill(*item), work))


def _dilated(hits: np.ndarray, dilation: int) -> np.ndarray:
    """``hits`` grown to every pixel of the ``2 dilation + 1`` square around each (the 3x3
    structure applied ``dilation`` times), set pixel by pixel: hits are a few thousand of
    millions, so this is many times faster than a filter over the whole image."""
    rows, cols = np.nonzero(hits)
    grown = hits.copy()
    ny, nx = hits.shape
    for dy in range(-dilation, dilation + 1):
        for dx in range(-dilation, dilation + 1):
            grown[np.clip(rows + dy, 0, ny - 1), np.clip(cols + dx, 0, nx - 1)] = True
    return grown


def _flag_with(
    pool: ThreadPoolExecutor,
    frames: list[Frame],
    *,
    hsigma: float,
    dilation: int,
    detect: dict | None,
) -> list[tuple[Frame, int]]:
    """The work of :func:`flag_cosmic_rays_by_stacking`: each frame flagged, with its number
    of flagged pixels."""
    usable = [(f[0].dq & _UNUSABLE) == 0 for f in frames]
    # One float32 stack with unusable pixels NaN, filled frame by frame (no other stack copy).
    masked = np.full((len(frames), *frames[0][0].shape), np.nan, dtype=np.float32)
    for plane, frame, good in zip(masked, frames, usable, strict=True):
        np.copyto(plane, frame[0].sci, where=good)
    rough = _stack_nanmedian(masked, pool)
    # Each frame's level against the rough median, from every fourth row and column.
    offsets = np.array([bn.nanmedian(m[::4, ::4] - rough[::4, ::4]) for m in masked], dtype=np.float32)
    masked -= offsets[:, None, None]
    median = _stack_nanmedian(masked, pool)
    # Where only two frames are usable their median is their mean, which a cosmic ray in one
    # of them pulls halfway up: there the reference is the lower of the two (the other frame),
    # and sources are found on it too, lest such a cosmic ray be protected as a source. Where
    # one frame alone is, it is that frame's own median around the pixel.
    reference = median
    count = np.sum(usable, axis=0, dtype=np.uint8)
    pair, lone = count == 2, count == 1
    del count
    if pair.any() or lone.any():
        reference = median.copy()
        reference[pair] = np.nanmin(masked[:, pair], axis=0)
        if lone.any():
            _fill_local_median(median, lone, _LONE_RADIUS, reference, pool)
    reference[~np.isfinite(reference)] = 0
    del masked, rough, pair, lone, median
    ref = frames[0][0]
    protected = object_mask(Extension(reference, ref.header, None, ref.dq), **(detect or {}))

    def flag(frame: Frame, offset: np.float32, good: np.ndarray) -> tuple[Frame, int]:
        ext = frame[0]
        image = ext.sci
        excess = image - offset
        excess -= reference
        if ext.var is not None:
            limit = np.sqrt(np.maximum(ext.var, 0))
            limit *= hsigma
        else:
            limit = hsigma * np.nanstd(image - reference)
        hits = excess > limit
        del excess, limit
        hits &= good
        hits &= ~protected
        if dilation and hits.any():
            hits = _dilated(hits, dilation) & good
        flagged = frame.copy(deep=False)  # SCI and VAR shared; DQ is a new array
        flagged[0].dq = ext.dq | (hits * np.uint16(dq.COSMIC_RAY))
        flagged.stamp("CRMASKED", "UT time stamp: cosmic rays flagged by stacking")
        return flagged, int(hits.sum())

    return list(pool.map(flag, frames, offsets, usable))


def flag_cosmic_rays_by_stacking(
    frames: list[Frame], *, hsigma: float = 7.0, dilation: int = 1, detect: dict | None = None
) -> list[Frame]:
    """Flag cosmic rays in aligned single-extension frames sharing one pixel grid.

    Parameters
    ----------
    frames : list of Frame
        At least two resampled frames (SCI, VAR and DQ on the same grid), in electrons.
    hsigma : float
        Threshold above the median image, in units of each pixel's own noise.
    dilation : int
        Pixels by which each flagged area grows.
    detect : dict, optional
        Parameters of :func:`gemred.detection.object_mask` for the protected sources.

    Returns
    -------
    list of Frame
        New frames with ``COSMIC_RAY`` set in DQ (sharing SCI and VAR with the inputs);
        inputs with fewer than two frames come back unchanged.
    """
    if len(frames) < 2:
        log.warning("cosmic-ray flagging needs at least 2 frames; skipped")
        return frames
    # bottleneck's NaN median is many times faster than numpy's on a stack (and equally exact);
    # it and numpy free the GIL, so the work below is shared by two threads.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = _flag_with(pool, frames, hsigma=hsigma, dilation=dilation, detect=detect)
    out = []
    for flagged, count in done:
        log.info("%s: %d pixels flagged as cosmic rays", flagged.root, count)
        out.append(flagged)
    return out
