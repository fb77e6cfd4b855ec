"""Stacking frames pixel by pixel with rejection, the way DRAGONS' ``stackFrames`` does.

The numerical core, :func:`stack_arrays`, combines a stack of ``N`` images (SCI, VAR, DQ) into
one: it picks the inputs of every output pixel by the DQ hierarchy, rejects outliers
(``none``, ``minmax``, ``sigclip``, ``varclip``) and combines what is left (``mean``,
``wtmean``, ``median``, ``lmedian``), propagating variance and ORing the DQ of the pixels
used (``shared/reference/reduction-steps.md`` sections 1 and 5; ``DRAGONS:
gempy/library/nddops.py``).

:func:`stack_frames` stacks :class:`~gemred.frame.Frame` objects extension by extension,
optionally matching their levels: a multiplicative ``scale`` to the first frame, or an
additive ``zero`` to the frames' mean level (DRAGONS: the first frame's; the mean keeps one
frame's background error, e.g. of a sky extrapolated in time, from becoming the stack's).
:func:`stack_files` does the same from processed files on disk, reading each stack in row
bands from files opened once, so memory stays bounded whatever the number of frames; it gives
bit-for-bit the same result as :func:`stack_frames`.

Implementation notes: the stack axis is the first one and every step is vectorised across
pixels. Excluded and rejected inputs become NaN in a float32 work copy; medians come from one
``np.sort`` along the stack axis (NaN sort last), means and standard deviations from
bottleneck's NaN-aware reductions, and clipping iterations after the first only touch the
pixels that still change.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import bottleneck as bn
import numpy as np
from astropy.io import fits

from gemred.dq import BAD_PIXEL, COSMIC_RAY, NO_DATA, NON_LINEAR, OVERLAP, SATURATED, UNILLUMINATED
from gemred.frame import Extension, Frame, copy_header
from gemred.io import open_raw, root_name
from gemred.sections import parse_section

__all__ = [
    "OPERATIONS",
    "REJECT_METHODS",
    "DQ_HIERARCHY",
    "stack_arrays",
    "stack_frames",
    "stack_files",
    "level_offsets",
    "clipped_median",
]

OPERATIONS = ("mean", "wtmean", "median", "lmedian")
REJECT_METHODS = ("none", "minmax", "sigclip", "varclip")

#: DQ bits admitted at each level of the stacking hierarchy, least bad first. An input pixel
#: is as bad as its worst bit; an output pixel uses the inputs of the least bad level present.
DQ_HIERARCHY = (NON_LINEAR | SATURATED, COSMIC_RAY, OVERLAP, BAD_PIXEL, UNILLUMINATED, NO_DATA)

#: Rows of each extension used to measure offsets and scales (evenly spaced).
_STAT_ROWS = 512
#: Work-array bytes per input pixel (SCI, VAR, DQ) and the factor for temporaries.
_BYTES_PER_PIXEL = 4 + 4 + 2
_WORK_FACTOR = 3
#: Stack elements (frames x pixels) handled per chunk of the numerical core.
_CHUNK_ELEMENTS = 1 << 20
#: Largest stack sorted by a sorting network rather than ``np.sort``.
_NETWORK_MAX = 32


def _rank_table() -> np.ndarray:
    """Hierarchy level of every possible uint16 DQ value (len(DQ_HIERARCHY) = other bits)."""
    values = np.arange(1 << 16, dtype=np.uint32)
    rank = np.full(values.size, len(DQ_HIERARCHY), dtype=np.uint8)
    allowed = np.cumsum(DQ_HIERARCHY)
    for level in range(len(DQ_HIERARCHY) - 1, -1, -1):
        rank[(values & ~np.uint32(allowed[level])) == 0] = level
    return rank


_RANK = _rank_table()


@dataclass(frozen=True)
class _Options:
    operation: str
    reject_method: str
    lsigma: float
    hsigma: float
    nlow: float
    nhigh: float
    max_iters: int
    mclip: bool
    apply_dq: bool


def _check_options(
    n_img: int,
    *,
    operation: str,
    reject_method: str,
    lsigma: float,
    hsigma: float,
    nlow: float,
    nhigh: float,
    max_iters: int | None,
    mclip: bool,
    apply_dq: bool,
) -> _Options:
    if operation not in OPERATIONS:
        msg = f"operation must be one of {OPERATIONS}, not {operation!r}"
        raise ValueError(msg)
    if reject_method not in REJECT_METHODS:
        msg = f"reject_method must be one of {REJECT_METHODS}, not {reject_method!r}"
        raise ValueError(msg)
    if nlow < 0 or nhigh < 0:
        msg = f"nlow and nhigh must not be negative (got {nlow}, {nhigh})"
        raise ValueError(msg)
    if reject_method == "minmax" and nlow + nhigh >= n_img:
        msg = f"only {n_img} images but nlow={nlow} and nhigh={nhigh}; nothing would be left"
        raise ValueError(msg)
    if max_iters is not None and max_iters < 1:
        msg = f"max_iters must be at least 1 or None (got {max_iters})"
        raise ValueError(msg)
    return _Options(
        operation,
        reject_method,
        float(lsigma),
        float(hsigma),
        float(nlow),
        float(nhigh),
        100 if max_iters is None else int(max_iters),
        bool(mclip),
        bool(apply_dq),
    )


def stack_arrays(
    sci: np.ndarray,
    var: np.ndarray | None = None,
    dq: np.ndarray | None = None,
    *,
    operation: str = "mean",
    reject_method: str = "sigclip",
    lsigma: float = 3.0,
    hsigma: float = 3.0,
    nlow: float = 0,
    nhigh: float = 0,
    max_iters: int | None = None,
    mclip: bool = True,
    apply_dq: bool = True,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Combine a stack of images pixel by pixel, with DQ selection and outlier rejection.

    For every output pixel, in this order:

    1. **DQ hierarchy** (``apply_dq``): the inputs whose DQ has no bit other than
       non_linear/saturated are used; if there are none, inputs also flagged cosmic_ray are
       admitted, then overlap, bad_pixel, unilluminated and finally no_data
       (:data:`DQ_HIERARCHY`). Inputs with other bits set are used only if nothing else is left.
       NaN inputs are never used.
    2. **Rejection** among those inputs:

       * ``minmax``: the ``nlow`` lowest and ``nhigh`` highest are dropped, the counts scaled
         IRAF-style to the ``n`` inputs left by the DQ selection: ``int(n * nlow / N + 0.001)``.
       * ``sigclip``: iterative clipping about the median (``mclip``; else the median on the
         first pass and the mean after) at ``lsigma``/``hsigma`` times the standard deviation
         (ddof=0) of the surviving inputs, until nothing changes or ``max_iters`` passes
         (None: up to 100). Rejected inputs stay rejected.
       * ``varclip``: as ``sigclip`` but the limits are ``lsigma``/``hsigma`` times each input's
         own sqrt(VAR); without ``var`` it is ``sigclip``.

       A clipping pass that would reject every input of a pixel is not applied to it.
    3. **Combination** of the survivors: ``mean``; ``wtmean`` (inverse-variance weighted mean,
       a plain mean without ``var``; VAR must be positive); ``median`` (mean of the two middle
       values for an even count); ``lmedian`` (the lower of the two).

    Output VAR is the mean of the survivors' VAR divided by their number (``mean``), times
    pi/2 for ``median`` and ``lmedian`` (Laplace's factor for the median, as DRAGONS), and
    ``1 / sum(1 / VAR)`` for ``wtmean``; ``None`` without ``var``. A median after ``minmax``
    that dropped as many inputs low as high is the median of all the good inputs, and its VAR
    is taken over all of them (DRAGONS takes it over the survivors, which overstates it: by
    ``N / (N - 2)`` for seven inputs and ``nlow = nhigh = 1``, by 3.5 for three). Output DQ is the OR of the
    DQ of the survivors (zero everywhere without ``dq``).

    Parameters
    ----------
    sci : numpy.ndarray
        Science stack, shape ``(N, ...)`` (normally ``(N, ny, nx)``); converted to float32.
    var : numpy.ndarray, optional
        Variance stack of the same shape, float32.
    dq : numpy.ndarray, optional
        DQ stack of the same shape, uint16 DRAGONS bits.
    operation : {'mean', 'wtmean', 'median', 'lmedian'}
        How the surviving inputs are combined.
    reject_method : {'none', 'minmax', 'sigclip', 'varclip'}
        How outliers are rejected.
    lsigma, hsigma : float
        Lower and upper clipping limits, in standard deviations.
    nlow, nhigh : float
        Inputs rejected at the low and high ends by ``minmax`` (for ``N`` good inputs).
    max_iters : int, optional
        Maximum number of clipping passes; None iterates to convergence (at most 100).
    mclip : bool
        Clip about the median on every pass (else about the mean after the first).
    apply_dq : bool
        Select inputs by the DQ hierarchy; if False every input is a candidate.
    threads : int, optional
        Threads sharing the pixels (default :func:`n_threads`); the result does not depend
        on it.

    Returns
    -------
    sci : numpy.ndarray
        Combined image, float32, shape ``sci.shape[1:]``; NaN where no input could be used.
    var : numpy.ndarray or None
        Its variance, float32.
    dq : numpy.ndarray
        Its DQ, uint16.

    Raises
    ------
    ValueError
        If the shapes differ, an option is unknown, or ``nlow + nhigh >= N`` for ``minmax``.

    Examples
    --------
    >>> import numpy as np
    >>> sci = np.array([[[1.0]], [[2.0]], [[3.0]], [[100.0]]], dtype=np.float32)
    >>> out, var, dq = stack_arrays(sci, reject_method="minmax", nhigh=1)
    >>> float(out[0, 0])
    2.0
    """
    sci = np.asarray(sci)
    if sci.ndim < 2:
        msg = f"sci must be a stack of shape (N, ...), not {sci.shape}"
        raise ValueError(msg)
    for name, arr in (("var", var), ("dq", dq)):
        if arr is not None and np.shape(arr) != sci.shape:
            msg = f"{name} has shape {np.shape(arr)} but sci has {sci.shape}"
            raise ValueError(msg)
    opts = _check_options(
        sci.shape[0],
        operation=operation,
        reject_method=reject_method,
        lsigma=lsigma,
        hsigma=hsigma,
        nlow=nlow,
        nhigh=nhigh,
        max_iters=max_iters,
        mclip=mclip,
        apply_dq=apply_dq,
    )
    n_img, out_shape = sci.shape[0], sci.shape[1:]
    flat_sci = sci.reshape(n_img, -1)
    flat_var = None if var is None else np.asarray(var).reshape(n_img, -1)
    flat_dq = None if dq is None else np.asarray(dq).reshape(n_img, -1)
    npix = flat_sci.shape[1]
    out_sci = np.empty(npix, dtype=np.float32)
    out_var = None if var is None else np.empty(npix, dtype=np.float32)
    out_dq = np.empty(npix, dtype=np.uint16)

    def run(start: int, stop: int) -> None:
        cols = slice(start, stop)
        s, v, d = _combine_block(
            flat_sci[:, cols],
            None if flat_var is None else flat_var[:, cols],
            None if flat_dq is None else flat_dq[:, cols],
            opts,
        )
        out_sci[cols] = s
        out_dq[cols] = d
        if out_var is not None:
            out_var[cols] = v

    chunk = max(1, _CHUNK_ELEMENTS // n_img)
    starts = range(0, npix, chunk)
    workers = min(len(starts), n_threads() if threads is None else threads)
    with np.errstate(invalid="ignore", divide="ignore"):
        if workers <= 1:
            for start in starts:
                run(start, min(start + chunk, npix))
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda start: run(start, min(start + chunk, npix)), starts))
    return (
        out_sci.reshape(out_shape),
        None if out_var is None else out_var.reshape(out_shape),
        out_dq.reshape(out_shape),
    )


