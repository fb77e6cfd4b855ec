"""GSAOI imaging science, the end of DRAGONS' GSAOI ``reduce`` recipe: align, resample, stack.

After flat correction and sky subtraction (:mod:`gemred.recipes.gsaoi_calibrations`,
:mod:`gemred.primitives.sky`), :func:`stack_gsaoi` takes the frames of one group through
``prepare``'s WCS check (``bad_wcs``, :mod:`gemred.primitives.wcs_check`),
``detectSources`` (per array, positions through the static distortion model; the frames'
own catalogues from :func:`add_source_catalogs` where they have them),
``adjustWCSToReference`` (:func:`gemred.distortion.align_geometries`),
``resampleToCommonFrame`` (all arrays of all frames onto one North-up grid,
:func:`gemred.distortion.resample_to_grid`), ``scaleCountsToReference`` and
``stackFrames``. Frames are read and resampled two at a time (in worker processes, each
frame alone, so the result does not depend on it) and their resampled versions written to a scratch
folder, then stacked from disk in row bands (:func:`gemred.stacking.stack_files`), so
memory does not grow with the number of frames.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from gemred import dq as dqbits
from gemred.detection import detect_sources
from gemred.distortion import (
    FrameGeometry,
    OutputGrid,
    align_geometries,
    catalogue_sky,
    common_grid,
    frame_geometry,
    pixel_to_sky,
    resample_to_grid,
)
from gemred.frame import Extension, Frame, copy_header
from gemred.io import GemredInputError, open_raw, read_catalogues, read_frame, root_name, write_frame
from gemred.primitives.scaling import scale_counts_to_reference
from gemred.primitives.wcs_check import check_wcs
from gemred.recipes.gmos_science import detect_options
from gemred.refcat import apply_pointing, read_reference_catalog, solve_pointing
from gemred.resample import stack_variance_correlation, variance_weight
from gemred.stacking import stack_files

__all__ = [
    "ALIGN_DEFAULTS",
    "STACK_DEFAULTS",
    "add_source_catalogs",
    "detect_frame",
    "ZP_APERTURE_ARCSEC",
    "stack_gsaoi",
    "zero_point",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: GSAOI alignment: the arrays' distortion is modelled, so a small rotation and scale of each
#: pointing are fitted too; sources brighter than the faintest matched are the
#: ``max_sources`` brightest of each frame (a crowded field has thousands).
ALIGN_DEFAULTS: dict[str, object] = {"rotate": True, "scale": True, "max_sources": 200}
#: DRAGONS' GSAOI science stack: mean, sigma clipping, additive offsets.
STACK_DEFAULTS: dict[str, object] = {
    "operation": "mean",
    "reject_method": "sigclip",
    "lsigma": 3.0,
    "hsigma": 3.0,
    "zero": True,
    "memory_mb": 256,
}
#: Radius (arcsec) of the aperture that measures a standard star: the AO halo is a Moffat of
#: 0.45" FWHM whose wings hold about 2 % of the light beyond 1", 0.2 % beyond 2".
ZP_APERTURE_ARCSEC = 2.0
#: Frames measured or resampled at once (more than one: each in its own worker process). Since
#: positions are evaluated in row bands a full-size frame in flight adds about 0.2 GB, so two fit
#: well within the job's 2 GB (9 full-size frames: 1.27 GB process-tree PSS, 95 s).
_FRAMES_IN_FLIGHT = 2
#: OBJCAT flags (SExtractor) that disqualify a source for alignment: blended, truncated.
_BAD_FLAGS = 2 | 8
#: OBJCAT flags that disqualify a source for matching a reference catalogue: saturated, truncated.
_REFCAT_BAD_FLAGS = 4 | 8


def detect_frame(frame: Frame, geom: FrameGeometry, *, detect: Mapping | None = None) -> list[Table]:
    """Source catalogues of every array, with RA/DEC through the distortion model.

    Parameters
    ----------
    frame : Frame
        A flat-corrected (normally sky-subtracted) GSAOI frame.
    geom : FrameGeometry
        Its geometry (:func:`gemred.distortion.frame_geometry`).
    detect : mapping, optional
        ``detectSources`` parameters (DRAGONS names).

    Returns
    -------
    list of astropy.table.Table
        One OBJCAT per extension (see :func:`gemred.detection.detect_sources`).
    """
    return _sky_positions([detect_sources(ext, **detect_options(detect)) for ext in frame], geom)


def _sky_positions(catalogs: list[Table], geom: FrameGeometry) -> list[Table]:
    """The catalogues with RA/DEC of their X_IMAGE/Y_IMAGE through ``geom``, in place."""
    for index, cat in enumerate(catalogs):
        if len(cat):
            ra, dec = pixel_to_sky(
                geom, index, np.asarray(cat["X_IMAGE"], float) - 1.0, np.asarray(cat["Y_IMAGE"], float) - 1.0
            )
            cat["RA"], cat["DEC"] = ra, dec
    return catalogs


def add_source_catalogs(frame: Frame, *, detect: Mapping | None = None) -> Frame:
    """Give every array of a sky-subtracted GSAOI frame its OBJCAT (DRAGONS ``detectSources``).

    The catalogues are made where the frame is (each frame in its own workflow job), so that
    :func:`stack_gsaoi` reads them instead of detecting the sources of every frame itself.

    Parameters
    ----------
    frame : Frame
        A sky-subtracted GSAOI frame.
    detect : mapping, optional
        ``detectSources`` parameters (DRAGONS names).

    Returns
    -------
    Frame
        The same frame, each extension's ``objcat`` set (RA/DEC through the distortion model
        of the frame's own WCS).
    """
    for ext, cat in zip(frame, detect_frame(frame, frame_geometry(frame), detect=detect), strict=True):
        ext.objcat = cat
    return frame


def _fluxes(cat: Table) -> np.ndarray:
    """``FLUX_AUTO`` of a catalogue as floats, -inf where it is masked or not finite."""
    flux = np.ma.masked_invalid(np.ma.asarray(cat["FLUX_AUTO"], dtype=float))
    return flux.filled(-np.inf)


def _brightest(catalogs: list[Table], limit: int) -> list[Table]:
    """The ``limit`` brightest unflagged sources of a frame, kept in their extensions."""
    fluxes = np.concatenate(
        [
            np.where((np.asarray(c["FLAGS"]) & _BAD_FLAGS) == 0, _fluxes(c), -np.inf)
            for c in catalogs
            if len(c)
        ]
        or [np.zeros(0)]
    )
    finite = fluxes[np.isfinite(fluxes)]
    if finite.size == 0:
        return catalogs
    cut = np.sort(finite)[::-1][min(limit, finite.size) - 1]
    out = []
    for cat in catalogs:
        if len(cat) == 0:
            out.append(cat)
            continue
        keep = ((np.asarray(cat["FLAGS"]) & _BAD_FLAGS) == 0) & (_fluxes(cat) >= cut)
        out.append(cat[keep])
    return out


def _offsets(frame: Frame) -> tuple[float, float]:
    return float(frame.phu.get("POFFSET", 0.0)), float(frame.phu.get("QOFFSET", 0.0))


def _checked_headers(paths: Sequence[Path], sequence: Sequence[Path], bad_wcs: str) -> list[list]:
    """Extension headers of the frames ``paths`` after the WCS check of the whole ``sequence``.

    The check compares each frame with the first of its group in time (objects and skies
    together: with sky frames left out, the dead time between object frames would split the
    group); only the files' headers are read.
    """
    shells = [_header_shell(path) for path in sequence]
    checked = {frame.root: [ext.header for ext in frame] for frame in check_wcs(shells, mode=bad_wcs)}
    headers = []
    for path in paths:
        root = _header_shell(path).root
        if root not in checked:
            msg = f"{path}: frame {root} is not in the sequence whose WCS is checked; add it"
            raise GemredInputError(msg)
        headers.append(checked[root])
    return headers


def _header_shell(path: Path) -> Frame:
    """A processed frame's headers with 1x1 placeholder pixels; its pixels are not read."""
    with open_raw(path, memmap=True) as hdul:
        phu = copy_header(hdul[0].header)
        sci = sorted((hdu for hdu in hdul[1:] if hdu.name == "SCI"), key=lambda hdu: hdu.ver)
        extensions = [Extension(np.zeros((1, 1), np.float32), copy_header(hdu.header)) for hdu in sci]
    if not extensions:
        msg = f"{path}: no SCI extensions; give the sky-subtracted (or flat-corrected) GSAOI frames"
        raise GemredInputError(msg)
    return Frame(phu, extensions, root_name(path, phu))


