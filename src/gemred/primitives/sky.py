"""Sky frames from dithered or offset exposures, and their subtraction (DRAGONS' ``skyCorrect``).

Which frames are sky and which skies serve each object frame is table logic
(:mod:`gemred.sky`); this module does the pixel work of ``shared/reference/reduction-steps.md``
section 4.2, steps 4 and 6, on flat-fielded frames in electrons:

* :func:`sky_object_masks` (step 4): each sky frame gets a first-pass sky made from the
  *other* sky frames without masking, the difference is searched for sources
  (:func:`gemred.detection.object_mask`) and the segmentation is dilated by a disc of radius
  ``dilation`` pixels. A source in one sky frame then cannot print a dark halo into the sky
  of an object frame.
* :func:`make_sky` (``stackSkyFrames``): the skies are brought to the level of the first one
  by additive offsets measured on their unmasked good pixels (``zero=True``, ``scale=False``,
  GSAOI's defaults: no darks are taken); given the skies' times, to the level their levels
  reach at the object frame's time (interpolated through the nearest skies), so that a
  sky drifting through the sequence is followed without looking at the object frame (which,
  in a crowded field, holds diffuse starlight no mask removes). They are then combined pixel
  by pixel by a median with ``minmax`` rejection (``nlow = nhigh = 1``), object pixels left
  out wherever another frame has the sky there (the DQ hierarchy of
  :func:`gemred.stacking.stack_arrays`). The work is done in bands of rows, so its memory is
  bounded by ``memory_mb`` plus the output.
* :func:`subtract_sky` (``subtractSky``): the sky is subtracted; with ``offset_sky`` its
  additive level is first matched to the frame's, per array, on the pixels of the
  difference that are not sources. VAR adds, DQ ORs.

GSAOI's DRAGONS defaults (``geminidr/gsaoi/parameters_gsaoi.py``): dilation 6 px, median,
minmax with ``nlow = nhigh = 1``, ``zero=True``, ``offset_sky=True``; the GSAOI tutorial sets
``offset_sky=False`` for a target that fills the field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from gemred.detection import object_mask
from gemred.dq import BAD_PIXEL, COSMIC_RAY, NO_DATA, UNILLUMINATED
from gemred.frame import Extension, Frame, copy_header
from gemred.io import GemredInputError
from gemred.stacking import clipped_median, level_offsets, stack_arrays

__all__ = [
    "SKY_DEFAULTS",
    "SKY_DETECT_DEFAULTS",
    "sky_object_masks",
    "sky_object_mask",
    "background_levels",
    "make_sky",
    "subtract_sky",
]

log = logging.getLogger(__name__)

#: DRAGONS' GSAOI ``skyCorrect`` defaults (``stackSkyFrames`` + ``subtractSky``), and gemred's
#: ``follow_drift`` (the sky's level brought to the object frame's time; false: DRAGONS' behaviour,
#: the nearest sky's level).
SKY_DEFAULTS: dict[str, object] = {
    "mask_objects": True,
    "dilation": 6.0,
    "operation": "median",
    "reject": "minmax",
    "nlow": 1,
    "nhigh": 1,
    "offset_sky": True,
    "follow_drift": True,
}
#: Detection for the sky masks: DRAGONS' GSAOI ``detectSources`` (1 sigma, 20 pixels) with a
#: background mesh as large as its 256 pixels, so that the halos of bright stars, already freed
#: of the sky by the first pass, are found rather than taken for background.
SKY_DETECT_DEFAULTS: dict[str, float] = {
    "threshold": 1.0,
    "minarea": 20,
    "back_size": 256,
    "back_filtersize": 5,
}
#: Private DQ bit marking object pixels in the band work arrays only (never in an output):
#: outside the DQ hierarchy, so the stack uses such a pixel only if every input is one.
_OBJECT = np.uint16(1 << 15)
#: DQ bits of pixels that do not measure the sky level.
_LEVEL_BAD = BAD_PIXEL | COSMIC_RAY | NO_DATA | UNILLUMINATED
#: Largest number of pixels per extension used to measure a level (evenly spaced rows).
_LEVEL_PIXELS = 1 << 20
#: Work bytes per input pixel of a band: SCI, VAR, DQ copies plus the sorted stack.
_BAND_BYTES_PER_PIXEL = 24
Masks = Sequence[Sequence[np.ndarray]]


def _check_frames(frames: Sequence[Frame], what: str) -> list[Frame]:
    frames = list(frames)
    if not frames:
        msg = f"{what}: no sky frames given"
        raise GemredInputError(msg)
    shapes = [ext.shape for ext in frames[0]]
    for frame in frames[1:]:
        if [ext.shape for ext in frame] != shapes:
            msg = (
                f"{frame.root}: array shapes {[ext.shape for ext in frame]} differ from {frames[0].root}'s "
                f"{shapes}; skies must have the read-out area of the object frame"
            )
            raise GemredInputError(msg)
    return frames


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Grow a 2-D mask by a disc of ``radius`` pixels (float radius, as DRAGONS' ``dilation``).

    The same set as a binary dilation by the disc ``x**2 + y**2 <= radius**2``, built as the
    union over row offsets ``dy`` of the mask dilated along rows by the disc's half-width at
    ``dy`` (a running maximum) and shifted by ``dy``: a few passes over the image instead of
    a Euclidean distance transform, several times faster.
    """
    if radius < 1 or not mask.any():
        return mask
    r = int(np.floor(radius + 1e-9))
    mask = np.asarray(mask, dtype=np.uint8)
    ny = mask.shape[0]
    out = np.zeros(mask.shape, dtype=bool)
    by_width: dict[int, np.ndarray] = {}
    for dy in range(-r, r + 1):
        half = int(np.floor(np.sqrt(max(radius * radius - dy * dy, 0.0)) + 1e-9))
        if half not in by_width:
            by_width[half] = ndimage.maximum_filter1d(mask, 2 * half + 1, axis=1, mode="constant").view(bool)
        rows = by_width[half]
        # Pixel y is masked if row y - dy of the row-dilated mask is.
        if dy >= 0:
            out[dy:] |= rows[: ny - dy]
        else:
            out[:dy] |= rows[-dy:]
    return out


