"""Affine resampling of SCI/VAR/DQ planes, and DRAGONS' ``resampleToCommonFrame``.

The numerical core, :func:`resample_arrays`, evaluates an image at the input positions
``(y_in, x_in) = matrix @ (y, x) + offset`` of every output pixel ``(y, x)`` (numpy order,
0-based pixel centres) and is shared with :mod:`gemred.mosaic`:

* **SCI** is interpolated with a cubic B-spline (``interpolant='poly3'``; spline prefilter,
  what ``scipy.ndimage`` does with ``order=3``) or bilinearly (``'linear'``). Beyond the input
  edges the edge values are repeated, so edge pixels do not ring.
* **VAR** goes through the same interpolation, is clipped at zero, then multiplied by the
  sum of the squared interpolation weights at the pixel's fractional position (per axis,
  :func:`noise_factor`): the variance of an interpolated pixel is ``sum(w_i**2 var_i)``, which
  for a smooth VAR is the interpolated VAR times ``sum(w_i**2)``. A cubic spline at a half-pixel
  shift keeps only about 0.76 of the variance along each axis (0.57 in all), so without this
  factor VAR overstates the noise of every resampled pixel (DRAGONS leaves it out: the noise
  of a stack of dithered frames then comes out some 10% below its VAR). The noise of
  neighbouring output pixels is then correlated: the variance of a sum over many pixels is
  the input's, larger than the sum of their VAR by the factor that
  :func:`resample_to_reference` records as ``VARCORR``; aperture photometry multiplies its
  VAR-based variance by it.
* **DQ** of an output pixel is the OR of the bits of the input pixels of its bilinear (2x2)
  footprint whose weight along each axis exceeds ``dq_threshold``.
* Pixels that no later step uses (``FILLED_BITS``: bad pixels, cosmic rays, unilluminated
  pixels, no data) keep their flags but have their SCI and VAR replaced by an interpolation
  of their good neighbours before interpolating (:func:`fill_flagged`). A cubic spline spreads every input
  value over several output pixels with weights of both signs, so a dead column or a gap full
  of zeros left as it is would bias the good output pixels beside it (a dead column through
  a bright star's wing made the star's stacked flux 0.5% high). For a cubic interpolant the
  flags also grow by one input pixel, so that only the spline's small far weights (a few
  percent) reach the filled values.
* Output pixels whose centre falls outside the input array get SCI 0, VAR 0 and DQ ``NO_DATA``.

A fast path covers transforms that are translations up to a tiny rotation (scale 1 within
``1e-3`` pixel across the image: GMOS CCD placement, dithered frames at one position angle).
Such a transform is applied as two one-dimensional passes (a column shear, then a row shear;
Catmull and Smith 1980), each a few array slices times constant weights, which is several
times faster than ``scipy.ndimage.affine_transform``; other transforms use the latter.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy import ndimage

from gemred import dq as dqbits
from gemred.frame import Extension, Frame, copy_header

__all__ = [
    "INTERPOLANTS",
    "Resampled",
    "resample_arrays",
    "FILLED_BITS",
    "dq_footprint",
    "fill_flagged",
    "grow_flags",
    "stack_variance_correlation",
    "variance_weight",
    "noise_factor",
    "variance_correlation",
    "pixel_transform",
    "resample_to_reference",
]

#: Interpolants understood here and the spline order each one means.
INTERPOLANTS = {"linear": 1, "poly3": 3}
#: Largest coordinate error (pixels) accepted from the two-pass shear approximation.
_SHEAR_TOLERANCE = 1e-3
#: Largest departure (pixels) of the sky mapping from its affine fit accepted silently.
_AFFINE_TOLERANCE = 0.01
#: Edge-replicated border (pixels) added around an input before interpolation.
_PAD = 4
#: DQ bits of input pixels whose values are replaced before interpolation (see module doc).
FILLED_BITS = dqbits.BAD_PIXEL | dqbits.COSMIC_RAY | dqbits.UNILLUMINATED | dqbits.NO_DATA
#: Output rows per band when finding the covered pixels.
_COVER_ROWS = 256


@dataclass
class Resampled:
    """The part of an output grid that one input covers.

    ``slices`` locate the window in the output grid; ``covered`` marks its pixels whose
    centre falls on the input. Outside ``covered`` SCI and VAR are 0 and DQ is ``NO_DATA``.
    """

    slices: tuple[slice, slice]
    sci: np.ndarray
    var: np.ndarray | None
    dq: np.ndarray
    covered: np.ndarray

    def paste(self, sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray) -> None:
        """Copy the covered pixels into full-size output planes, in place."""
        np.copyto(sci[self.slices], self.sci, where=self.covered)
        if var is not None and self.var is not None:
            np.copyto(var[self.slices], self.var, where=self.covered)
        np.copyto(dq[self.slices], self.dq, where=self.covered)


def _order(interpolant: str) -> int:
    if interpolant not in INTERPOLANTS:
        msg = f"interpolant must be one of {', '.join(INTERPOLANTS)}, not {interpolant!r}"
        raise ValueError(msg)
    return INTERPOLANTS[interpolant]


def _footprint_window(
    matrix: np.ndarray, offset: np.ndarray, in_shape: tuple[int, int], out_shape: tuple[int, int]
) -> tuple[slice, slice] | None:
    """Bounding box, in the output grid, of the pixels whose centre maps inside the input."""
    inverse = np.linalg.inv(matrix)
    ny, nx = in_shape
    corners = np.array([[-0.5, -0.5], [-0.5, nx - 0.5], [ny - 0.5, -0.5], [ny - 0.5, nx - 0.5]])
    out = (corners - offset) @ inverse.T
    lo = np.maximum(np.floor(out.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(out.max(axis=0)).astype(int) + 1, out_shape)
    if np.any(hi <= lo):
        return None
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def _kernel(order: int, frac: np.ndarray) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """Tap offsets and per-line weights of a cubic B-spline or linear kernel at ``frac``."""
    f = frac.astype(np.float32)
    if order == 1:
        return (0, 1), [1.0 - f, f]
    g = 1.0 - f
    return (-1, 0, 1, 2), [
        g**3 / 6.0,
        (3.0 * f**3 - 6.0 * f**2 + 4.0) / 6.0,
        (3.0 * g**3 - 6.0 * g**2 + 4.0) / 6.0,
        f**3 / 6.0,
    ]


#: ``sum(w_i**2)`` of the weights a prefiltered cubic B-spline (the cubic cardinal spline)
#: gives the input pixels at fractional shift ``f`` is, with ``s = f (1 - f)``, exactly
#: ``1 - 3 s**2 - (14 - 6 sqrt(3)) s**3`` (checked against the spline's weights in the tests).
_CUBIC_NOISE_S3 = 14.0 - 6.0 * np.sqrt(3.0)


def noise_factor(frac: np.ndarray, order: int = 3) -> np.ndarray:
    """Fraction of a pixel's noise variance that interpolation at ``frac`` keeps, along one axis.

    Parameters
    ----------
    frac : numpy.ndarray
        Position along the axis (only its fractional part, 0 on a pixel centre, matters).
    order : int
        3 for the cubic B-spline, 1 for linear interpolation.

    Returns
    -------
    numpy.ndarray
        float32, ``sum(w_i**2)`` of the weights the interpolant gives the input pixels: 1 at
        0, 0.7561 (cubic) or 0.5 (linear) at a half-pixel shift.
    """
    frac = np.asarray(frac)
    f = (frac - np.floor(frac)).astype(np.float32)
    s = f * (np.float32(1.0) - f)
    if order == 1:
        return np.float32(1.0) - np.float32(2.0) * s
    return np.float32(1.0) - s * s * (np.float32(3.0) + np.float32(_CUBIC_NOISE_S3) * s)


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges over which ``values`` is constant."""
    edges = np.flatnonzero(np.diff(values)) + 1
    bounds = np.concatenate(([0], edges, [values.size]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _line_pass(
    data: np.ndarray,
    starts: np.ndarray,
    n_out: int,
    axis: int,
    order: int,
    *,
    dq_threshold: float | None,
    variance: bool = False,
) -> np.ndarray:
    """Resample every line of ``data`` along ``axis``, line ``j`` from position ``starts[j]``.

    Output sample ``i`` of line ``j`` is ``data`` at ``starts[j] + i`` along ``axis`` (a constant
    fractional shift per line). With ``dq_threshold`` set, ``data`` is a bit mask and the
    samples OR the bits of the bilinear taps whose weight exceeds the threshold. With
    ``variance``, each line is scaled by :func:`noise_factor` of its shift.
    """
    taps_lo = 0 if order == 1 or dq_threshold is not None else 1
    taps_hi = 1 if order == 1 or dq_threshold is not None else 2
    starts = np.clip(starts, taps_lo, data.shape[axis] - n_out - taps_hi)
    base = np.floor(starts).astype(np.int64)
    frac = starts - base
    taps, weights = _kernel(1 if dq_threshold is not None else order, frac)
    nlines = data.shape[1 - axis]
    shape = (n_out, nlines) if axis == 0 else (nlines, n_out)
    out = np.zeros(shape, dtype=data.dtype)
    for j0, j1 in _runs(base):
        for tap, weight in zip(taps, weights, strict=True):
            lo = int(base[j0]) + tap
            if axis == 0:
                src, dst = data[lo : lo + n_out, j0:j1], out[:, j0:j1]
                w = weight[None, j0:j1]
            else:
                src, dst = data[j0:j1, lo : lo + n_out], out[j0:j1, :]
                w = weight[j0:j1, None]
            if dq_threshold is None:
                dst += src * w
            else:
                dst |= src * (w > dq_threshold).astype(np.uint16)
    if variance:
        factor = noise_factor(frac, order)
        out *= factor[None, :] if axis == 0 else factor[:, None]
    return out


def _shear_ok(matrix: np.ndarray, window_shape: tuple[int, int]) -> bool:
    """Whether the two-pass shear reproduces ``matrix`` to ``_SHEAR_TOLERANCE`` pixels."""
    (e, d), (b, a) = matrix
    ny, nx = window_shape
    return abs(a - 1.0) * nx < _SHEAR_TOLERANCE and abs(e - d * b - 1.0) * ny < _SHEAR_TOLERANCE


def _two_pass(
    planes: list[np.ndarray | None],
    matrix: np.ndarray,
    offset: np.ndarray,
    origin: tuple[int, int],
    shape: tuple[int, int],
    order: int,
    dq_threshold: float,
) -> list[np.ndarray | None]:
    """Apply a near-translation as a column pass then a row pass (last plane is DQ)."""
    (e, d), (b, _) = matrix
    f, c = offset
    y0, x0 = origin
    nyw, nxw = shape
    nu = planes[-1].shape[1] + 2 * _PAD
    u = np.arange(nu, dtype=np.float64) - _PAD
    # Column pass: for input column u, output row y reads input row ~ y + d*u + (f - d*c).
    col_starts = d * u + (e - d * b) * y0 + f - d * c + _PAD
    rows = y0 + np.arange(nyw, dtype=np.float64)
    # Row pass: output row y, column x reads sheared column ~ x + b*y + c.
    row_starts = x0 + b * rows + c + _PAD

    def one_plane(k: int) -> np.ndarray:
        is_dq = k == len(planes) - 1
        is_var = k == 1
        padded = np.pad(planes[k], _PAD, mode="edge")
        threshold = dq_threshold if is_dq else None
        if order == 3 and not is_dq:
            padded = ndimage.spline_filter1d(padded, 3, axis=0, mode="mirror", output=np.float32)
        sheared = _line_pass(padded, col_starts, nyw, 0, order, dq_threshold=threshold, variance=is_var)
        del padded
        if order == 3 and not is_dq:
            sheared = ndimage.spline_filter1d(sheared, 3, axis=1, mode="mirror", output=np.float32)
        if is_var:
            np.maximum(sheared, 0.0, out=sheared)
        return _line_pass(sheared, row_starts, nxw, 1, order, dq_threshold=threshold, variance=is_var)

    # scipy.ndimage and numpy release the GIL: the planes are resampled two at a time.
    todo = [k for k, plane in enumerate(planes) if plane is not None]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(todo, pool.map(one_plane, todo), strict=True))
    return [done.get(k) for k in range(len(planes))]


def _general(
    planes: list[np.ndarray | None],
    matrix: np.ndarray,
    offset: np.ndarray,
    origin: tuple[int, int],
    shape: tuple[int, int],
    order: int,
    dq_threshold: float,
) -> list[np.ndarray | None]:
    """Any affine transform: ``scipy.ndimage.affine_transform`` plus an explicit DQ footprint.

    The VAR plane's noise factor is taken per axis at each pixel's fractional input position,
    exact for a translation and close for the small rotations and scale changes met here.
    """
    window_offset = offset + matrix @ np.asarray(origin, dtype=np.float64)
    yy, xx = np.indices(shape, dtype=np.float64)
    py = matrix[0, 0] * yy + matrix[0, 1] * xx + window_offset[0]
    px = matrix[1, 0] * yy + matrix[1, 1] * xx + window_offset[1]
    out: list[np.ndarray | None] = []
    for k, plane in enumerate(planes[:-1]):
        if plane is None:
            out.append(None)
            continue
        out.append(
            ndimage.affine_transform(
                plane,
                matrix,
                offset=window_offset,
                output_shape=shape,
                order=order,
                mode="nearest",
                output=np.float32,
            )
        )
        if k == 1:
            np.maximum(out[-1], 0.0, out=out[-1])
            out[-1] *= noise_factor(py, order) * noise_factor(px, order)
    out.append(dq_footprint(planes[-1], py, px, dq_threshold))
    return out


def dq_footprint(dq: np.ndarray, py: np.ndarray, px: np.ndarray, threshold: float) -> np.ndarray:
    """OR of the DQ bits of the 2x2 input pixels around each position with weight > threshold.

    Parameters
    ----------
    dq : numpy.ndarray
        Input DQ plane.
    py, px : numpy.ndarray
        Input (row, column) positions of the output pixels, 0-based pixel centres.
    threshold : float
        Smallest bilinear weight (per axis) through which an input pixel passes its bits.

    Returns
    -------
    numpy.ndarray
        uint16 DQ of the output pixels, shaped like ``py``.
    """
    out = np.zeros(py.shape, dtype=np.uint16)
    flagged = dq != 0
    if not flagged.any():
        return out
    # Only positions next to a flagged pixel can pick up bits: find them with one lookup of
    # the flagged pixels grown by one, then gather the 2x2 bits there alone.
    near = flagged.copy()
    near[:-1] |= flagged[1:]
    near[:, :-1] |= near[:, 1:].copy()
    iy = np.clip(np.floor(py), 0, dq.shape[0] - 1).astype(np.intp)
    ix = np.clip(np.floor(px), 0, dq.shape[1] - 1).astype(np.intp)
    todo = np.flatnonzero(near[iy, ix])
    if todo.size == 0:
        return out
    qy, qx = py.ravel()[todo], px.ravel()[todo]
    iy, ix = np.floor(qy).astype(np.int64), np.floor(qx).astype(np.int64)
    fy, fx = qy - iy, qx - ix
    bits = np.zeros(todo.size, dtype=np.uint16)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            take = (wy > threshold) & (wx > threshold)
            jy = np.clip(iy + dy, 0, dq.shape[0] - 1)
            jx = np.clip(ix + dx, 0, dq.shape[1] - 1)
            bits |= np.where(take, dq[jy, jx], 0).astype(np.uint16)
    out.ravel()[todo] = bits
    return out


def resample_arrays(
    sci: np.ndarray,
    var: np.ndarray | None,
    dq: np.ndarray | None,
    matrix: np.ndarray,
    offset: np.ndarray,
    out_shape: tuple[int, int],
    *,
    interpolant: str = "poly3",
    dq_threshold: float = 0.001,
) -> Resampled | None:
    """Resample SCI, VAR and DQ planes through an affine pixel transform.

    Parameters
    ----------
    sci, var, dq : numpy.ndarray
        Input planes (``var`` and ``dq`` may be None; a missing DQ counts as all good).
    matrix : (2, 2) array_like
        Linear part of the output-to-input map, numpy (row, column) order.
    offset : (2,) array_like
        Input ``(y, x)`` of output pixel ``(0, 0)``.
    out_shape : (int, int)
        Shape of the whole output grid.
    interpolant : {'poly3', 'linear'}
        Cubic B-spline or bilinear interpolation.
    dq_threshold : float
        Smallest bilinear weight (per axis) through which an input pixel passes its DQ bits.

    Returns
    -------
    Resampled or None
        The window of the output grid the input covers, or None if it covers nothing.

    Raises
    ------
    ValueError
        For an unknown interpolant or a singular matrix.
    """
    order = _order(interpolant)
    matrix = np.asarray(matrix, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    if abs(np.linalg.det(matrix)) < 1e-12:
        msg = f"singular pixel transform {matrix.tolist()}"
        raise ValueError(msg)
    if _footprint_window(matrix, offset, np.shape(sci), out_shape) is None:
        return None
    planes = _prepared_planes(sci, var, dq, order)
    return _resample_prepared(planes, matrix, offset, out_shape, order, dq_threshold)


def _prepared_planes(
    sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, order: int
) -> list[np.ndarray | None]:
    """SCI, VAR (or None) and DQ as float32 and uint16, flagged pixels filled and, for a cubic
    interpolant, flags grown (see the module notes)."""
    sci = np.asarray(sci, dtype=np.float32)
    var = None if var is None else np.asarray(var, dtype=np.float32)
    if dq is None:
        return [sci, var, np.zeros(sci.shape, dtype=np.uint16)]
    dq = np.asarray(dq, dtype=np.uint16)
    sci, *filled_var = fill_flagged([sci] + ([] if var is None else [var]), dq)
    return [sci, filled_var[0] if filled_var else None, grow_flags(dq, order)]


def _resample_prepared(
    planes: list[np.ndarray | None],
    matrix: np.ndarray,
    offset: np.ndarray,
    out_shape: tuple[int, int],
    order: int,
    dq_threshold: float,
) -> Resampled | None:
    """:func:`resample_arrays` on planes from :func:`_prepared_planes`."""
    in_shape = planes[0].shape
    window = _footprint_window(matrix, offset, in_shape, out_shape)
    if window is None:
        return None
    origin = (window[0].start, window[1].start)
    shape = (window[0].stop - origin[0], window[1].stop - origin[1])
    method = _two_pass if _shear_ok(matrix, shape) else _general
    out_sci, out_var, out_dq = method(planes, matrix, offset, origin, shape, order, dq_threshold)
    covered = _covered(matrix, offset, origin, shape, in_shape)
    out_sci[~covered] = 0.0
    out_dq[~covered] = dqbits.NO_DATA
    if out_var is not None:
        np.maximum(out_var, 0.0, out=out_var)
        out_var[~covered] = 0.0
    return Resampled(window, out_sci, out_var, out_dq, covered)


def _covered(
    matrix: np.ndarray,
    offset: np.ndarray,
    origin: tuple[int, int],
    shape: tuple[int, int],
    in_shape: tuple[int, int],
) -> np.ndarray:
    """Output pixels of the window whose centre maps inside the input array.

    Computed in row bands so that the float64 input coordinates never exist for the whole
    window at once.
    """
    ny, nx = in_shape
    covered = np.empty(shape, dtype=bool)
    xx = origin[1] + np.arange(shape[1], dtype=np.float64)[None, :]
    for start in range(0, shape[0], _COVER_ROWS):
        stop = min(start + _COVER_ROWS, shape[0])
        yy = origin[0] + np.arange(start, stop, dtype=np.float64)[:, None]
        py = matrix[0, 0] * yy + matrix[0, 1] * xx + offset[0]
        px = matrix[1, 0] * yy + matrix[1, 1] * xx + offset[1]
        covered[start:stop] = (py >= -0.5) & (py < ny - 0.5) & (px >= -0.5) & (px < nx - 0.5)
    return covered


def grow_flags(dq: np.ndarray, order: int) -> np.ndarray:
    """Grow each of ``FILLED_BITS`` by one input pixel (3x3) for a cubic interpolant.

    A cubic spline reaches two pixels out: output pixels beside a filled pixel take a tenth
    of its (filled, so approximate) value, so they carry its flag too (with the 2x2 DQ
    spreading of :func:`resample_arrays`, two pixels in all), as DRAGONS' spline-interpolated
    DQ does.
    """
    if order < 3:
        return dq
    flagged = dq & np.uint16(FILLED_BITS)
    if not flagged.any():
        return dq
    # A 3x3 dilation of every bit at once: the bitwise OR of the shifted planes, along the
    # columns and then the rows (OR is separable like a maximum).
    near = flagged.copy()
    near[1:] |= flagged[:-1]
    near[:-1] |= flagged[1:]
    grown = near.copy()
    grown[:, 1:] |= near[:, :-1]
    grown[:, :-1] |= near[:, 1:]
    return dq | grown


def _first_good(
    bad: np.ndarray, rows: np.ndarray, cols: np.ndarray, step: tuple[int, int], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat index of, and distance to, the first good pixel from each (row, col) along ``step``.

    The index is -1 where none lies within ``width`` pixels.
    """
    ny, nx = bad.shape
    found = np.full(rows.size, -1, dtype=np.int64)
    distance = np.zeros(rows.size, dtype=np.int64)
    for k in range(1, width + 1):
        todo = np.flatnonzero(found < 0)
        if todo.size == 0:
            break
        r, c = rows[todo] + step[0] * k, cols[todo] + step[1] * k
        inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        todo, r, c = todo[inside], r[inside], c[inside]
        good = ~bad[r, c]
        found[todo[good]] = r[good] * nx + c[good]
        distance[todo[good]] = k
    return found, distance


def fill_flagged(
    planes: list[np.ndarray], dq: np.ndarray | None, *, bits: int = FILLED_BITS, width: int = 4
) -> list[np.ndarray]:
    """Replace flagged pixels near good ones by an interpolation of their good neighbours.

    Interpolating across a dead column or a mosaic gap full of zeros would make the cubic
    spline ring onto the good pixels next to it; filling a ``width``-pixel band of the
    flagged pixels first avoids that. A flagged pixel with good pixels on both sides along
    its row (a bad column) takes their linear interpolation; otherwise, with good pixels
    above and below (a bad row), theirs along the column; otherwise the nearest good pixel's
    value. The filled pixels stay flagged.

    Parameters
    ----------
    planes : list of numpy.ndarray
        2-D planes sharing ``dq`` (SCI, VAR).
    dq : numpy.ndarray or None
        Their DQ plane.
    bits : int
        DQ bits that mark a pixel to fill.
    width : int
        Widest distance (pixels) from good data that is filled.

    Returns
    -------
    list of numpy.ndarray
        The planes themselves when nothing is flagged, otherwise filled copies.
    """
    if dq is None:
        return planes
    bad = (dq & np.uint16(bits)) != 0
    rows, cols = np.nonzero(bad)
    if rows.size == 0:
        return planes
    (left, dl), (right, dr), (down, dd), (up, du) = (
        _first_good(bad, rows, cols, step, width) for step in ((0, -1), (0, 1), (-1, 0), (1, 0))
    )
    first, second = np.full(rows.size, -1, dtype=np.int64), np.full(rows.size, -1, dtype=np.int64)
    weight = np.ones(rows.size)  # of ``first``; ``second`` gets the rest
    # Pairs along the row come last, so a bad column is filled along its rows.
    for a, da, b, db in ((down, dd, up, du), (left, dl, right, dr)):
        both = (a >= 0) & (b >= 0)
        first[both], second[both] = a[both], b[both]
        weight[both] = db[both] / (da[both] + db[both])
    single = first < 0
    candidates = np.stack([left, right, down, up])
    distances = np.where(candidates >= 0, np.stack([dl, dr, dd, du]), width + 1)
    nearest = candidates[distances.argmin(axis=0), np.arange(rows.size)]
    first[single], second[single] = nearest[single], nearest[single]
    fill = first >= 0
    target = rows[fill] * bad.shape[1] + cols[fill]
    first, second, weight = first[fill], second[fill], weight[fill]
    out = []
    for plane in planes:
        filled = plane.copy()
        flat = plane.ravel()
        filled.ravel()[target] = weight * flat[first] + (1.0 - weight) * flat[second]
        out.append(filled)
    return out


def variance_correlation(matrix: np.ndarray, offset: np.ndarray, shape: tuple[int, int], order: int) -> float:
    """Variance of a sum over many resampled pixels over the sum of their VAR.

    Interpolation moves noise between neighbouring pixels without removing it, so a sum over
    an aperture keeps the input's variance, while each pixel's VAR keeps only
    :func:`noise_factor` of it. The ratio, averaged over a 16 x 16 grid of the output, is
    what aperture photometry on the resampled image multiplies its summed VAR by.
    """
    rows, cols = (np.linspace(0, n - 1, 16).round() for n in shape)  # pixel centres
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    py = matrix[0, 0] * yy + matrix[0, 1] * xx + offset[0]
    px = matrix[1, 0] * yy + matrix[1, 1] * xx + offset[1]
    return float(np.mean(1.0 / (noise_factor(py, order) * noise_factor(px, order)), dtype=np.float64))


def variance_weight(ext: Extension) -> float:
    """An image's share of a stack's VAR: the median VAR of its good pixels (0 without VAR)."""
    if ext.var is None:
        return 0.0
    # Every fourth row and column: the median of millions of pixels, far faster.
    var = ext.var[::4, ::4]
    good = (ext.dq[::4, ::4] == 0) if ext.dq is not None else np.ones(var.shape, dtype=bool)
    return float(np.median(var[good])) if good.any() else 0.0


def stack_variance_correlation(weights: Sequence[float], factors: Sequence[float]) -> float:
    """``VARCORR`` of an average of resampled images: theirs, weighted by each one's VAR.

    A pixel of the stack sums every image's pixel, so its VAR is the sum of theirs and a sum
    over many stack pixels has the variance of the images' sums; each image's share of the
    VAR scales by its own ``VARCORR``.

    Parameters
    ----------
    weights : sequence of float
        Each stacked image's :func:`variance_weight`.
    factors : sequence of float
        Each one's ``VARCORR`` (1 for an image that was not resampled).

    Returns
    -------
    float
        The factor to multiply the summed VAR of an aperture on the stack by.
    """
    total = float(sum(weights))
    return sum(w * f for w, f in zip(weights, factors, strict=True)) / total if total > 0 else 1.0


def _celestial_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, naxis=2)


def pixel_transform(
    out_wcs: WCS, in_wcs: WCS, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Affine map from the pixels of ``out_wcs`` to those of ``in_wcs`` (numpy order).

    The exact map through the sky is sampled on a 5 x 5 grid over an image of ``shape`` and
    fitted by least squares (DRAGONS' ``force_affine``).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, float)
        ``matrix``, ``offset`` (see :func:`resample_arrays`) and the largest residual of the
        affine fit in pixels.
    """
    ny, nx = shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, 5), np.linspace(0, nx - 1, 5), indexing="ij")
    gx, gy = gx.ravel(), gy.ravel()
    ra, dec = out_wcs.all_pix2world(gx, gy, 0)
    ix, iy = in_wcs.all_world2pix(ra, dec, 0)
    design = np.column_stack([gy, gx, np.ones_like(gx)])
    coef_y, *_ = np.linalg.lstsq(design, iy, rcond=None)
    coef_x, *_ = np.linalg.lstsq(design, ix, rcond=None)
    residual = float(np.max(np.hypot(design @ coef_y - iy, design @ coef_x - ix)))
    matrix = np.array([coef_y[:2], coef_x[:2]])
    offset = np.array([coef_y[2], coef_x[2]])
    return matrix, offset, residual


def _single_extension(frames: list[Frame], what: str) -> None:
    if not frames:
        msg = f"{what}: no frames given"
        raise ValueError(msg)
    for frame in frames:
        if len(frame) != 1:
            msg = (
                f"{what}: {frame.root} has {len(frame)} extensions; mosaic the detectors first "
                "(inputs must have a single extension)"
            )
            raise ValueError(msg)


def resample_to_reference(
    frames: list[Frame],
    *,
    reference_index: int = 0,
    interpolant: str = "poly3",
    trim_data: bool = False,
    conserve: bool = True,
    dq_threshold: float = 0.001,
    pixels: Callable[[int], Extension] | None = None,
) -> list[Frame]:
    """Resample single-extension frames onto one pixel grid (DRAGONS ``resampleToCommonFrame``).

    The output grid is the reference frame's pixel grid, enlarged to the union of every
    input's footprint (unless ``trim_data``), with the reference WCS's ``CRPIX`` moved by the
    integer origin shift; the reference's own pixels are copied, not interpolated. Each other
    frame is mapped through its WCS (as corrected by
    :func:`gemred.alignment.adjust_wcs_to_reference`) with an affine fit of the sky mapping.
    Flagged pixels are filled with their neighbours' values before interpolation (see
    :func:`fill_flagged`) and stay flagged.

    Parameters
    ----------
    frames : list of Frame
        Single-extension frames (mosaics) with a celestial WCS each.
    reference_index : int
        Which frame defines the grid.
    interpolant : {'poly3', 'linear'}
        Interpolation of SCI and VAR.
    trim_data : bool
        Keep the reference frame's size instead of the union of footprints.
    conserve : bool
        Conserve flux: scale SCI by the pixel-area ratio (Jacobian determinant, recorded as
        ``JFACTOR``) and VAR by its square. For frames of one pixel scale it is 1 within 1e-6.
    dq_threshold : float
        See :func:`resample_arrays`.
    pixels : callable, optional
        ``pixels(i)`` gives the extension whose SCI, VAR and DQ are resampled for frame ``i``
        (its header is not used), called once per frame in order, on a second thread while
        the frame before is interpolated; the frames themselves then only need headers and
        shapes. This bounds memory: a caller that reads each frame's planes here holds two
        inputs at a time. By default the frames' own planes are used.

    Returns
    -------
    list of Frame
        New frames of one shape, in input order; PHU stamped ``ALIGN``; ``JFACTOR`` and
        ``VARCORR`` (:func:`variance_correlation`, 1 for the reference) in each header.
        ``OBJCAT`` tables are not carried over (their pixel positions no longer apply).

    Raises
    ------
    ValueError
        For no frames, multi-extension frames or a bad ``reference_index``.
    """
    _single_extension(frames, "resample_to_reference")
    if not -len(frames) <= reference_index < len(frames):
        msg = f"reference_index {reference_index} is out of range for {len(frames)} frames"
        raise ValueError(msg)
    order = _order(interpolant)
    ref = frames[reference_index][0]
    ref_wcs = _celestial_wcs(ref.header)
    ny, nx = ref.shape
    transforms = [pixel_transform(ref_wcs, _celestial_wcs(f[0].header), ref.shape) for f in frames]
    for frame, (_, _, residual) in zip(frames, transforms, strict=True):
        if residual > _AFFINE_TOLERANCE:
            warnings.warn(
                f"{frame.root}: the sky mapping departs from affine by {residual:.3f} pixel; "
                "resampling uses the affine approximation",
                stacklevel=2,
            )
    lo, hi = np.zeros(2, dtype=int), np.array([ny, nx])
    if not trim_data:
        for frame, (matrix, offset, _) in zip(frames, transforms, strict=True):
            fy, fx = frame[0].shape
            corners = np.array([[-0.5, -0.5], [-0.5, fx - 0.5], [fy - 0.5, -0.5], [fy - 0.5, fx - 0.5]])
            out = (corners - offset) @ np.linalg.inv(matrix).T
            lo = np.minimum(lo, np.ceil(out.min(axis=0)).astype(int))
            hi = np.maximum(hi, np.floor(out.max(axis=0)).astype(int) + 1)
    shape = (int(hi[0] - lo[0]), int(hi[1] - lo[1]))
    header = copy_header(ref.header)
    header["CRPIX1"] = float(header["CRPIX1"]) - lo[1]
    header["CRPIX2"] = float(header["CRPIX2"]) - lo[0]
    header["DATASEC"] = (f"[1:{shape[1]},1:{shape[0]}]", "Data section")

    ref_index = reference_index % len(frames)

    def load(index: int) -> list[np.ndarray | None]:
        """Frame ``index``'s SCI, VAR (or None) and DQ, ready to interpolate (the reference's
        as they are)."""
        frame = frames[index]
        ext = frame[0] if pixels is None else pixels(index)
        if ext.shape != frame[0].shape:
            msg = f"{frame.root}: pixels of shape {ext.shape} given for a frame of shape {frame[0].shape}"
            raise ValueError(msg)
        if index == ref_index:
            return [ext.sci, ext.var, ext.dq]
        return _prepared_planes(ext.sci, ext.var, ext.dq, order)

    def resampled(index: int, planes: list[np.ndarray | None]) -> Frame:
        frame = frames[index]
        has_var = planes[1] is not None
        matrix, offset, _ = transforms[index]
        jfactor = abs(float(np.linalg.det(matrix))) if conserve else 1.0
        varcorr = 1.0
        part = None
        if index != ref_index:
            shifted = offset + matrix @ lo.astype(np.float64)
            varcorr = variance_correlation(matrix, shifted, shape, order)
            part = _resample_prepared(planes, matrix, shifted, shape, order, dq_threshold)
            # The output planes are made only now, with the input and the interpolation's
            # temporaries gone: their memory is reused, not newly mapped (and faulted in).
            planes.clear()
        sci = np.zeros(shape, dtype=np.float32)
        var = np.zeros(shape, dtype=np.float32) if has_var else None
        dq = np.full(shape, dqbits.NO_DATA, dtype=np.uint16)
        if index == ref_index:
            ref_sci, ref_var, ref_dq = planes
            src = (slice(max(lo[0], 0), min(hi[0], ny)), slice(max(lo[1], 0), min(hi[1], nx)))
            dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, lo, strict=True))
            sci[dst] = ref_sci[src]
            if var is not None:
                var[dst] = ref_var[src]
            dq[dst] = 0 if ref_dq is None else ref_dq[src]
            planes.clear()
            jfactor = 1.0
        elif part is not None:
            part.paste(sci, var, dq)
            del part
            if jfactor != 1.0:
                sci *= jfactor
                if var is not None:
                    var *= jfactor**2
        nodata = (dq & dqbits.NO_DATA) != 0
        sci[nodata] = 0.0
        if var is not None:
            var[nodata] = 0.0
        hdr = copy_header(header)
        for key in ("BUNIT", "SATLEVEL", "NONLINEA", "RDNOISE", "GAIN", "EXPTIME"):
            if key in frame[0].header:
                hdr[key] = frame[0].header[key]
        hdr["JFACTOR"] = (jfactor, "Jacobian factor applied by resampling")
        hdr["VARCORR"] = (varcorr, "Variance of a many-pixel sum / sum of its VAR")
        result = Frame(
            copy_header(frame.phu), [Extension(sci, hdr, var, dq, None)], frame.root, dict(frame.tables)
        )
        result.stamp("ALIGN", "resampleToCommonFrame")
        return result

    # The next frame is read and its flagged pixels filled on a second thread while this one
    # is interpolated (which uses two more): one input more is held, for a third less time.
    out = []
    with ThreadPoolExecutor(max_workers=1) as loader:
        pending = loader.submit(load, 0)
        for index in range(len(frames)):
            planes = pending.result()
            if index + 1 < len(frames):
                pending = loader.submit(load, index + 1)
            out.append(resampled(index, planes))
            del planes
    return out
