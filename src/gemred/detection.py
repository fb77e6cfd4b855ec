"""Source detection and photometry with ``sep``: DRAGONS' ``detectSources`` (OBJCAT, OBJMASK).

DRAGONS runs SExtractor (``geminidr/core/primitives_photometry.py``); ``sep`` is the same
algorithms as a library. The background is a ``back_size`` mesh median-filtered over
``back_filtersize`` meshes; detection uses the VAR plane as the per-pixel noise (else the
background RMS), the default 3x3 matched filter, ``minarea`` connected pixels above
``threshold`` sigma and SExtractor's deblending. Pixels with ``mask_bits`` DQ bits set are
ignored; saturated pixels are not masked by default (DRAGONS masks with 249 = everything but
non-linear and saturated), so saturated stars are found whole and flagged.

Catalogue columns follow SExtractor / DRAGONS ``OBJCAT`` names:

========================  =================================================================
``NUMBER``                1, 2, ... (also the object's value in the segmentation map)
``X_IMAGE``, ``Y_IMAGE``  1-based windowed centroid (SExtractor ``XWIN_IMAGE``; the
                          isophotal barycentre where the windowed fit fails)
``RA``, ``DEC``           degrees, from the extension WCS
``FLUX_AUTO``             Kron-aperture flux (factor 2.5, Kron radius at least 3.5) with
                          ``FLUXERR_AUTO``
``FLUX_APER``             flux in a circle of radius ``max(phot_min_radius, 2 x median FWHM)``
                          (``meta['APER_RAD']``) with ``FLUXERR_APER``
``ISOAREA_IMAGE``         pixels above threshold
``FWHM_IMAGE``            ``2 sqrt(A / pi)`` with ``A`` the pixels above half the peak;
                          ``FWHM_WORLD`` the same in arcsec
``ELLIPTICITY``           ``1 - b / a`` from the isophotal second moments
``THETA_IMAGE``           position angle of the major axis, degrees counter-clockwise from x
``BACKGROUND``            local background
``FLAGS``                 SExtractor bits: 1 masked pixels in the aperture, 2 deblended,
                          4 saturated pixel, 8 truncated (image edge, or the aperture
                          reaches ``NO_DATA`` pixels), 16 aperture corrupted,
                          64 deblending overflow
========================  =================================================================

Fluxes are in the units of SCI (electrons after ``ADUToElectrons``) and background-subtracted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import sep
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from scipy import ndimage

from gemred import dq as dqbits
from gemred.frame import Extension, Frame

__all__ = ["DETECTION_MASK", "detect_sources", "object_mask", "add_objcat"]

#: DQ bits ignored by detection: DRAGONS' 249 (all but non-linear and saturated).
DETECTION_MASK = (
    dqbits.BAD_PIXEL | dqbits.COSMIC_RAY | dqbits.NO_DATA | dqbits.OVERLAP | dqbits.UNILLUMINATED | 128
)
#: Kron factor and smallest Kron radius (in units of the isophotal a, b) of FLUX_AUTO
#: (SExtractor ``PHOT_AUTOPARAMS 2.5, 3.5``).
_KRON_FACTOR = 2.5
_KRON_MIN_RADIUS = 3.5


@dataclass
class _Extraction:
    """Everything ``sep`` found in one image."""

    data: np.ndarray
    err: np.ndarray | float
    mask: np.ndarray
    background: np.ndarray
    objects: np.ndarray
    segmap: np.ndarray


def _extract(
    ext: Extension,
    *,
    threshold: float,
    minarea: int,
    deblend_cont: float,
    back_size: int,
    back_filtersize: int,
    mask_bits: int,
) -> _Extraction:
    if threshold <= 0 or minarea < 1 or back_size < 1 or back_filtersize < 1:
        msg = (
            f"threshold ({threshold}), minarea ({minarea}), back_size ({back_size}) and "
            f"back_filtersize ({back_filtersize}) must be positive"
        )
        raise ValueError(msg)
    data = np.ascontiguousarray(ext.sci, dtype=np.float32)
    mask = np.zeros(data.shape, dtype=bool) if ext.dq is None else (ext.dq & mask_bits) != 0
    if ext.var is not None:
        mask |= ~(ext.var > 0)
    mask |= ~np.isfinite(data)
    if mask.all():
        msg = "every pixel is masked; nothing to detect"
        raise ValueError(msg)
    data = np.where(mask, np.float32(0), data)
    bkg = sep.Background(data, mask=mask, bw=back_size, bh=back_size, fw=back_filtersize, fh=back_filtersize)
    background = bkg.back(dtype=np.float32)
    sub = data - background
    sub[mask] = 0.0
    if ext.var is not None:
        err: np.ndarray | float = np.sqrt(np.where(mask, np.float32(1), ext.var))
        err = err.astype(np.float32, copy=False)
    else:
        err = float(bkg.globalrms)
    sep.set_extract_pixstack(max(sep.get_extract_pixstack(), data.size // 4))
    sep.set_sub_object_limit(max(sep.get_sub_object_limit(), 4096))
    objects, segmap = sep.extract(
        sub, threshold, err=err, mask=mask, minarea=minarea, deblend_cont=deblend_cont, segmentation_map=True
    )
    return _Extraction(sub, err, mask, background, objects, segmap)


def _fwhm(found: _Extraction) -> np.ndarray:
    """``2 sqrt(A / pi)``, ``A`` = pixels of each segment above half its peak."""
    seg = found.segmap
    inside = seg > 0
    labels = seg[inside]
    half = 0.5 * found.objects["peak"][labels - 1]
    above = found.data[inside] > half
    area = np.bincount(labels[above], minlength=len(found.objects) + 1)[1:]
    return 2.0 * np.sqrt(np.maximum(area, 1) / np.pi)


def _typical_fwhm(objects: np.ndarray, fwhm: np.ndarray) -> float:
    """Median FWHM of the isolated sources well above the noise (0 if there are none)."""
    clean = (objects["flag"] & (sep.OBJ_MERGED | sep.OBJ_TRUNC)) == 0
    strong = clean & (objects["npix"] >= np.percentile(objects["npix"], 75)) if clean.any() else clean
    chosen = fwhm[strong] if strong.sum() >= 3 else fwhm[clean]
    return float(np.median(chosen)) if chosen.size else 0.0


def _wcs(ext: Extension) -> WCS | None:
    if "CTYPE1" not in ext.header:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(ext.header, naxis=2)


def detect_sources(
    ext: Extension,
    *,
    threshold: float = 2.0,
    minarea: int = 8,
    deblend_cont: float = 0.005,
    back_size: int = 32,
    back_filtersize: int = 8,
    phot_min_radius: float = 3.5,
    mask_bits: int = DETECTION_MASK,
) -> Table:
    """Detect and measure the sources of one extension (DRAGONS ``detectSources``).

    Parameters
    ----------
    ext : Extension
        Image with optional VAR (noise for the threshold and errors) and DQ.
    threshold : float
        Detection threshold in sigma per pixel (``detect_thresh``).
    minarea : int
        Minimum connected pixels (``detect_minarea``).
    deblend_cont : float
        Deblending contrast (``deblend_mincont``).
    back_size : int
        Background mesh size in pixels.
    back_filtersize : int
        Median filter over background meshes.
    phot_min_radius : float
        Smallest radius (pixels) of the FLUX_APER aperture.
    mask_bits : int
        DQ bits of pixels to ignore (see :data:`DETECTION_MASK`).

    Returns
    -------
    astropy.table.Table
        The OBJCAT (columns in the module docstring), one row per source, with
        ``meta['APER_RAD']``; empty (with the columns) if nothing is found.

    Raises
    ------
    ValueError
        For non-positive parameters or an image that is entirely masked.
    """
    found = _extract(
        ext,
        threshold=threshold,
        minarea=minarea,
        deblend_cont=deblend_cont,
        back_size=back_size,
        back_filtersize=back_filtersize,
        mask_bits=mask_bits,
    )
    return _catalogue(ext, found, phot_min_radius)


def _catalogue(ext: Extension, found: _Extraction, phot_min_radius: float) -> Table:
    obj = found.objects
    n = len(obj)
    data, err, mask = found.data, found.err, found.mask
    fwhm = _fwhm(found) if n else np.zeros(0)
    x, y = obj["x"].astype(np.float64), obj["y"].astype(np.float64)
    xwin, ywin = x.copy(), y.copy()
    aper_flags = np.zeros(n, dtype=np.int16)
    flux_auto = fluxerr_auto = flux_aper = fluxerr_aper = np.zeros(n)
    radius = float(max(phot_min_radius, 2.0 * _typical_fwhm(obj, fwhm)))
    if n:
        theta = np.clip(obj["theta"], -np.pi / 2, np.pi / 2)
        # sep returns NaN axes for a source whose second moments are degenerate (a line of pixels).
        a = np.maximum(np.nan_to_num(obj["a"], nan=1e-3), 1e-3)
        b = np.maximum(np.nan_to_num(obj["b"], nan=1e-3), 1e-3)
        wx, wy, wflag = sep.winpos(data, x, y, fwhm / 2.3548, mask=mask)
        ok = (wflag == 0) & np.isfinite(wx) & np.isfinite(wy) & (np.hypot(wx - x, wy - y) < fwhm)
        xwin[ok], ywin[ok] = wx[ok], wy[ok]
        # Like SExtractor, FLUX_AUTO ignores the pixels of other sources (sets FLAGS bit 1).
        ids = np.arange(1, n + 1, dtype=np.int32)
        seg = found.segmap.astype(np.int32, copy=False)
        kron, kflag = sep.kron_radius(data, x, y, a, b, theta, 6.0, mask=mask, seg_id=ids, segmap=seg)
        kron = np.maximum(np.where(np.isfinite(kron), kron, 0.0), _KRON_MIN_RADIUS)
        flux_auto, fluxerr_auto, f1 = sep.sum_ellipse(
            data, x, y, a, b, theta, _KRON_FACTOR * kron, err=err, mask=mask, seg_id=ids, segmap=seg, subpix=1
        )
        flux_aper, fluxerr_aper, f2 = sep.sum_circle(data, xwin, ywin, radius, err=err, mask=mask, subpix=5)
        aper_flags = f1 | f2 | kflag
        if ext.dq is not None:
            # An aperture reaching into a gap or off the data is truncated (FLAGS 8).
            nodata = ((ext.dq & dqbits.NO_DATA) != 0).astype(np.float32)
            lost, _, _ = sep.sum_circle(nodata, xwin, ywin, radius, subpix=1)
            aper_flags = aper_flags | np.where(lost > 0, sep.APER_TRUNC, 0).astype(aper_flags.dtype)
    flags = np.zeros(n, dtype=np.int16)
    flags |= np.where(aper_flags & sep.APER_HASMASKED, 1, 0).astype(np.int16)
    flags |= np.where(obj["flag"] & sep.OBJ_MERGED, 2, 0).astype(np.int16)
    flags |= np.where((obj["flag"] & sep.OBJ_TRUNC) | (aper_flags & sep.APER_TRUNC), 8, 0).astype(np.int16)
    flags |= np.where(aper_flags & sep.APER_ALLMASKED, 16, 0).astype(np.int16)
    flags |= np.where(obj["flag"] & sep.OBJ_DOVERFLOW, 64, 0).astype(np.int16)
    if ext.dq is not None and n:
        saturated = (ext.dq & dqbits.SATURATED) != 0
        hits = np.bincount(found.segmap[saturated & (found.segmap > 0)], minlength=n + 1)[1:]
        flags |= np.where(hits > 0, 4, 0).astype(np.int16)
    background = (
        found.background[
            np.clip(np.rint(y).astype(int), 0, data.shape[0] - 1),
            np.clip(np.rint(x).astype(int), 0, data.shape[1] - 1),
        ]
        if n
        else np.zeros(0)
    )
    wcs = _wcs(ext)
    if wcs is not None and n:
        ra, dec = wcs.all_pix2world(xwin, ywin, 0)
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    else:
        ra = dec = np.full(n, np.nan)
        scale = np.nan
    table = Table(
        {
            "NUMBER": np.arange(1, n + 1, dtype=np.int32),
            "X_IMAGE": xwin + 1.0,
            "Y_IMAGE": ywin + 1.0,
            "RA": np.asarray(ra, dtype=np.float64),
            "DEC": np.asarray(dec, dtype=np.float64),
            "FLUX_AUTO": np.asarray(flux_auto, dtype=np.float64),
            "FLUXERR_AUTO": np.asarray(fluxerr_auto, dtype=np.float64),
            "FLUX_APER": np.asarray(flux_aper, dtype=np.float64),
            "FLUXERR_APER": np.asarray(fluxerr_aper, dtype=np.float64),
            "ISOAREA_IMAGE": obj["npix"].astype(np.int32),
            "FWHM_IMAGE": fwhm.astype(np.float64),
            "FWHM_WORLD": fwhm * scale,
            "ELLIPTICITY": (1.0 - obj["b"] / np.maximum(obj["a"], 1e-6)).astype(np.float64),
            "THETA_IMAGE": np.degrees(obj["theta"]).astype(np.float64),
            "BACKGROUND": np.asarray(background, dtype=np.float64),
            "FLAGS": flags,
        }
    )
    table.meta["APER_RAD"] = radius
    return table


def object_mask(
    ext: Extension,
    *,
    dilation: int = 2,
    threshold: float = 2.0,
    minarea: int = 8,
    deblend_cont: float = 0.005,
    back_size: int = 32,
    back_filtersize: int = 8,
    mask_bits: int = DETECTION_MASK,
) -> np.ndarray:
    """Boolean mask of the pixels of detected sources (DRAGONS' ``OBJMASK``), dilated.

    Parameters
    ----------
    ext : Extension
        Image with optional VAR and DQ.
    dilation : int
        Grow the segmentation by this many pixels (a disc); 0 keeps it as it is.
    threshold, minarea, deblend_cont, back_size, back_filtersize, mask_bits
        As in :func:`detect_sources`.

    Returns
    -------
    numpy.ndarray
        ``True`` on source pixels, the shape of ``ext.sci``.

    Raises
    ------
    ValueError
        For a negative ``dilation`` or as :func:`detect_sources`.
    """
    if dilation < 0:
        msg = f"dilation must be >= 0, not {dilation}"
        raise ValueError(msg)
    found = _extract(
        ext,
        threshold=threshold,
        minarea=minarea,
        deblend_cont=deblend_cont,
        back_size=back_size,
        back_filtersize=back_filtersize,
        mask_bits=mask_bits,
    )
    mask = found.segmap > 0
    if dilation:
        yy, xx = np.mgrid[-dilation : dilation + 1, -dilation : dilation + 1]
        mask = ndimage.binary_dilation(mask, structure=xx**2 + yy**2 <= dilation**2)
    return mask


def add_objcat(frame: Frame, **kwargs) -> Frame:
    """Detect sources on every extension and attach the catalogues as ``OBJCAT``.

    Parameters
    ----------
    frame : Frame
        Any frame (normally a mosaic).
    **kwargs
        Passed to :func:`detect_sources`.

    Returns
    -------
    Frame
        A copy with ``Extension.objcat`` set, PHU stamped ``DETECSRC``.
    """
    result = frame.copy()
    for ext in result:
        ext.objcat = detect_sources(ext, **kwargs)
    result.stamp("DETECSRC", "detectSources")
    return result