def _difference(ext: Extension, background: Extension) -> Extension:
    """``ext - background`` with the VAR of both and the DQ of both (for detection)."""
    var = None if ext.var is None else ext.var + (0 if background.var is None else background.var)
    dq = ext.dq if background.dq is None else (background.dq if ext.dq is None else ext.dq | background.dq)
    return Extension(ext.sci - background.sci, ext.header, var=var, dq=dq)


def _masks_of(frame: Frame, background: Frame, dilation: float, detect: Mapping | None) -> list[np.ndarray]:
    """Dilated source masks of ``frame - background``, one per extension."""
    masks = []
    for ext, bg in zip(frame, background, strict=True):
        diff = _difference(ext, bg)
        try:
            found = object_mask(diff, dilation=0, **{**SKY_DETECT_DEFAULTS, **(detect or {})})
        except ValueError as err:
            msg = f"{frame.root}: source detection for the sky mask failed ({err}); check the detect options"
            raise GemredInputError(msg) from err
        masks.append(_dilate(found, dilation))
    return masks


def _rejection(n_img: int, reject: str, nlow: int, nhigh: int) -> tuple[str, int, int]:
    """Lower ``nlow``/``nhigh`` (high first) so that ``minmax`` keeps at least one input."""
    if reject != "minmax" or nlow + nhigh < n_img:
        return reject, nlow, nhigh
    new_high = min(nhigh, max(0, n_img - 1))
    new_low = min(nlow, max(0, n_img - 1 - new_high))
    log.warning(
        "only %d sky frame(s): minmax rejection lowered from nlow=%d, nhigh=%d to %d, %d",
        n_img,
        nlow,
        nhigh,
        new_low,
        new_high,
    )
    return reject, new_low, new_high