def _measure(
    path: Path, header: list, detect: Mapping | None, max_sources: int | None
) -> tuple[FrameGeometry, list[Table], tuple[float, float]]:
    """Geometry, source catalogues (the ``max_sources`` brightest, or all with None) and
    telescope offsets of one frame, its headers checked. The catalogues are the frame's own
    OBJCATs where every array has one (the workflow's sky step makes them), with RA/DEC
    through the checked geometry; otherwise its sources are detected here."""
    frame = read_catalogues(path)
    catalogued = all(ext.objcat is not None for ext in frame)
    if not catalogued:
        frame = read_frame(path, tables=False)
    for ext, checked in zip(frame, header, strict=True):
        ext.header = checked
    geom = frame_geometry(frame)
    if catalogued:
        found = _sky_positions([ext.objcat for ext in frame], geom)
    else:
        found = detect_frame(frame, geom, detect=detect)
    return geom, found if max_sources is None else _brightest(found, max_sources), _offsets(frame)


def _resample(
    index: int,
    path: Path,
    geom: FrameGeometry,
    grid: OutputGrid,
    reference: Frame,
    folder: str,
    options: dict,
) -> tuple[Path, list[tuple[float, float]]]:
    """Resample one frame onto the grid, scale it to the reference's exposure time, write it;
    the file and, per tile, its :func:`~gemred.resample.variance_weight` and ``VARCORR``."""
    frame = resample_to_grid(read_frame(path, tables=False), geom, grid, **options)
    frame = scale_counts_to_reference([reference, frame])[1]
    out = Path(folder) / f"{index:04d}_{frame.root}_resampled.fits"
    write_frame(frame, out, scratch=True)
    return out, [(variance_weight(ext), float(ext.header.get("VARCORR", 1.0))) for ext in frame]


