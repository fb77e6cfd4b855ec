"""Distortion-corrected geometry of multi-array frames: sky positions, alignment, North-up grids.

GSAOI's four arrays are placed on a distortion-free *static* focal plane (arcsec) by the
static distortion polynomials of :mod:`gemred.instruments.gsaoi`; the static plane is the
tangent plane about the telescope pointing, turned by the position angle. A raw header only
carries the best *linear* WCS of each array, which is several pixels wrong at the array
corners, so positions here always go through the polynomials (as DRAGONS' gWCS does):

    array pixel --(static distortion)--> static plane --(R)--> tangent plane of the pointing
    --(refinement M, s)--> corrected tangent plane --(gnomonic)--> RA, Dec

:class:`FrameGeometry` holds one frame's pointing (header ``CRVAL``, the static-plane origin
by GSAOI's convention), ``R`` (the orthogonal part of the header CD matrix relative to the
model's linear terms: position angle and parity) and a refinement ``(M, s)`` fitted by
:func:`align_geometries` on the sources the frames share (DRAGONS' ``adjustWCSToReference``).
:func:`common_grid` builds one North-up, East-left TAN grid for all arrays of all frames
(``resampleToCommonFrame``), stored as the bounding rectangles of its covered areas
(*tiles*: one for a full-size frame, four for the corner windows of ``--size small`` data),
and :func:`resample_to_grid` resamples a frame onto it, multiplying SCI by the Jacobian
(input pixels per output pixel; VAR by its square) so that fluxes are conserved where the
distortion changes the pixel area.

Coordinates: pixel positions are 0-based (numpy), catalogue ``X_IMAGE``/``Y_IMAGE``
1-based; tangent-plane positions are ``(xi, eta)`` arcsec, East and North.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from gemred import dq as dqbits
from gemred.alignment import chance_match_limit, fit_transform, match_catalogs
from gemred.frame import Extension, Frame, copy_header
from gemred.instruments import gsaoi
from gemred.io import GemredInputError
from gemred.resample import dq_footprint, fill_flagged, grow_flags, noise_factor
from gemred.sections import parse_section

__all__ = [
    "FrameGeometry",
    "OutputGrid",
    "frame_geometry",
    "pixel_to_sky",
    "sky_to_pixel",
    "catalogue_sky",
    "to_tangent",
    "from_tangent",
    "align_geometries",
    "common_grid",
    "resample_to_grid",
]

log = logging.getLogger(__name__)

#: Spacing (output pixels) of the grid on which the exact mapping is computed and splined.
_KNOT_STEP = 32
#: Output rows resampled at a time (bounds the float64 position arrays to ~10 MB each).
_ROW_BAND = 512
#: Extra output pixels of a tile around the footprints it holds.
_TILE_MARGIN = 4
#: Arcsec: a match putting a frame farther than this from where its telescope offsets put it
#: needs :data:`_STRAY_MIN_SOURCES` sources; with fewer, a match searched within this distance
#: of the offsets' position is used, or the offsets alone. Where sources are few, or cluster
#: about a bright star, pairs of unrelated sources can outvote the few true ones at a shift
#: of arcseconds, while a guided sequence's offsets are good to a few tenths of an arcsecond.
_OFFSETS_RADIUS = 1.0
_STRAY_MIN_SOURCES = 10
#: Largest departures of a fitted refinement from the identity that are believed: the
#: distortion model fixes the plate scale and the rotator the angle far better than this.
_MAX_SCALE_CHANGE = 0.01
_MAX_ROTATION_DEG = 1.0
#: Footprints closer than this (output pixels) share a tile.
_TILE_JOIN = 256


@dataclass(frozen=True)
class FrameGeometry:
    """Distortion-corrected mapping of one frame's arrays to the sky.

    Attributes
    ----------
    root : str
        The frame's file root.
    pointing : (float, float)
        RA, Dec (degrees) of the static-plane origin.
    rotation : numpy.ndarray
        (2, 2) orthogonal matrix, static plane to tangent plane.
    arrays : tuple of int
        Array index (0-3) of each extension.
    origins : tuple of (int, int)
        ``(x0, y0)``: array pixel of each extension's pixel (0, 0).
    shapes : tuple of (int, int)
        Shape of each extension.
    matrix, shift : numpy.ndarray
        Refinement on the tangent plane: corrected = ``matrix @ raw + shift`` (arcsec).
    method : str
        How the refinement was found (``none``, ``reference``, ``sources``, ``offsets``).
    nmatched : int
        Sources matched to the reference.
    """

    root: str
    pointing: tuple[float, float]
    rotation: np.ndarray
    arrays: tuple[int, ...]
    origins: tuple[tuple[int, int], ...]
    shapes: tuple[tuple[int, int], ...]
    matrix: np.ndarray
    shift: np.ndarray
    method: str = "none"
    nmatched: int = 0


@dataclass(frozen=True)
class OutputGrid:
    """A North-up, East-left TAN pixel grid, kept as rectangular tiles of its covered areas.

    Global pixel ``(x, y)`` (0-based) lies at ``xi = -(x - crpix[0]) * scale``,
    ``eta = (y - crpix[1]) * scale`` arcsec about ``centre``. Each tile is
    ``(y0, x0, ny, nx)`` in global pixels.
    """

    centre: tuple[float, float]
    scale: float
    crpix: tuple[float, float]
    tiles: tuple[tuple[int, int, int, int], ...]

    def tile_header(self, index: int) -> fits.Header:
        """TAN WCS header of tile ``index`` (CD form, 1-based CRPIX)."""
        y0, x0, _, _ = self.tiles[index]
        hdr = fits.Header()
        hdr["WCSAXES"] = 2
        hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
        hdr["CUNIT1"], hdr["CUNIT2"] = "deg", "deg"
        hdr["CRPIX1"] = self.crpix[0] - x0 + 1.0
        hdr["CRPIX2"] = self.crpix[1] - y0 + 1.0
        hdr["CRVAL1"], hdr["CRVAL2"] = self.centre
        hdr["CD1_1"], hdr["CD1_2"] = -self.scale / 3600.0, 0.0
        hdr["CD2_1"], hdr["CD2_2"] = 0.0, self.scale / 3600.0
        hdr["RADESYS"] = "FK5"
        hdr["EQUINOX"] = 2000.0
        hdr["TILE"] = (index + 1, "Tile of the common output grid")
        return hdr


def to_tangent(ra: np.ndarray, dec: np.ndarray, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of RA, Dec (degrees) about ``centre``: ``(xi, eta)`` arcsec."""
    a, d = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64))
    a0, d0 = np.radians(centre[0]), np.radians(centre[1])
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def from_tangent(
    xi: np.ndarray, eta: np.ndarray, centre: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_tangent`: RA, Dec (degrees) of ``(xi, eta)`` arcsec about ``centre``."""
    x = np.radians(np.asarray(xi, dtype=np.float64) / 3600.0)
    y = np.radians(np.asarray(eta, dtype=np.float64) / 3600.0)
    a0, d0 = np.radians(centre[0]), np.radians(centre[1])
    denom = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _header_wcs(header: Mapping) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header(header), naxis=2)


def _array_index(ext: Extension, position: int, root: str) -> int:
    array_id = str(ext.header.get("ARRAYID", "")).strip()
    for index, info in enumerate(gsaoi.ARRAYS):
        if info.array_id == array_id:
            return index
    if not array_id and position < len(gsaoi.ARRAYS):
        return position
    msg = f"{root}: extension {position + 1} has ARRAYID={array_id!r}, not a GSAOI array"
    raise GemredInputError(msg)


@lru_cache(maxsize=4)
def _linear_model(array_index: int) -> np.ndarray:
    """Least-squares linear part (arcsec per pixel) of an array's distortion over the whole array.

    This is what a raw header's CD matrix describes (times the sky rotation), not the
    polynomial's own first-order terms: the cubic terms add a tilt of a few 0.1 degrees.
    """
    g = np.linspace(0.0, gsaoi.ARRAY_SHAPE[0] - 1.0, 33)
    xx, yy = (a.ravel() for a in np.meshgrid(g, g))
    sx, sy = gsaoi.pixel_to_static(array_index, xx, yy)
    design = np.column_stack([np.ones_like(xx), xx, yy])
    (_, ax, bx), *_ = np.linalg.lstsq(design, sx, rcond=None)
    (_, ay, by), *_ = np.linalg.lstsq(design, sy, rcond=None)
    return np.array([[ax, bx], [ay, by]])


def frame_geometry(frame: Frame) -> FrameGeometry:
    """The distortion model of a GSAOI frame from its headers (no refinement yet).

    Parameters
    ----------
    frame : Frame
        A GSAOI frame of array extensions with ``ARRAYID``, ``CCDSEC`` (the array pixels
        kept) and the linear TAN WCS of the raw data (``CRVAL`` at the static origin).

    Returns
    -------
    FrameGeometry

    Raises
    ------
    GemredInputError
        If an extension is not a GSAOI array or has no WCS.
    """
    arrays, origins, shapes, rotations = [], [], [], []
    pointing = None
    for position, ext in enumerate(frame):
        index = _array_index(ext, position, frame.root)
        ccdsec = ext.header.get("CCDSEC")
        section = parse_section(str(ccdsec)) if ccdsec else None
        origins.append((0, 0) if section is None else (section.x1, section.y1))
        arrays.append(index)
        shapes.append(tuple(ext.shape))
        if "CRVAL1" not in ext.header or "CD1_1" not in ext.header:
            msg = (
                f"{frame.root}: extension {position + 1} has no CD-matrix WCS; "
                "reduce from the raw GSAOI files, whose headers carry one"
            )
            raise GemredInputError(msg)
        if pointing is None:
            pointing = (float(ext.header["CRVAL1"]), float(ext.header["CRVAL2"]))
        cd = _header_wcs(ext.header).wcs.cd * 3600.0
        # Polar decomposition: the orthogonal factor of CD @ inv(linear) (PA and parity).
        u, _, vt = np.linalg.svd(cd @ np.linalg.inv(_linear_model(index)))
        rotations.append(u @ vt)
    rotation = np.mean(rotations, axis=0)
    u, _, vt = np.linalg.svd(rotation)
    return FrameGeometry(
        root=frame.root,
        pointing=pointing,
        rotation=u @ vt,
        arrays=tuple(arrays),
        origins=tuple(origins),
        shapes=tuple(shapes),
        matrix=np.eye(2),
        shift=np.zeros(2),
    )


def _raw_tangent(geom: FrameGeometry, ext: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unrefined tangent-plane positions (N, 2) of 0-based pixels of extension ``ext``."""
    x0, y0 = geom.origins[ext]
    sx, sy = gsaoi.pixel_to_static(geom.arrays[ext], np.asarray(x, float) + x0, np.asarray(y, float) + y0)
    return np.column_stack([np.ravel(sx), np.ravel(sy)]) @ geom.rotation.T


def pixel_to_sky(
    geom: FrameGeometry, ext: int, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (degrees) of 0-based pixels ``(x, y)`` of extension ``ext`` (refinement applied)."""
    t = _raw_tangent(geom, ext, x, y) @ geom.matrix.T + geom.shift
    ra, dec = from_tangent(t[:, 0], t[:, 1], geom.pointing)
    shape = np.shape(x)
    return ra.reshape(shape), dec.reshape(shape)


def sky_to_pixel(
    geom: FrameGeometry, ext: int, ra: np.ndarray, dec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel ``(x, y)`` of extension ``ext`` at RA, Dec (inverse of :func:`pixel_to_sky`)."""
    shape = np.shape(ra)
    xi, eta = to_tangent(np.ravel(ra), np.ravel(dec), geom.pointing)
    raw = (np.column_stack([xi, eta]) - geom.shift) @ np.linalg.inv(geom.matrix).T
    static = raw @ geom.rotation  # rotation is orthogonal: its inverse is its transpose
    x, y = gsaoi.static_to_pixel(geom.arrays[ext], static[:, 0], static[:, 1])
    x0, y0 = geom.origins[ext]
    return (x - x0).reshape(shape), (y - y0).reshape(shape)


def catalogue_sky(geom: FrameGeometry, catalogs: Sequence[Table | None]) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec of the sources of every extension (catalogue ``X_IMAGE``/``Y_IMAGE`` 1-based)."""
    ras, decs = [np.zeros(0)], [np.zeros(0)]
    for ext, cat in enumerate(catalogs):
        if cat is None or len(cat) == 0:
            continue
        ra, dec = pixel_to_sky(
            geom, ext, np.asarray(cat["X_IMAGE"], float) - 1.0, np.asarray(cat["Y_IMAGE"], float) - 1.0
        )
        ras.append(ra)
        decs.append(dec)
    return np.concatenate(ras), np.concatenate(decs)


def _offset_pointing(
    geom: FrameGeometry, ref: FrameGeometry, offsets: tuple[float, float], ref_offsets
) -> tuple:
    """Pointing of ``geom`` from the reference's and the difference in telescope offsets (P, Q)."""
    dpq = np.array(offsets, float) - np.array(ref_offsets, float)
    # The telescope offsets are along the static axes: turn them onto the sky.
    east, north = ref.rotation @ dpq
    ra, dec = from_tangent(np.array([east]), np.array([north]), ref.pointing)
    return float(ra[0]), float(dec[0])


def _match(
    geom: FrameGeometry,
    catalogs: Sequence[Table | None],
    ref_sky: tuple[np.ndarray, np.ndarray],
    *,
    first_pass: float,
    match_radius: float,
    rotate: bool,
    scale: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit the refinement that puts the frame's sources on the reference's; (M, s, n matched)."""
    pred = np.column_stack(to_tangent(*ref_sky, geom.pointing))
    raws = [np.zeros((0, 2))]
    for ext, cat in enumerate(catalogs):
        if cat is not None and len(cat):
            x = np.asarray(cat["X_IMAGE"], float) - 1.0
            y = np.asarray(cat["Y_IMAGE"], float) - 1.0
            raws.append(_raw_tangent(geom, ext, x, y))
    obs = np.concatenate(raws)
    iref, iobs = match_catalogs(pred, obs, search_radius=first_pass, match_radius=match_radius)
    if len(iref) < 2:
        return np.eye(2), np.zeros(2), len(iref)
    matrix, shift, keep = fit_transform(obs[iobs], pred[iref], rotate=rotate, scale=scale)
    # Matches at one wrong shift: the density of the reference sources times the match area,
    # per source.
    area = sum(ny * nx for ny, nx in geom.shapes) * gsaoi.PIXEL_SCALE**2
    limit = chance_match_limit(
        len(obs) * len(pred) / area * np.pi * match_radius**2, first_pass, match_radius
    )
    if keep.sum() < limit:
        log.info(
            "%s: %d matches, %d needed to rule out a chance shift: not trusted", geom.root, keep.sum(), limit
        )
        return np.eye(2), np.zeros(2), 0
    scale = float(np.sqrt(abs(np.linalg.det(matrix))))
    angle = float(np.degrees(np.arctan2(matrix[1, 0] - matrix[0, 1], matrix[0, 0] + matrix[1, 1])))
    if abs(scale - 1.0) > _MAX_SCALE_CHANGE or abs(angle) > _MAX_ROTATION_DEG:
        log.info(
            "%s: %d matches give scale %.4f and rotation %.2f deg: not trusted",
            geom.root,
            keep.sum(),
            scale,
            angle,
        )
        return np.eye(2), np.zeros(2), 0
    return matrix, shift, int(keep.sum())


def _centre_sky(geom: FrameGeometry) -> tuple[float, float]:
    """RA, Dec where the (refined) geometry puts the centre of the frame's first array."""
    ny, nx = geom.shapes[0]
    ra, dec = pixel_to_sky(geom, 0, np.array([(nx - 1) / 2]), np.array([(ny - 1) / 2]))
    return float(ra[0]), float(dec[0])


def _nearer_offsets(
    geom: FrameGeometry,
    found: tuple[np.ndarray, np.ndarray, int],
    catalogs: Sequence[Table | None],
    ref_sky: tuple[np.ndarray, np.ndarray],
    pointing: tuple[float, float],
    *,
    options: Mapping,
) -> tuple[FrameGeometry, np.ndarray, np.ndarray, int]:
    """The match ``found`` unless it strays from the telescope offsets' ``pointing`` on too few
    sources (see :data:`_OFFSETS_RADIUS`); then a match searched near them (0 sources if none)."""
    matrix, shift, n = found
    placed = _centre_sky(replace(geom, matrix=matrix, shift=shift))
    expected = _centre_sky(replace(geom, pointing=pointing))
    stray = float(np.hypot(*to_tangent(np.array([placed[0]]), np.array([placed[1]]), expected)).item())
    if stray <= _OFFSETS_RADIUS or n >= _STRAY_MIN_SOURCES:
        return geom, matrix, shift, n
    near_geom = replace(geom, pointing=pointing)
    near_options = {**options, "first_pass": min(float(options["first_pass"]), _OFFSETS_RADIUS)}
    near_matrix, near_shift, near_n = _match(near_geom, catalogs, ref_sky, **near_options)
    log.warning(
        '%s: %d sources match %.1f" from where the telescope offsets put the frame (%d needed that far); '
        '%d match within %.1f" of it',
        geom.root,
        n,
        stray,
        _STRAY_MIN_SOURCES,
        near_n,
        _OFFSETS_RADIUS,
    )
    return near_geom, near_matrix, near_shift, near_n


def align_geometries(
    geometries: Sequence[FrameGeometry],
    catalogs: Sequence[Sequence[Table | None]],
    *,
    offsets: Sequence[tuple[float, float]] | None = None,
    first_pass: float = 5.0,
    match_radius: float = 0.1,
    min_sources: int = 3,
    rotate: bool = True,
    scale: bool = True,
) -> list[FrameGeometry]:
    """Refine every frame's geometry so its sources land on the first frame's (``adjustWCSToReference``).

    Sources are matched on the tangent plane through the distortion model, and a shift
    (with ``rotate``/``scale`` also a small rotation and a uniform scale) is fitted with
    3-sigma clipping. A match counts only if it holds at least ``min_sources`` sources and
    more than a wrong shift would reach anywhere in the search
    (:func:`gemred.alignment.chance_match_limit`). Otherwise the frame's pointing is
    replaced by the reference's moved by the difference of their telescope offsets
    (``offsets``) and matching is tried again from there; failing that, the offsets alone
    place the frame. A fit whose scale departs from 1 by more than
    1 % or whose rotation exceeds 1 degree is not a match. A match that puts the frame more
    than 1" from where the offsets do needs 10 sources; with fewer, a match searched within
    1" of the offsets' position is used instead, or failing that the offsets alone.

    Parameters
    ----------
    geometries : sequence of FrameGeometry
        From :func:`frame_geometry`; the first is the reference.
    catalogs : sequence of sequence of astropy.table.Table
        Per frame, the source catalogue of each extension (``X_IMAGE``, ``Y_IMAGE``).
    offsets : sequence of (float, float), optional
        Telescope offsets (P, Q) arcsec of each frame, for the fallback.
    first_pass : float
        Largest pointing error searched for, arcsec.
    match_radius : float
        Match tolerance once the shift is found, arcsec.
    min_sources : int
        Fewest matched sources to trust.
    rotate, scale : bool
        Also fit a rotation and/or a uniform scale.

    Returns
    -------
    list of FrameGeometry
        Refined copies; ``method`` is ``reference``, ``sources`` or ``offsets``.

    Raises
    ------
    ValueError
        If no geometries are given or the lengths differ.
    """
    if not geometries or len(catalogs) != len(geometries):
        msg = f"align_geometries: {len(geometries)} geometries and {len(catalogs)} catalogue lists"
        raise ValueError(msg)
    if offsets is not None and len(offsets) != len(geometries):
        msg = f"align_geometries: {len(offsets)} offsets for {len(geometries)} frames"
        raise ValueError(msg)
    ref = geometries[0]
    ref_sky = catalogue_sky(ref, catalogs[0])
    out = [replace(ref, method="reference", nmatched=len(ref_sky[0]))]
    options = {"first_pass": first_pass, "match_radius": match_radius, "rotate": rotate, "scale": scale}
    for index in range(1, len(geometries)):
        geom = geometries[index]
        matrix, shift, n = _match(geom, catalogs[index], ref_sky, **options)
        method = "sources"
        if offsets is not None:
            pointing = _offset_pointing(geom, ref, offsets[index], offsets[0])
            if n < min_sources:
                geom = replace(geom, pointing=pointing)
                matrix, shift, n = _match(geom, catalogs[index], ref_sky, **options)
                log.warning("%s: matching again from the telescope offsets' pointing", geom.root)
            if n >= min_sources:
                found = (matrix, shift, n)
                geom, matrix, shift, n = _nearer_offsets(
                    geom, found, catalogs[index], ref_sky, pointing, options=options
                )
            if n < min_sources:
                geom = replace(geom, pointing=pointing)
                matrix, shift, method = np.eye(2), np.zeros(2), "offsets"
                log.warning("%s: pointing taken from the telescope offsets alone", geom.root)
        elif n < min_sources:
            msg = (
                f'{geom.root}: only {n} sources match the reference {ref.root} within {first_pass}" '
                f"(need {min_sources}); give the telescope offsets or raise first_pass"
            )
            raise GemredInputError(msg)
        out.append(replace(geom, matrix=matrix, shift=shift, method=method, nmatched=n))
        log.info(
            '%s: refinement shift (%.3f, %.3f)" scale %.5f, %s, %d matched',
            geom.root,
            *shift,
            float(np.sqrt(abs(np.linalg.det(matrix)))),
            method,
            n,
        )
    return out


def _edge_pixels(shape: tuple[int, int], n: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel positions along the outer edges of an image."""
    ny, nx = shape
    tx, ty = np.linspace(-0.5, nx - 0.5, n), np.linspace(-0.5, ny - 0.5, n)
    x = np.concatenate([tx, tx, np.full(n, -0.5), np.full(n, nx - 0.5)])
    y = np.concatenate([np.full(n, -0.5), np.full(n, ny - 0.5), ty, ty])
    return x, y


def _to_grid_pixels(
    ra: np.ndarray, dec: np.ndarray, centre: tuple[float, float], scale: float, crpix
) -> tuple:
    xi, eta = to_tangent(ra, dec, centre)
    return crpix[0] - xi / scale, crpix[1] + eta / scale


def common_grid(geometries: Sequence[FrameGeometry], *, pixel_scale: float | None = None) -> OutputGrid:
    """One North-up, East-left grid holding every array of every frame (``resampleToCommonFrame``).

    The grid's centre is the first frame's (refined) pointing; its pixel scale is
    ``pixel_scale`` or GSAOI's nominal :data:`gemred.instruments.gsaoi.PIXEL_SCALE`. The
    footprints of all arrays are grouped into tiles: footprints less than 256 output pixels
    apart share one.

    Parameters
    ----------
    geometries : sequence of FrameGeometry
        Refined geometries (:func:`align_geometries`).
    pixel_scale : float, optional
        Output pixel side, arcsec.

    Returns
    -------
    OutputGrid
    """
    scale = float(pixel_scale or gsaoi.PIXEL_SCALE)
    ref = geometries[0]
    ra0, dec0 = from_tangent(ref.shift[:1], ref.shift[1:], ref.pointing)
    centre = (float(ra0[0]), float(dec0[0]))
    boxes = []
    for geom in geometries:
        for ext, shape in enumerate(geom.shapes):
            ra, dec = pixel_to_sky(geom, ext, *_edge_pixels(shape))
            x, y = _to_grid_pixels(ra, dec, centre, scale, (0.0, 0.0))
            boxes.append([y.min(), x.min(), y.max(), x.max()])
    boxes = np.array(boxes)
    low = np.floor(boxes[:, :2].min(axis=0)) - _TILE_MARGIN
    crpix = (-float(low[1]), -float(low[0]))
    boxes[:, [0, 2]] -= low[0]
    boxes[:, [1, 3]] -= low[1]
    clusters = _cluster(boxes)
    tiles = []
    for members in clusters:
        b = boxes[members]
        y0 = max(int(np.floor(b[:, 0].min())) - _TILE_MARGIN, 0)
        x0 = max(int(np.floor(b[:, 1].min())) - _TILE_MARGIN, 0)
        y1 = int(np.ceil(b[:, 2].max())) + _TILE_MARGIN + 1
        x1 = int(np.ceil(b[:, 3].max())) + _TILE_MARGIN + 1
        tiles.append((y0, x0, y1 - y0, x1 - x0))
    tiles.sort()
    return OutputGrid(centre=centre, scale=scale, crpix=crpix, tiles=tuple(tiles))


def _cluster(boxes: np.ndarray) -> list[list[int]]:
    """Groups of boxes (y0, x0, y1, x1) that overlap once grown by ``_TILE_JOIN / 2``."""
    # Imported here: gemred.sky brings pandas (0.2 s), which the jobs that only detect or
    # resample through this module do not need.
    from gemred.sky import linked_groups

    a, b = boxes[:, None, :], boxes[None, :, :]
    grow = _TILE_JOIN / 2
    overlap = (
        (a[..., 0] - grow <= b[..., 2] + grow)
        & (b[..., 0] - grow <= a[..., 2] + grow)
        & (a[..., 1] - grow <= b[..., 3] + grow)
        & (b[..., 1] - grow <= a[..., 3] + grow)
    )
    return linked_groups(overlap)


def _knots(start: int, size: int) -> np.ndarray:
    """Knot positions spanning ``[start, start + size - 1]`` about every ``_KNOT_STEP`` pixels."""
    n = max(int(np.ceil((size - 1) / _KNOT_STEP)) + 1, 4)
    return np.linspace(start, start + size - 1, n)


def _footprint(
    geom: FrameGeometry, ext: int, grid: OutputGrid, tile: tuple[int, int, int, int]
) -> tuple | None:
    """Window ``(y0, x0, ny, nx)`` (global pixels) of ``tile`` that extension ``ext`` covers."""
    ra, dec = pixel_to_sky(geom, ext, *_edge_pixels(geom.shapes[ext]))
    x, y = _to_grid_pixels(ra, dec, grid.centre, grid.scale, grid.crpix)
    ty0, tx0, tny, tnx = tile
    y0, x0 = max(int(np.floor(y.min())) - 1, ty0), max(int(np.floor(x.min())) - 1, tx0)
    y1, x1 = min(int(np.ceil(y.max())) + 2, ty0 + tny), min(int(np.ceil(x.max())) + 2, tx0 + tnx)
    if y1 <= y0 or x1 <= x0:
        return None
    return y0, x0, y1 - y0, x1 - x0


def _position_splines(geom: FrameGeometry, ext: int, grid: OutputGrid, window: tuple[int, int, int, int]):
    """Splines giving, at output pixels ``(rows, cols)`` of ``window``, the input pixel ``y``,
    ``x`` and the Jacobian (input pixels per output pixel).

    The exact mapping (gnomonic projections and Newton-inverted distortion polynomials) is
    computed on knots every ``_KNOT_STEP`` output pixels and interpolated by bicubic
    splines: the mapping is a smooth cubic, so the spline error is far below 0.001 pixel.
    The Jacobian, a smooth quadratic, comes from the splines' derivatives on the knots
    (within 1e-7 of the derivatives at every pixel, at a quarter of the cost).
    """
    from scipy.interpolate import RectBivariateSpline  # lazily: only resampling needs it

    y0, x0, ny, nx = window
    ky, kx = _knots(y0, ny), _knots(x0, nx)
    gx, gy = np.meshgrid(kx, ky)
    xi = -(gx - grid.crpix[0]) * grid.scale
    eta = (gy - grid.crpix[1]) * grid.scale
    ra, dec = from_tangent(xi, eta, grid.centre)
    px, py = sky_to_pixel(geom, ext, ra, dec)
    spline_x = RectBivariateSpline(ky, kx, px, kx=3, ky=3)
    spline_y = RectBivariateSpline(ky, kx, py, kx=3, ky=3)
    jacobian = np.abs(
        spline_x(ky, kx, dy=1) * spline_y(ky, kx, dx=1) - spline_x(ky, kx, dx=1) * spline_y(ky, kx, dy=1)
    )
    return spline_y, spline_x, RectBivariateSpline(ky, kx, jacobian, kx=3, ky=3)


def resample_to_grid(
    frame: Frame,
    geom: FrameGeometry,
    grid: OutputGrid,
    *,
    interpolant: str = "poly3",
    conserve: bool = True,
    dq_threshold: float = 0.001,
) -> Frame:
    """Resample every array of a frame onto the tiles of a common grid (``resampleToCommonFrame``).

    Each output pixel takes the interpolated value at its input position (cubic B-spline
    for ``poly3``, bilinear for ``linear``, the nearest pixel for ``nearest``); with
    ``conserve`` SCI is multiplied by the Jacobian ``J`` (input pixels per output pixel) and
    VAR by ``J**2``, so that a star's summed counts do not change where the distortion
    changes the pixel area. As in :func:`gemred.resample.resample_arrays`, flagged pixels
    are first filled from their good neighbours (their flags grown by one pixel for
    ``poly3``), and VAR is multiplied by the sum of the squared interpolation weights at
    each position (:func:`~gemred.resample.noise_factor`), so that it is each output pixel's
    own variance (the local VAR level itself is interpolated bilinearly); ``VARCORR`` in
    each tile's header is the mean of the inverse factor, what
    the summed VAR of an aperture is multiplied by. DQ is the OR of the bits of the 2x2 input
    pixels around the position; output pixels no array covers are SCI 0, VAR 0, DQ
    ``NO_DATA``.

    Parameters
    ----------
    frame : Frame
        A GSAOI frame in counts per pixel (SCI, optional VAR and DQ) matching ``geom``.
    geom : FrameGeometry
        Its refined geometry.
    grid : OutputGrid
        The common grid (:func:`common_grid`).
    interpolant : {'poly3', 'linear', 'nearest'}
        Interpolation of SCI and VAR.
    conserve : bool
        Conserve flux (multiply by the Jacobian).
    dq_threshold : float
        Smallest bilinear weight (per axis) through which an input pixel passes its DQ bits.

    Returns
    -------
    Frame
        One extension per tile, with the tile's TAN WCS; the frame's PHU and root.

    Raises
    ------
    ValueError
        For an unknown interpolant or a frame that does not match ``geom``.
    """
    from scipy import ndimage  # lazily: slow to import

    orders = {"nearest": 0, "linear": 1, "poly3": 3}
    if interpolant not in orders:
        msg = f"interpolant must be one of {', '.join(orders)}, not {interpolant!r}"
        raise ValueError(msg)
    order = orders[interpolant]
    if len(frame) != len(geom.shapes) or any(e.shape != s for e, s in zip(frame, geom.shapes, strict=True)):
        msg = f"{frame.root}: extensions {[e.shape for e in frame]} do not match its geometry {geom.shapes}"
        raise ValueError(msg)
    planes = [
        (
            np.zeros((ny, nx), np.float32),
            np.zeros((ny, nx), np.float32),
            np.full((ny, nx), dqbits.NO_DATA, np.uint16),
        )
        for _, _, ny, nx in grid.tiles
    ]
    # Per tile: sum over covered output pixels of 1 / (VAR noise factor), and their count.
    correlation = np.zeros((len(grid.tiles), 2))
    for ext_index, ext in enumerate(frame):
        bad = np.zeros(ext.shape, np.uint16) if ext.dq is None else ext.dq
        bad = np.where(np.isfinite(ext.sci), bad, bad | dqbits.BAD_PIXEL).astype(np.uint16)
        sci = np.nan_to_num(ext.sci, nan=0.0, posinf=0.0, neginf=0.0)
        var = None if ext.var is None else np.nan_to_num(ext.var, nan=0.0, posinf=0.0, neginf=0.0)
        inputs = fill_flagged([sci] if var is None else [sci, var], bad)
        bad = grow_flags(bad, order)
        if order > 1:
            inputs[0] = ndimage.spline_filter(inputs[0], order, mode="nearest", output=np.float32)
        ny_in, nx_in = ext.shape
        for tile_index, tile in enumerate(grid.tiles):
            window = _footprint(geom, ext_index, grid, tile)
            if window is None:
                continue
            spline_y, spline_x, spline_j = _position_splines(geom, ext_index, grid, window)
            cols = np.arange(window[1], window[1] + window[3], dtype=np.float64)
            out_sci, out_var, out_dq = planes[tile_index]
            wy, wx = window[0] - tile[0], window[1] - tile[1]
            # In bands of rows, so that the float64 positions of a whole array are never held.
            for r0 in range(0, window[2], _ROW_BAND):
                r1 = min(r0 + _ROW_BAND, window[2])
                rows = np.arange(window[0] + r0, window[0] + r1, dtype=np.float64)
                py, px = spline_y(rows, cols), spline_x(rows, cols)
                covered = (py >= -0.5) & (py < ny_in - 0.5) & (px >= -0.5) & (px < nx_in - 0.5)
                if not covered.any():
                    continue
                coords = np.array([py, px])
                factor = spline_j(rows, cols).astype(np.float32) if conserve else np.float32(1.0)
                # VAR varies slowly: bilinear interpolation gives its local level (a cubic
                # spline would cost as much again as SCI, and ring beside stars).
                values = [
                    ndimage.map_coordinates(
                        plane,
                        coords,
                        order=min(order, 1) if k else order,
                        mode="nearest",
                        prefilter=False,
                        output=np.float32,
                    )
                    for k, plane in enumerate(inputs)
                ]
                del coords
                region = (slice(wy + r0, wy + r1), slice(wx, wx + window[3]))
                np.copyto(out_sci[region], values[0] * factor, where=covered)
                if len(values) > 1:
                    kept = noise_factor(py, order) * noise_factor(px, order) if order else 1.0
                    var_out = np.maximum(values[1], 0.0) * factor * factor * kept
                    np.copyto(out_var[region], var_out, where=covered)
                    correlation[tile_index] += (
                        np.sum(1.0 / kept, where=covered, initial=0.0) if order else 0.0,
                        covered.sum(),
                    )
                np.copyto(out_dq[region], dq_footprint(bad, py, px, dq_threshold), where=covered)
    extensions = []
    for index, (sci, var, mask) in enumerate(planes):
        header = grid.tile_header(index)
        header["BUNIT"] = frame[0].header.get("BUNIT", "electron")
        if frame[0].var is not None:
            total, count = correlation[index]
            header["VARCORR"] = (
                total / count if order and count else 1.0,
                "Variance of a many-pixel sum / sum of its VAR",
            )
        extensions.append(Extension(sci, header, var=var if frame[0].var is not None else None, dq=mask))
    out = Frame(copy_header(frame.phu), extensions, frame.root)
    out.phu["ALIGNMTH"] = (geom.method, "How the frame was aligned to the reference")
    out.phu["NMATCHED"] = (geom.nmatched, "Sources matched to the reference")
    out.phu["ALIGNDX"] = (float(geom.shift[0]), "[arcsec] East shift of pointing by alignment")
    out.phu["ALIGNDY"] = (float(geom.shift[1]), "[arcsec] North shift of pointing by alignment")
    out.stamp("RESAMPLE", "resampleToCommonFrame (distortion corrected)")
    return out