def sky_object_masks(
    frames: Sequence[Frame],
    *,
    dilation: float = 6.0,
    detect: Mapping | None = None,
    memory_mb: float = 512.0,
) -> list[list[np.ndarray]]:
    """Source masks of sky frames, found on first-pass sky-subtracted copies (DRAGONS step 4).

    Each frame's first-pass sky is the median of all the *other* frames, offset to a common
    level, without object masks; sources are detected on the difference
    (:func:`gemred.detection.object_mask`) and the masks dilated by a disc of radius
    ``dilation``. The median is taken without rejection: dropping as many low as high values
    before a median leaves it unchanged, and skipping the rejection makes the first pass
    about four times cheaper. Compute the masks once per sky frame and pass them to every
    :func:`make_sky` that uses the frame.

    Parameters
    ----------
    frames : sequence of Frame
        At least two flat-fielded sky frames with the same extensions (VAR used as the noise).
    dilation : float
        Radius in pixels of the disc by which each mask is grown.
    detect : mapping, optional
        Overrides of :data:`SKY_DETECT_DEFAULTS`, options of
        :func:`gemred.detection.object_mask` (``threshold``, ``minarea``, ``back_size``, ...).
    memory_mb : float
        Memory for the band work arrays of the first-pass skies.

    Returns
    -------
    list of list of numpy.ndarray
        Per frame, per extension, ``True`` on source pixels.

    Raises
    ------
    GemredInputError
        With fewer than two frames, frames of different shapes, or a failed detection
        (naming the frame).
    """
    frames = _check_frames(frames, "sky_object_masks")
    if len(frames) < 2:
        msg = f"{frames[0].root}: a sky frame's sources are found against other sky frames; give at least two"
        raise GemredInputError(msg)
    if dilation < 0:
        msg = f"dilation must be >= 0, not {dilation}"
        raise ValueError(msg)
    return [
        sky_object_mask(
            frame, frames[:i] + frames[i + 1 :], dilation=dilation, detect=detect, memory_mb=memory_mb
        )
        for i, frame in enumerate(frames)
    ]


def sky_object_mask(
    frame: Frame,
    others: Sequence[Frame],
    *,
    dilation: float = 6.0,
    detect: Mapping | None = None,
    memory_mb: float = 512.0,
) -> list[np.ndarray]:
    """Source masks of one sky frame, found against the median of ``others`` (DRAGONS step 4).

    The per-frame step of :func:`sky_object_masks`, for a workflow that computes each sky
    frame's masks once and reuses them in every sky made from that frame.

    Parameters
    ----------
    frame : Frame
        Flat-fielded sky frame (VAR used as the noise).
    others : sequence of Frame
        At least one other sky frame with the same extensions: their median, offset to a
        common level, is the first-pass sky.
    dilation : float
        Radius in pixels of the disc by which each mask is grown.
    detect : mapping, optional
        Overrides of :data:`SKY_DETECT_DEFAULTS`.
    memory_mb : float
        Memory for the band work arrays of the first-pass sky.

    Returns
    -------
    list of numpy.ndarray
        Per extension, ``True`` on source pixels.

    Raises
    ------
    GemredInputError
        Without other frames, with frames of different shapes, or a failed detection.
    """
    if not others:
        msg = f"{frame.root}: a sky frame's sources are found against other sky frames; give at least one"
        raise GemredInputError(msg)
    if dilation < 0:
        msg = f"dilation must be >= 0, not {dilation}"
        raise ValueError(msg)
    _check_frames([frame, *others], "sky_object_mask")
    first_pass = make_sky(others, mask_objects=False, reject="none", memory_mb=memory_mb)
    return _masks_of(frame, first_pass, dilation, detect)


def _level_rows(ny: int, nx: int) -> np.ndarray:
    step = max(1, int(np.ceil(ny * nx / _LEVEL_PIXELS)))
    return np.arange(0, ny, step)