def _per_frame(func, *iterables, progress: str | None = None) -> list:
    """``[func(*args) for args in zip(*iterables)]``, :data:`_FRAMES_IN_FLIGHT` frames at a time.

    Each frame is processed alone in a forked worker process (not a thread: astropy's FITS
    code changes the process-wide warning filters while it reads), so the results are the
    same whatever the number of workers. With ``progress``, each result is logged as
    ``"<progress> k/n"`` as it arrives.
    """
    arguments = [list(values) for values in iterables]
    total = len(arguments[0]) if arguments else 0

    def collect(results) -> list:
        done = []
        for result in results:
            done.append(result)
            if progress:
                log.info("%s %d/%d", progress, len(done), total)
        return done

    if _FRAMES_IN_FLIGHT <= 1:
        return collect(map(func, *arguments))
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(_FRAMES_IN_FLIGHT, mp_context=context) as pool:
        return collect(pool.map(func, *arguments))


def stack_gsaoi(
    paths: Sequence[PathLike],
    *,
    align: Mapping | None = None,
    resample: Mapping | None = None,
    stack: Mapping | None = None,
    detect: Mapping | None = None,
    magnitude: float | None = None,
    bad_wcs: str = "exit",
    sequence: Sequence[PathLike] | None = None,
    scratch: PathLike | None = None,
    refcat: PathLike | None = None,
    astrometry: Mapping | None = None,
) -> Frame:
    """Align, resample onto one North-up grid and stack GSAOI frames into the ``_image`` product.

    Parameters
    ----------
    paths : sequence of path-like
        Sky-subtracted GSAOI frames of one group (4 array extensions each, in electrons);
        the first is the reference for alignment, grid centre and exposure time.
    align : mapping, optional
        :func:`~gemred.distortion.align_geometries` options (DRAGONS ``adjustWCSToReference``)
        over :data:`ALIGN_DEFAULTS`, plus ``max_sources``.
    resample : mapping, optional
        :func:`~gemred.distortion.resample_to_grid` options and ``pixel_scale`` (arcsec;
        default GSAOI's nominal); ``trim_data`` is not supported and must be false.
    stack : mapping, optional
        :func:`~gemred.stacking.stack_files` options over :data:`STACK_DEFAULTS`.
    detect : mapping, optional
        ``detectSources`` parameters, for the stack and for frames without an OBJCAT on
        every array (a frame's own catalogues are used as they are).
    magnitude : float, optional
        Catalogue magnitude of a standard star in the frames' filter: the zero point is
        measured on the stack (:func:`zero_point`) and written to its primary header.
    bad_wcs : {'exit', 'fix', 'new', 'ignore'}
        DRAGONS ``prepare`` WCS check of the frames against their telescope offsets
        (:func:`gemred.primitives.wcs_check.check_wcs`), before alignment.
    sequence : sequence of path-like, optional
        The frames whose WCS are checked together (the whole observing sequence, sky frames
        included); default ``paths``. Every frame of ``paths`` must be among them.
    scratch : path-like, optional
        Folder for the resampled frames (a temporary folder inside it is removed at the end);
        default the system's temporary folder.
    refcat : path-like, optional
        Reference catalogue (:func:`gemred.refcat.read_reference_catalog`): the pointing is
        corrected to it before the output grid is built (absolute astrometry; ``REFCAT`` and
        the fit in the primary header). Without it, only relative alignment.
    astrometry : mapping, optional
        :func:`gemred.refcat.solve_pointing` options (DRAGONS ``determineAstrometricSolution``:
        ``initial``, ``final``, ``min_sources``).

    Returns
    -------
    Frame
        The stack, one extension per tile of the common grid (one at full size), in
        electrons, with an OBJCAT per extension; ``NCOMBINE``, ``PROCSCI``.

    Raises
    ------
    GemredInputError
        If no paths are given, a frame is not GSAOI, or a frame cannot be aligned.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        msg = "stack_gsaoi: no frames given"
        raise GemredInputError(msg)
    align_options = {**ALIGN_DEFAULTS, **dict(align or {})}
    max_sources = int(align_options.pop("max_sources"))
    resample_options = dict(resample or {})
    if resample_options.pop("trim_data", False):
        msg = "resampleToCommonFrame: trim_data=true is not supported for GSAOI; set it to false"
        raise GemredInputError(msg)
    pixel_scale = resample_options.pop("pixel_scale", None)
    headers = _checked_headers(paths, [Path(p) for p in sequence or paths], bad_wcs)

    n = len(paths)
    # The reference frame's whole catalogue is kept for a reference catalogue to match.
    measured = _per_frame(_measure, paths, headers, [detect] * n, [None] + [max_sources] * (n - 1))
    geometries, catalogs, offsets = (list(column) for column in zip(*measured, strict=True))
    reference_sources = catalogs[0]
    catalogs[0] = _brightest(reference_sources, max_sources)
    geometries = align_geometries(geometries, catalogs, offsets=offsets, **align_options)
    solution = None
    if refcat is not None:
        # Every unsaturated, untruncated source: the catalogue's stars are often the bright,
        # blended ones that alignment leaves out.
        usable = [
            cat[(np.asarray(cat["FLAGS"]) & _REFCAT_BAD_FLAGS) == 0] if len(cat) else cat
            for cat in reference_sources
        ]
        ra, dec = catalogue_sky(geometries[0], usable)
        solution = solve_pointing(
            ra,
            dec,
            read_reference_catalog(refcat),
            centre=geometries[0].pointing,
            **dict(astrometry or {}),
        )
        if solution is not None:
            geometries = apply_pointing(geometries, solution)
    grid = common_grid(geometries, pixel_scale=pixel_scale)
    log.info("common grid: %d tile(s) %s, centre %s", len(grid.tiles), grid.tiles, grid.centre)
    stack_options = {**STACK_DEFAULTS, **dict(stack or {})}
    with tempfile.TemporaryDirectory(prefix="gsaoi_resampled_", dir=scratch) as folder:
        reference = Frame(fits.getheader(paths[0], 0), [], geometries[0].root)  # only EXPTIME is used
        done = _per_frame(
            _resample,
            range(n),
            paths,
            geometries,
            [grid] * n,
            [reference] * n,
            [folder] * n,
            [resample_options] * n,
            progress=f"{geometries[0].root}: resampled frames",
        )
        resampled = [path for path, _ in done]
        # Per tile, each frame's VAR weight and VARCORR, for the stack's VARCORR.
        weights = [[shares[index][0] for _, shares in done] for index in range(len(grid.tiles))]
        factors = [[shares[index][1] for _, shares in done] for index in range(len(grid.tiles))]
        log.info("%s: stacking %d resampled frames", geometries[0].root, n)
        stacked = stack_files(resampled, **stack_options)
    stacked.root = geometries[0].root
    for ext, tile_weights, tile_factors in zip(stacked, weights, factors, strict=True):
        ext.header["BUNIT"] = "electron"
        ext.header["VARCORR"] = (
            stack_variance_correlation(tile_weights, tile_factors),
            "Variance of a many-pixel sum / sum of its VAR",
        )
        ext.objcat = detect_sources(ext, **detect_options(detect))
    if solution is not None:
        stacked.phu.update(solution.header_cards())
    if magnitude is not None:
        zero_point(stacked, magnitude=magnitude)
    stacked.stamp("PROCSCI", "UT time stamp: processed science")
    log.info(
        "%s: stack of %d frames, %s sources",
        stacked.root,
        len(paths),
        [len(ext.objcat) for ext in stacked],
    )
    return stacked


def zero_point(stack: Frame, *, magnitude: float, aperture: float = ZP_APERTURE_ARCSEC) -> float:
    """Measure a standard star's zero point on a stack and write it to the primary header.

    The star is the source of largest ``FLUX_AUTO`` in the stack's OBJCATs; its counts are
    summed in a circle of ``aperture`` arcsec (NO_DATA pixels left out) around it. The zero
    point is the magnitude that gives one electron per second:
    ``ZP = magnitude + 2.5 log10(counts / EXPTIME)``.

    Parameters
    ----------
    stack : Frame
        A sky-subtracted stack in electrons with OBJCATs and a TAN WCS per extension; its
        primary header gets ``MAGZP``, ``MAGZPERR``, ``ZPMAG``, ``ZPAPER``.
    magnitude : float
        Catalogue magnitude of the star in the stack's filter.
    aperture : float
        Aperture radius, arcsec.

    Returns
    -------
    float
        The zero point.

    Raises
    ------
    GemredInputError
        If the stack has no source or no exposure time.
    """
    import sep  # lazily: only standards need it

    best = None
    for index, ext in enumerate(stack):
        cat = ext.objcat
        if cat is not None and len(cat):
            flux = _fluxes(cat)
            k = int(np.argmax(flux))
            if np.isfinite(flux[k]) and (best is None or flux[k] > best[0]):
                best = (float(flux[k]), index, float(cat["X_IMAGE"][k]), float(cat["Y_IMAGE"][k]))
    exptime = float(stack.phu.get("EXPTIME", 0.0))
    if best is None or exptime <= 0:
        msg = f"{stack.root}: no source found or no EXPTIME; cannot measure the standard star's zero point"
        raise GemredInputError(msg)
    _, index, x, y = best
    ext = stack[index]
    scale = abs(float(ext.header["CD2_2"])) * 3600.0
    sci = np.ascontiguousarray(ext.sci, dtype=np.float32)
    var = None if ext.var is None else np.ascontiguousarray(ext.var, dtype=np.float32)
    mask = None if ext.dq is None else (ext.dq & dqbits.NO_DATA) != 0
    counts, error, _ = sep.sum_circle(sci, [x - 1.0], [y - 1.0], aperture / scale, var=var, mask=mask)
    if not counts[0] > 0:
        msg = f"{stack.root}: the standard star's aperture sum is {counts[0]}; check the sky subtraction"
        raise GemredInputError(msg)
    zp = magnitude + 2.5 * math.log10(float(counts[0]) / exptime)
    zp_err = 2.5 / math.log(10) * float(error[0]) / float(counts[0])
    stack.phu["MAGZP"] = (round(zp, 4), "Zero point: magnitude for 1 electron/s")
    stack.phu["MAGZPERR"] = (round(zp_err, 4), "Statistical error of MAGZP (mag)")
    stack.phu["ZPMAG"] = (magnitude, "Catalogue magnitude of the standard star")
    stack.phu["ZPAPER"] = (aperture, "[arcsec] Aperture radius of the standard star")
    log.info('%s: zero point %.3f +- %.3f from a %.1f" aperture', stack.root, zp, zp_err, aperture)
    return zp