def n_threads() -> int:
    """Threads for the numerical core: the CPUs this process may use, at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def _combine_block(
    sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, opts: _Options, *, shortcut: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Steps 1-3 of :func:`stack_arrays` on ``(N, npix)`` arrays (``shortcut``: see
    :func:`_symmetric_minmax_median`)."""
    x = np.array(sci, dtype=np.float32)
    var = None if var is None else np.asarray(var, dtype=np.float32)
    dq = None if dq is None else np.asarray(dq, dtype=np.uint16)
    if dq is not None and opts.apply_dq:
        _exclude_by_dq(x, dq)
    if (
        shortcut
        and opts.reject_method == "minmax"
        and opts.nlow == opts.nhigh
        and opts.operation in ("median", "lmedian")
    ):
        return _symmetric_minmax_median(x, var, dq, opts)

    ordered = None  # survivors sorted along axis 0: (array, first index, count)
    median_of = None  # inputs whose median the survivors' median is, where that is all of them
    if opts.reject_method == "minmax":
        x, var, dq, ordered, median_of = _minmax(x, var, dq, opts.nlow, opts.nhigh)
    elif opts.reject_method in ("sigclip", "varclip"):
        clip_var = var if opts.reject_method == "varclip" else None
        ordered = _iterclip(x, clip_var, opts)

    keep = ~np.isnan(x)
    op = opts.operation
    if op == "wtmean" and var is not None:
        weight = np.where(keep, np.float32(1) / var, np.float32(0))
        sum_weight = weight.sum(axis=0, dtype=np.float32)
        out = np.where(keep, x * weight, np.float32(0)).sum(axis=0, dtype=np.float32) / sum_weight
        out_var = np.float32(1) / sum_weight
    else:
        if op in ("median", "lmedian"):
            if ordered is None:
                count = np.count_nonzero(keep, axis=0)
                ordered = (_sort_stack(x), np.zeros_like(count), count)
            out = _sorted_median(*ordered, low=op == "lmedian")
        else:
            out = bn.nanmean(x, axis=0)
        out_var = None
        if var is not None:
            # Dropping as many inputs low as high leaves the median that of all the good
            # inputs: its variance is theirs, not that of the fewer survivors.
            used = median_of if median_of is not None and op in ("median", "lmedian") else keep
            count = np.count_nonzero(used, axis=0).astype(np.float32)
            out_var = bn.nansum(np.where(used, var, np.float32(0)), axis=0) / np.square(count)
            if op in ("median", "lmedian"):
                out_var *= np.float32(0.5 * np.pi)
    if dq is None:
        out_dq = np.zeros(x.shape[1], dtype=np.uint16)
    else:
        out_dq = np.bitwise_or.reduce(np.where(keep, dq, np.uint16(0)), axis=0)
    return out, out_var, out_dq