def _work_dq(
    ext: Extension, mask: np.ndarray | None, rows: slice | np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The DQ of some rows of ``ext`` with :data:`_OBJECT` set on ``mask``, in ``out`` if given."""
    shape = ext.sci[rows].shape
    dq = np.empty(shape, np.uint16) if out is None else out
    if ext.dq is None:
        dq[...] = 0
    else:
        np.copyto(dq, ext.dq[rows])
    if mask is not None:
        dq[mask[rows]] |= _OBJECT
    return dq


def make_sky(
    frames: Sequence[Frame],
    *,
    mask_objects: bool = True,
    dilation: float = 6.0,
    operation: str = "median",
    reject: str = "minmax",
    nlow: int = 1,
    nhigh: int = 1,
    detect: Mapping | None = None,
    masks: Masks | None = None,
    times: Sequence[float] | None = None,
    tracers: Sequence[tuple[float, Sequence[float]]] = (),
    memory_mb: float = 512.0,
) -> Frame:
    """Combine sky frames into one sky, sources masked (DRAGONS ``stackSkyFrames``, GSAOI).

    Every extension of every frame is offset to the level of the first frame's
    (:func:`gemred.stacking.level_offsets` with ``zero=True``, on the pixels that are neither
    sources nor flagged bad) or, with ``times``, to the level the frames' levels reach at
    time 0 (the parabola through the three nearest in time or, outside the skies' time span,
    the drift that ``tracers`` carry); then the frames are combined
    pixel by pixel with :func:`gemred.stacking.stack_arrays`: source pixels and bad pixels are
    used only where every frame has one there, and the survivors are rejected and combined as
    asked. VAR follows the combination (``pi/2`` times the mean VAR over the count for a
    median), DQ is the OR of the inputs used. Bands of rows are processed at a time.

    Parameters
    ----------
    frames : sequence of Frame
        Flat-fielded sky frames (electrons, with VAR and DQ) with the same extensions; the
        output takes the first one's headers and root.
    mask_objects : bool
        Leave source pixels out of the combination.
    dilation : float
        Radius (pixels) by which the source masks are grown, when they are computed here.
    operation : {'median', 'lmedian', 'mean', 'wtmean'}
        Combination of the surviving inputs.
    reject : {'minmax', 'sigclip', 'varclip', 'none'}
        Rejection before combining (DRAGONS ``reject_method``).
    nlow, nhigh : int
        Inputs dropped at each end by ``minmax``; lowered (with a warning) when too few
        frames are given for them.
    detect : mapping, optional
        Overrides of :data:`SKY_DETECT_DEFAULTS`, when the masks are computed here.
    masks : sequence of sequence of numpy.ndarray, optional
        Precomputed source masks per frame and extension (:func:`sky_object_masks`); if None
        and ``mask_objects``, they are computed here from these frames.
    times : sequence of float, optional
        Mid-exposure time of each frame, in seconds from the object frame's: the sky is
        brought to the level its frames' levels reach at time 0. None: the first frame's
        level.
    tracers : sequence of (float, sequence of float)
        Other object frames of the sequence, to carry the drift when time 0 lies outside the
        skies' time span (used only with ``times``): each as its mid-exposure time from the
        object frame's and, per extension, its :func:`background_levels` minus the object
        frame's.
    memory_mb : float
        Memory for the band work arrays.

    Returns
    -------
    Frame
        The sky, in the units of the inputs: first frame's headers, ``NCOMBINE``,
        ``SKYOFFn`` (offset added to frame n, extension 1) and a ``SKYSTACK`` stamp in the
        primary header; with ``times``, ``SKYDRIFT`` (level change from the first frame to
        time 0) in each extension header.

    Raises
    ------
    GemredInputError
        If no frame is given, their shapes differ, or the masks do not match the frames.
    ValueError
        For invalid stacking options.
    """
    frames = _check_frames(frames, "make_sky")
    if times is not None and len(times) != len(frames):
        msg = f"{frames[0].root}: {len(times)} times given for {len(frames)} sky frames"
        raise GemredInputError(msg)
    if memory_mb <= 0:
        msg = f"memory_mb must be positive (got {memory_mb})"
        raise ValueError(msg)
    n_img = len(frames)
    if mask_objects and masks is None and n_img > 1:
        masks = sky_object_masks(frames, dilation=dilation, detect=detect, memory_mb=memory_mb)
    if not mask_objects:
        masks = None
    if masks is not None:
        masks = [list(m) for m in masks]
        shapes = [[np.shape(m) for m in frame_masks] for frame_masks in masks]
        if shapes != [[ext.shape for ext in frames[0]]] * n_img:
            msg = f"{frames[0].root}: the {len(masks)} object masks given do not match the {n_img} sky frames"
            raise GemredInputError(msg)
    reject, nlow, nhigh = _rejection(n_img, reject, nlow, nhigh)
    stack_kwargs = {"operation": operation, "reject_method": reject, "nlow": nlow, "nhigh": nhigh}
    has_var = all(ext.var is not None for frame in frames for ext in frame)
    all_offsets = []
    for k, template in enumerate(frames[0]):
        ext_masks = [None] * n_img if masks is None else [m[k] for m in masks]
        rows = _level_rows(*template.shape)
        samples = (
            (f[k].sci[rows], _work_dq(f[k], m, rows) & np.uint16(_OBJECT | _LEVEL_BAD))
            for f, m in zip(frames, ext_masks, strict=True)
        )
        all_offsets.append(level_offsets(samples, zero=True)[1])
    drifts = None if times is None else _level_changes_to_zero(times, all_offsets, tracers)
    out_exts = []
    # Work cubes, one per plane, filled in place band after band and kept for the next
    # extension when its bands have the same shape: pages a process touches anew are costly.
    cubes: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None
    for k, template in enumerate(frames[0]):
        ny, nx = template.shape
        ext_masks = [None] * n_img if masks is None else [m[k] for m in masks]
        header = copy_header(template.header)
        offsets = all_offsets[k]
        if drifts is not None:
            offsets = offsets + drifts[k]
            header["SKYDRIFT"] = (round(drifts[k], 3), "Sky level change to the object's time (e-)")
        sci_out = np.empty((ny, nx), np.float32)
        var_out = np.empty((ny, nx), np.float32) if has_var else None
        dq_out = np.empty((ny, nx), np.uint16)
        step = max(1, int(memory_mb * 2**20 // (n_img * nx * _BAND_BYTES_PER_PIXEL)))
        shape = (n_img, min(step, ny), nx)
        if cubes is None or cubes[0].shape != shape:
            cube = np.empty(shape, np.float32)
            cubes = (cube, np.empty_like(cube) if has_var else None, np.empty(shape, np.uint16))
        cube_sci, cube_var, cube_dq = cubes
        for r0 in range(0, ny, step):
            band = slice(r0, min(r0 + step, ny))
            rows = band.stop - band.start
            sci, dq = cube_sci[:, :rows], cube_dq[:, :rows]
            var = None if cube_var is None else cube_var[:, :rows]
            for i, (f, z, m) in enumerate(zip(frames, offsets, ext_masks, strict=True)):
                np.add(f[k].sci[band], np.float32(z), out=sci[i], dtype=np.float32)
                if var is not None:
                    np.copyto(var[i], f[k].var[band])
                _work_dq(f[k], m, band, out=dq[i])
            s, v, d = stack_arrays(sci, var, dq, **stack_kwargs)
            sci_out[band] = s
            dq_out[band] = d & ~_OBJECT
            if var_out is not None:
                var_out[band] = v
        out_exts.append(Extension(sci_out, header, var=var_out, dq=dq_out))
    phu = copy_header(frames[0].phu)
    phu["NCOMBINE"] = (n_img, "Number of sky frames combined")
    phu["SKYMASK"] = (masks is not None, "Sources masked in the sky frames")
    for i, offset in enumerate(all_offsets[0] + (0.0 if drifts is None else drifts[0]), start=1):
        phu[f"SKYOFF{i}"] = (round(float(offset), 3), f"Offset added to sky frame {i}, extension 1")
    sky = Frame(phu, out_exts, frames[0].root)
    sky.stamp("SKYSTACK", "UT time stamp for make_sky (stackSkyFrames)")
    return sky


def _curve_at(t: np.ndarray, level: np.ndarray, when: float) -> float:
    """The curve through the three frames nearest ``when`` (a line through two, when only two
    are given or the third shares a time), read at ``when``; the nearest frame's level if
    they share one time."""
    nearest = np.argsort(np.abs(t - when), kind="stable")[:3]
    if np.unique(t[nearest]).size < nearest.size:
        nearest = nearest[:2]
    if nearest.size < 2 or t[nearest[0]] == t[nearest[1]]:
        return float(level[nearest[0]])
    coeffs = np.polyfit(t[nearest] - when, level[nearest], nearest.size - 1)
    return float(coeffs[-1])


def _level_changes_to_zero(
    times: Sequence[float],
    offsets: Sequence[np.ndarray],
    tracers: Sequence[tuple[float, Sequence[float]]] = (),
) -> list[float]:
    """Per extension, the level at time 0 minus the first frame's, from the frames' levels.

    In extension ``k`` frame ``i`` is ``-offsets[k][i]`` above the first frame
    (:func:`level_offsets`). The curve through the three frames nearest in time is read at 0:
    on the simulated sky (3 % over a 40-minute period, skies 3.5 minutes apart) a parabola is
    within 1.5 e of the truth between skies, where a line is 5 e off, but extrapolated
    3 minutes before the first sky it is up to 17 e off. So when time 0 lies outside the skies'
    span and ``tracers`` are given, as ``(time, per-extension level minus the object frame's)``
    of other object frames, those inside the span carry the drift: the curve read at a
    tracer's time minus the tracer's level above the object frame gives the level at 0, the
    light of the field itself cancelling between object frames. The sky's drift is the same
    on every array, so the median over tracers and extensions is used for all. Frames all
    taken at one time give no change.
    """
    t = np.asarray(times, np.float64)
    levels = [-np.asarray(o, np.float64) for o in offsets]
    inside = [(when, above) for when, above in tracers if t.min() < when < t.max()]
    if inside and not t.min() <= 0.0 <= t.max():
        estimates = [
            _curve_at(t, level, when) - float(above[k]) - level[0]
            for when, above in inside
            for k, level in enumerate(levels)
        ]
        return [float(np.median(estimates))] * len(levels)
    return [_curve_at(t, level, 0.0) - float(level[0]) for level in levels]


def background_levels(frame: Frame) -> np.ndarray:
    """Background level of each extension of a frame, sources included.

    The 3-sigma clipped median (:func:`gemred.stacking.clipped_median`, that of astropy's
    ``sigma_clipped_stats``) of the finite pixels with no bad DQ bit on evenly spaced rows
    (about a million pixels per extension).
    On frames of one field the sources' share is nearly the same in each, so differences of
    these levels follow the sky (on the full-size simulated crowded field they scatter by
    0.1 to 0.2 e between dithers; the clipping halves the scatter of a plain median).

    Parameters
    ----------
    frame : Frame
        A flat-fielded frame.

    Returns
    -------
    numpy.ndarray
        float64, one level per extension (NaN where no pixel is good).
    """
    levels = []
    for ext in frame:
        rows = _level_rows(*ext.shape)
        sci = np.asarray(ext.sci[rows], dtype=np.float32)
        good = np.isfinite(sci) if ext.dq is None else np.isfinite(sci) & ((ext.dq[rows] & _LEVEL_BAD) == 0)
        levels.append(clipped_median(sci[good], sigma=3.0, maxiters=10))
    return np.array(levels)


def _sky_level(diff: np.ndarray, good: np.ndarray) -> float:
    """Level of the source-free pixels of a sky-subtracted array: their median."""
    values = diff[good]
    return float(np.median(values)) if values.size else 0.0


def subtract_sky(
    frame: Frame,
    sky: Frame,
    *,
    offset_sky: bool = True,
    dilation: float = 6.0,
    detect: Mapping | None = None,
) -> Frame:
    """Subtract a sky frame (DRAGONS ``subtractSky``), optionally matching its level first.

    With ``offset_sky``, for each extension the sources of ``frame - sky`` are found
    (:func:`gemred.detection.object_mask`, dilated by ``dilation``) and the median of the
    difference over the other good pixels is added to the sky before it is subtracted, so the
    background of the result is zero whatever the sky did between the exposures. Without it
    the sky is subtracted as it is. VAR is the sum of both VARs, DQ the OR of both.

    Parameters
    ----------
    frame : Frame
        Flat-fielded object frame (electrons).
    sky : Frame
        Its sky (:func:`make_sky`), same extensions.
    offset_sky : bool
        Match the sky's additive level to the frame's.
    dilation : float
        Radius (pixels) by which the source masks are grown.
    detect : mapping, optional
        Overrides of :data:`SKY_DETECT_DEFAULTS`.

    Returns
    -------
    Frame
        The sky-subtracted frame: ``SKYLEVEL`` (level added to the sky, electrons) in each
        extension header when ``offset_sky``, and ``SKYCORR`` stamped in the primary header.

    Raises
    ------
    GemredInputError
        If the shapes differ, or the frame was already sky-subtracted.
    """
    if [ext.shape for ext in frame] != [ext.shape for ext in sky]:
        msg = (
            f"{frame.root}: array shapes {[ext.shape for ext in frame]} differ from those of its sky "
            f"{sky.root} ({[ext.shape for ext in sky]}); use skies of the same read-out area"
        )
        raise GemredInputError(msg)
    if "SKYCORR" in frame.phu:
        msg = f"{frame.root}: already sky-subtracted (SKYCORR in its header); use the flat-fielded frame"
        raise GemredInputError(msg)
    masks = _masks_of(frame, sky, dilation, detect) if offset_sky else [None] * len(frame)
    out = []
    for ext, sky_ext, mask in zip(frame, sky, masks, strict=True):
        diff = _difference(ext, sky_ext)
        header = copy_header(ext.header)
        if mask is not None:
            good = ~mask & np.isfinite(diff.sci)
            if diff.dq is not None:
                good &= (diff.dq & _LEVEL_BAD) == 0
            level = _sky_level(diff.sci, good)
            diff.sci -= np.float32(level)
            header["SKYLEVEL"] = (round(level, 3), "Level added to the sky before subtraction (e-)")
        out.append(Extension(diff.sci, header, var=diff.var, dq=diff.dq, objcat=ext.objcat))
    result = Frame(copy_header(frame.phu), out, frame.root, {k: t.copy() for k, t in frame.tables.items()})
    result.phu["SKYOFFST"] = (bool(offset_sky), "Sky level matched before subtraction")
    result.stamp("SKYCORR", "UT time stamp for subtract_sky (skyCorrect)")
    return result