def _symmetric_minmax_median(
    x: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, opts: _Options
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A median after ``minmax`` dropping as many inputs low as high, without the rejection.

    The survivors' median is that of all the good inputs, and so is its VAR; their DQ is the
    OR of the survivors', which is that of all the good inputs wherever those all have DQ 0.
    The median is taken without the rejection, which sorts VAR and DQ with the values and
    costs about four times as much; only the other pixels are then redone with it.
    """
    good = ~np.isnan(x)
    flagged = (
        None if dq is None else np.flatnonzero(np.bitwise_or.reduce(np.where(good, dq, np.uint16(0)), axis=0))
    )
    out = _combine_block(x, var, dq, replace(opts, reject_method="none", apply_dq=False))
    if flagged is None or flagged.size == 0:
        return out
    rejected = _combine_block(
        x[:, flagged],
        None if var is None else var[:, flagged],
        dq[:, flagged],
        replace(opts, apply_dq=False),
        shortcut=False,
    )
    for plane, exact in zip(out, rejected, strict=True):
        if plane is not None:
            plane[flagged] = exact
    return out


def _exclude_by_dq(x: np.ndarray, dq: np.ndarray) -> None:
    """Set to NaN the inputs that the DQ hierarchy does not pick (in place)."""
    bad = (dq & np.uint16(0xFFFF ^ DQ_HIERARCHY[0])) != 0
    if not bad.any():
        return
    all_bad = np.flatnonzero(bad.all(axis=0))
    if all_bad.size:
        rank = _RANK[dq[:, all_bad]]
        bad[:, all_bad] = rank != rank.min(axis=0)
    x[bad] = np.nan


def _network(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for ``n`` inputs."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _sort_stack(x: np.ndarray) -> np.ndarray:
    """``x`` sorted along axis 0, NaN last (as NaN or +inf: use only the non-NaN count).

    Small stacks go through a sorting network of elementwise min/max on whole rows, several
    times faster than ``np.sort`` along a short axis; large ones through ``np.sort``.
    """
    n_img = x.shape[0]
    if n_img > _NETWORK_MAX:
        return np.sort(x, axis=0)
    out = np.where(np.isnan(x), np.float32(np.inf), x)
    tmp = np.empty(x.shape[1:], dtype=out.dtype)
    for i, j in _network(n_img):
        np.minimum(out[i], out[j], out=tmp)
        np.maximum(out[i], out[j], out=out[j])
        out[i] = tmp
    return out


def _sorted_median(
    ordered: np.ndarray, start: np.ndarray, count: np.ndarray, *, low: bool = False
) -> np.ndarray:
    """Median of ``ordered[start:start + count]`` along axis 0 (NaN where ``count`` is 0)."""
    first = start + np.maximum(count - 1, 0) // 2
    a = _take(ordered, first)
    if not low:
        a += _take(ordered, start + count // 2)
        a *= np.float32(0.5)
    a[count == 0] = np.nan
    return a


def _take(ordered: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``ordered[index[j], j]`` for every column ``j``, as a new array.

    Most columns share one index (all inputs good), so that row is copied whole and only the
    other columns are picked one by one.
    """
    common = np.bincount(index, minlength=1).argmax()
    out = ordered[common].copy()
    other = np.flatnonzero(index != common)
    out[other] = ordered[index[other], other]
    return out


def _minmax(
    x: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, nlow: float, nhigh: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, tuple[np.ndarray, ...], np.ndarray]:
    """Reject the lowest/highest inputs IRAF-style; returns the arrays sorted along axis 0.

    Also returns, per input and pixel, whether the input is one of those whose median the
    survivors' median equals: every good input where as many were dropped low as high, the
    survivors elsewhere.
    """
    n_img = x.shape[0]
    order = np.argsort(x, axis=0)
    x = np.take_along_axis(x, order, axis=0)
    var = None if var is None else np.take_along_axis(var, order, axis=0)
    dq = None if dq is None else np.take_along_axis(dq, order, axis=0)
    ngood = np.count_nonzero(~np.isnan(x), axis=0)
    nlo = (ngood * (nlow / n_img) + 0.001).astype(np.intp)
    nhi = (ngood * (nhigh / n_img) + 0.001).astype(np.intp)
    rank = np.arange(n_img)[:, np.newaxis]
    good = rank < ngood
    rejected = (rank < nlo) | ((rank >= ngood - nhi) & good)
    median_of = good & ((nlo == nhi) | ~rejected)
    x[rejected] = np.nan
    return x, var, dq, (x, nlo, ngood - nlo - nhi), median_of


def _iterclip(x: np.ndarray, var: np.ndarray | None, opts: _Options) -> tuple[np.ndarray, ...]:
    """Iterative sigma (``var`` None) or variance clipping; sets rejected ``x`` to NaN.

    Returns the survivors sorted along axis 0 (see :func:`_sort_stack`), their first index
    (0) and their count. After the first pass only the pixels that lost an input are redone.
    """
    ordered = _sort_stack(x)
    count = np.count_nonzero(~np.isnan(x), axis=0)
    cols = None  # columns of the pixels still being clipped (None: all)
    sub_x, sub_s, sub_n = x, ordered, count
    sub_sd = None if var is None else np.sqrt(var)
    symmetric = opts.lsigma == opts.hsigma
    for iteration in range(opts.max_iters):
        if opts.mclip or iteration == 0:
            center = _sorted_median(sub_s, np.zeros_like(sub_n), sub_n)
        else:
            center = bn.nanmean(sub_x, axis=0)
        if sub_sd is None:
            std = bn.nanstd(sub_x, axis=0)
            reject = sub_x < center - opts.lsigma * std
            reject |= sub_x > center + opts.hsigma * std
        else:
            dev = sub_x - center
            if symmetric:
                np.abs(dev, out=dev)
                reject = dev > opts.hsigma * sub_sd
            else:
                reject = dev < -opts.lsigma * sub_sd
                reject |= dev > opts.hsigma * sub_sd
        nrej = np.add.reduce(reject, axis=0, dtype=np.intp)
        changed = np.flatnonzero((nrej > 0) & (nrej < sub_n))
        if changed.size == 0:
            break
        sub_x = sub_x[:, changed]
        sub_x[reject[:, changed]] = np.nan
        sub_s = _sort_stack(sub_x)
        sub_n = sub_n[changed] - nrej[changed]
        sub_sd = None if sub_sd is None else sub_sd[:, changed]
        cols = changed if cols is None else cols[changed]
        x[:, cols] = sub_x
        ordered[:, cols] = sub_s
        count[cols] = sub_n
    return ordered, np.zeros_like(count), count


# --------------------------------------------------------------------------------------------
# Frames and files


def level_offsets(
    samples: Iterable[tuple[np.ndarray, np.ndarray | None]], *, scale: bool = False, zero: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative scales and additive offsets making every image match the first.

    Parameters
    ----------
    samples : iterable of (sci, dq)
        The same pixels of every image (e.g. some rows), in order; ``dq`` may be None. They
        are taken one at a time and only the first is kept, so a generator that reads each
        image's pixels when asked holds two images at once however many there are.
    scale, zero : bool
        Compute scales (``median(first) / median(this)``) or offsets
        (``median(first - this)``), each over the pixels that are finite and have DQ 0 in both
        images. If both are set, ``scale`` is dropped, as in DRAGONS. A scale that is not
        finite and positive, or an offset that is not finite, is replaced by 1 or 0.

    Returns
    -------
    scales, offsets : numpy.ndarray
        float64, one per image; image ``i`` becomes ``sci * scales[i] + offsets[i]``.
    """
    scales, offsets = [], []
    ref = ref_good = None
    for sci, dq in samples:
        scales.append(1.0)
        offsets.append(0.0)
        if ref is None:
            ref = sci
            ref_good = np.isfinite(ref) & (True if dq is None else dq == 0)
            continue
        if not (scale or zero):
            continue
        good = ref_good & np.isfinite(sci) & (True if dq is None else dq == 0)
        if not good.any():
            continue
        a, b = ref[good], sci[good]
        if zero:
            # In the pixels' own precision: the difference of two floats within a factor of
            # two of each other (any background pixel) is exact.
            value = float(np.median(a - b))
            offsets[-1] = value if np.isfinite(value) else 0.0
        else:
            ma, mb = float(np.median(a)), float(np.median(b))
            value = ma / mb if mb != 0 else np.nan
            scales[-1] = value if np.isfinite(value) and value > 0 else 1.0
    return np.array(scales, dtype=np.float64), np.array(offsets, dtype=np.float64)


def clipped_median(values: np.ndarray, *, sigma: float = 3.0, maxiters: int = 10) -> float:
    """Median of ``values`` after iterative sigma clipping about the median.

    The median of :func:`astropy.stats.sigma_clipped_stats` (``cenfunc="median"``,
    ``stdfunc="std"``, no axis): each iteration keeps the values within ``sigma`` standard
    deviations of the kept values' median, until none is dropped or ``maxiters`` is reached;
    the last bounds then select from all the values. Here the values are sorted once, the
    kept values are an index range of the sorted array, and their mean and standard deviation
    come from cumulative sums, so each iteration costs a few look-ups instead of a partition
    of the whole array (several times faster on a million values).

    Parameters
    ----------
    values : numpy.ndarray
        Finite values, any shape (flattened); integers are taken as floats.
    sigma : float
        Clipping threshold, in standard deviations, both sides.
    maxiters : int
        Most clipping iterations.

    Returns
    -------
    float
        The clipped median (NaN for no values).
    """
    ordered = np.sort(np.asarray(values, dtype=np.result_type(values, np.float32)), axis=None)
    n = ordered.size
    if n == 0:
        return float("nan")
    # Sums of values less the middle one: no precision lost to a large common level.
    centred = ordered.astype(np.float64)
    centred -= centred[n // 2]
    sums = np.zeros(n + 1)
    np.cumsum(centred, out=sums[1:])
    np.square(centred, out=centred)
    squares = np.zeros(n + 1)
    np.cumsum(centred, out=squares[1:])

    kind = ordered.dtype.type

    def median(lo: int, hi: int) -> np.floating:
        m = hi - lo
        return (ordered[lo + (m - 1) // 2] + ordered[lo + m // 2]) / kind(2)

    lo, hi = 0, n
    for _ in range(max(1, maxiters)):
        m = hi - lo
        mean = (sums[hi] - sums[lo]) / m
        # In the values' precision, as astropy's bounds are.
        std = kind(np.sqrt(max((squares[hi] - squares[lo]) / m - mean * mean, 0.0)))
        centre = median(lo, hi)
        low, high = centre - std * kind(sigma), centre + std * kind(sigma)
        kept = (
            max(lo, int(np.searchsorted(ordered, low, "left"))),
            min(hi, int(np.searchsorted(ordered, high, "right"))),
        )
        if kept == (lo, hi) or kept[1] <= kept[0]:
            break
        lo, hi = kept
    lo, hi = int(np.searchsorted(ordered, low, "left")), int(np.searchsorted(ordered, high, "right"))
    return float(median(lo, hi)) if hi > lo else float("nan")


#: Reads some rows (a slice or an index array) of extension ``ext`` of every input, or of the
#: inputs listed in a third argument: ``(sci, var, dq)`` stacks of shape ``(N, rows, nx)``,
#: fresh arrays the caller may modify.
_Planes = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
_BandReader = Callable[..., _Planes]


def _sample_rows(shape: tuple[int, int], statsec: str | None) -> tuple[np.ndarray, slice]:
    """Rows and columns whose pixels measure offsets and scales."""
    ny, nx = shape
    if statsec is None:
        y1, y2, cols = 0, ny, slice(None)
    else:
        sec = parse_section(statsec)
        if sec.y2 > ny or sec.x2 > nx:
            msg = f"statsec {statsec} lies outside the {nx} x {ny} extension"
            raise ValueError(msg)
        y1, y2, cols = sec.y1, sec.y2, slice(sec.x1, sec.x2)
    rows = np.unique(np.linspace(y1, y2 - 1, min(_STAT_ROWS, y2 - y1)).astype(np.intp))
    return rows, cols


def _band_rows(n_img: int, nx: int, memory_mb: float) -> int:
    if memory_mb <= 0:
        msg = f"memory_mb must be positive (got {memory_mb})"
        raise ValueError(msg)
    per_row = n_img * nx * _BYTES_PER_PIXEL * _WORK_FACTOR
    return max(1, int(memory_mb * 2**20 // per_row))


def _stack_extensions(
    shapes: list[tuple[int, int]],
    n_img: int,
    read: _BandReader,
    *,
    scale: bool,
    zero: bool,
    statsec: str | None,
    memory_mb: float,
    stack_kwargs: dict,
) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """Stack every extension band by band; shared by :func:`stack_frames` and :func:`stack_files`.

    The bands of all extensions are shared among the job's threads, each band stacked on one
    (``memory_mb`` split between them), so that one band is read while others are stacked and
    no thread waits for the slowest chunk of a band; ``read`` is called by one thread at a
    time, so it need not be thread-safe.
    """
    levels = []
    for ext, shape in enumerate(shapes):
        scales, offsets = np.ones(n_img), np.zeros(n_img)
        if scale or zero:
            scales, offsets = _sample_levels(read, ext, shape, n_img, statsec, scale=scale, zero=zero)
            offsets -= offsets.mean()
        levels.append((scales, offsets))
    threads = n_threads()
    bands = []
    for ext, (ny, nx) in enumerate(shapes):
        step = _band_rows(n_img, nx, memory_mb / threads)
        bands.extend((ext, r0, min(r0 + step, ny)) for r0 in range(0, ny, step))
    workers = max(1, min(threads, len(bands)))
    results: list[list] = [
        [np.empty(shape, dtype=np.float32), None, np.empty(shape, dtype=np.uint16)] for shape in shapes
    ]
    reading = threading.Lock()

    def stack_band(band: tuple[int, int, int]) -> None:
        ext, r0, r1 = band
        with reading:
            sci, var, dq = read(ext, slice(r0, r1))
            if var is not None and results[ext][1] is None:
                results[ext][1] = np.empty(shapes[ext], dtype=np.float32)
        _apply_levels(sci, var, *levels[ext])
        band_sci, band_var, band_dq = stack_arrays(sci, var, dq, threads=threads // workers, **stack_kwargs)
        out_sci, out_var, out_dq = results[ext]
        out_sci[r0:r1] = band_sci
        out_dq[r0:r1] = band_dq
        if band_var is not None:
            out_var[r0:r1] = band_var

    if workers == 1:
        for band in bands:
            stack_band(band)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(stack_band, bands))
    return [tuple(result) for result in results]


def _sample_levels(
    read: _BandReader,
    ext: int,
    shape: tuple[int, int],
    n_img: int,
    statsec: str | None,
    *,
    scale: bool,
    zero: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`level_offsets` of every input against the first on the sample rows, the inputs
    read one at a time, so that the memory does not grow with their number."""
    rows, cols = _sample_rows(shape, statsec)

    def sample(index: int) -> tuple[np.ndarray, np.ndarray | None]:
        sci, _, dq = read(ext, rows, [index])
        return sci[0][:, cols], None if dq is None else dq[0][:, cols]

    return level_offsets((sample(index) for index in range(n_img)), scale=scale, zero=zero)


def _apply_levels(sci: np.ndarray, var: np.ndarray | None, scales: np.ndarray, offsets: np.ndarray) -> None:
    """Scale and offset each image of a band in place (float32 arithmetic)."""
    for i, (s, z) in enumerate(zip(scales, offsets, strict=True)):
        if s != 1.0:
            sci[i] *= np.float32(s)
            if var is not None:
                var[i] *= np.float32(s * s)
        if z != 0.0:
            sci[i] += np.float32(z)


def _output_frame(
    phu: fits.Header, headers: list[fits.Header], root: str, results: list, n_img: int
) -> Frame:
    phu = copy_header(phu)
    phu["NCOMBINE"] = (n_img, "Number of images combined")
    extensions = [
        Extension(sci, copy_header(header), var=var, dq=dq)
        for header, (sci, var, dq) in zip(headers, results, strict=True)
    ]
    frame = Frame(phu, extensions, root)
    frame.stamp("STACKFRM", "UT time stamp for stackFrames")
    return frame


def _check_stack(n_img: int, shapes: list[list[tuple[int, ...]]], names: Sequence[str]) -> None:
    if n_img == 0:
        msg = "nothing to stack: no frames given"
        raise ValueError(msg)
    for name, frame_shapes in zip(names, shapes, strict=True):
        if frame_shapes != shapes[0]:
            msg = f"{name}: extension shapes {frame_shapes} differ from the first input's {shapes[0]}"
            raise ValueError(msg)


def stack_frames(
    frames: Sequence[Frame],
    *,
    scale: bool = False,
    zero: bool = False,
    statsec: str | None = None,
    memory_mb: float | None = None,
    **stack_kwargs,
) -> Frame:
    """Stack frames extension by extension (DRAGONS ``stackFrames``).

    Parameters
    ----------
    frames : sequence of Frame
        Inputs with the same number and shapes of extensions; VAR (DQ) is used only if every
        frame has it.
    scale, zero : bool
        Match the frames' levels, extension by extension: ``scale`` multiplies every frame
        to the first one's level, ``zero`` adds an offset bringing every frame to the frames'
        mean level (see :func:`level_offsets`; ``zero`` wins if both are set). They are
        measured on up to 512 evenly spaced rows of ``statsec``; VAR is scaled by the square
        of the scale.
    statsec : str, optional
        FITS section (``'[x1:x2,y1:y2]'``, 1-based) for the offset statistics; whole extension
        by default.
    memory_mb : float, optional
        Approximate memory for the band-by-band work arrays (default 512).
    **stack_kwargs
        Options of :func:`stack_arrays` (``operation``, ``reject_method``, ...).

    Returns
    -------
    Frame
        The stack: the first frame's PHU with ``NCOMBINE`` and a ``STACKFRM`` stamp, its
        extension headers and root.

    Raises
    ------
    ValueError
        If there are no frames, their extensions differ in shape, or an option is invalid.
    """
    frames = list(frames)
    _check_stack(len(frames), [[ext.shape for ext in f] for f in frames], [f.root for f in frames])
    shapes = [ext.shape for ext in frames[0]]

    def read(ext: int, rows: slice | np.ndarray, images: Sequence[int] | None = None) -> _Planes:
        exts = [f[ext] for f in (frames if images is None else [frames[i] for i in images])]
        sci = np.stack([e.sci[rows] for e in exts]).astype(np.float32, copy=False)
        var = None if any(e.var is None for e in exts) else np.stack([e.var[rows] for e in exts])
        dq = None if any(e.dq is None for e in exts) else np.stack([e.dq[rows] for e in exts])
        return sci, var, dq

    results = _stack_extensions(
        shapes,
        len(frames),
        read,
        scale=scale,
        zero=zero,
        statsec=statsec,
        memory_mb=512 if memory_mb is None else memory_mb,
        stack_kwargs=stack_kwargs,
    )
    first = frames[0]
    return _output_frame(first.phu, [e.header for e in first], first.root, results, len(frames))


def _image_hdus(hdul: fits.HDUList) -> list[dict[str, fits.ImageHDU]]:
    """SCI/VAR/DQ HDUs of a processed file grouped by EXTVER, in EXTVER order."""
    groups: dict[int, dict[str, fits.ImageHDU]] = {}
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.ImageHDU) and hdu.name in ("SCI", "VAR", "DQ"):
            groups.setdefault(hdu.ver, {})[hdu.name] = hdu
    return [groups[ver] for ver in sorted(groups) if "SCI" in groups[ver]]


def stack_files(
    paths: Sequence[str | os.PathLike],
    *,
    scale: bool = False,
    zero: bool = False,
    statsec: str | None = None,
    memory_mb: float = 512,
    **stack_kwargs,
) -> Frame:
    """Stack processed files on disk, reading them in row bands (bounded memory).

    Each file is opened once and its SCI/VAR/DQ planes are read band by band through
    :attr:`astropy.io.fits.ImageHDU.section` (plain reads, not a memory map, so that pages
    already stacked do not stay resident); bands are sized so that
    ``N x rows x nx x 10 bytes x 3`` stays under ``memory_mb``. Offsets and scales are
    measured first from a subsample of rows, one file at a time against the first, so the
    memory does not grow with the number of files. The result is identical to
    :func:`stack_frames` on the same data.

    Parameters
    ----------
    paths : sequence of path-like
        Processed multi-extension files (``SCI``/``VAR``/``DQ`` by ``EXTVER``) with the same
        extension shapes.
    scale, zero, statsec, **stack_kwargs
        As :func:`stack_frames`.
    memory_mb : float
        Approximate memory for the stack bands and work arrays; the output arrays
        (10 bytes per pixel) come on top.

    Returns
    -------
    Frame
        As :func:`stack_frames`; root from the first file's ``ORIGNAME`` (or name).

    Raises
    ------
    gemred.io.GemredInputError
        If a file is missing, corrupt or not from a supported instrument.
    ValueError
        If there are no files, their extensions differ in shape, or an option is invalid.
    """
    paths = [Path(p) for p in paths]
    hduls = []
    try:
        for path in paths:
            hduls.append(open_raw(path, memmap=False))
        groups = [_image_hdus(h) for h in hduls]
        _check_stack(len(paths), [[g["SCI"].shape for g in grp] for grp in groups], [str(p) for p in paths])
        shapes = [g["SCI"].shape for g in groups[0]]

        def plane(
            name: str, ext: int, rows: slice | np.ndarray, dtype: type, images: Sequence[int] | None
        ) -> np.ndarray | None:
            hdus = [grp[ext].get(name) for grp in (groups if images is None else [groups[i] for i in images])]
            if any(h is None for h in hdus):
                return None
            ny, nx = shapes[ext]
            out = np.empty((len(hdus), np.arange(ny)[rows].size, nx), dtype=dtype)
            for i, hdu in enumerate(hdus):
                if isinstance(rows, slice):
                    out[i] = hdu.section[rows]
                else:
                    for k, row in enumerate(rows):
                        out[i, k] = hdu.section[row]
            return out

        def read(ext: int, rows: slice | np.ndarray, images: Sequence[int] | None = None) -> _Planes:
            return (
                plane("SCI", ext, rows, np.float32, images),
                plane("VAR", ext, rows, np.float32, images),
                plane("DQ", ext, rows, np.uint16, images),
            )

        results = _stack_extensions(
            shapes,
            len(paths),
            read,
            scale=scale,
            zero=zero,
            statsec=statsec,
            memory_mb=memory_mb,
            stack_kwargs=stack_kwargs,
        )
        phu = hduls[0][0].header
        headers = [g["SCI"].header for g in groups[0]]
        return _output_frame(phu, headers, root_name(paths[0], phu), results, len(paths))
    finally:
        for hdul in hduls:
            hdul.close()
