"""Relative astrometry: DRAGONS' ``adjustWCSToReference`` (method ``sources``, fallback ``offsets``).

The first frame is the reference. Its catalogued sources are mapped through its own WCS to
the sky and through each other frame's WCS to that frame's pixels; those predicted
positions are matched to the frame's own catalogue (:func:`match_catalogs`), and the
frame's WCS is corrected so that the predictions land on the detections: a shift of
``CRPIX`` by default, a rotation and/or scale of the ``CD`` matrix on request. When fewer
than ``min_sources`` sources match, the WCS is rebuilt from the reference WCS and the
telescope offsets (``POFFSET``, ``QOFFSET``) instead, with a warning.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy import ndimage

from gemred.frame import Frame

__all__ = ["match_catalogs", "chance_match_limit", "fit_transform", "adjust_wcs_to_reference"]

log = logging.getLogger(__name__)

#: A match is trusted only if a wrong shift would reach as many matches, somewhere in the
#: search, with at most this probability (:func:`chance_match_limit`).
FALSE_MATCH_PROBABILITY = 0.01
#: ... and only with at least this many times the matches one wrong shift is expected to give
#: (sources cluster, in blends and about bright stars, which a Poisson count does not allow for).
CHANCE_FACTOR = 5.0


def match_catalogs(
    ref_xy: np.ndarray, xy: np.ndarray, *, search_radius: float, match_radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Match two source lists that differ by an unknown shift.

    First every pair closer than ``search_radius`` votes for its offset in a 2-D histogram
    of bins ``match_radius`` wide; the densest 3 x 3 bins give the shift. Then, with that
    shift removed, each source is paired with its nearest neighbour within ``match_radius``
    when they are each other's nearest (twice, refining the shift from the matches).

    Parameters
    ----------
    ref_xy : (N, 2) array_like
        Reference positions (pixels).
    xy : (M, 2) array_like
        Positions to match to them.
    search_radius : float
        Largest shift considered.
    match_radius : float
        Largest distance of a match once the shift is removed.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Indices into ``ref_xy`` and into ``xy`` of the matched pairs (empty if none).

    Raises
    ------
    ValueError
        For non-positive radii or arrays that are not (N, 2).

    Examples
    --------
    >>> ref = np.array([[10.0, 10.0], [50.0, 80.0], [90.0, 30.0]])
    >>> match_catalogs(ref, ref[::-1] + 2.0, search_radius=5.0, match_radius=0.5)
    (array([0, 1, 2]), array([2, 1, 0]))
    """
    if search_radius <= 0 or match_radius <= 0:
        msg = f"search_radius ({search_radius}) and match_radius ({match_radius}) must be positive"
        raise ValueError(msg)
    ref_xy = np.asarray(ref_xy, dtype=np.float64).reshape(-1, 2)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    empty = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp))
    if len(ref_xy) == 0 or len(xy) == 0:
        return empty
    from scipy.spatial import cKDTree  # lazily: slow to import, only for alignment

    ref_tree, tree = cKDTree(ref_xy), cKDTree(xy)
    pairs = ref_tree.sparse_distance_matrix(tree, search_radius, output_type="ndarray")
    if len(pairs) == 0:
        return empty
    offsets = xy[pairs["j"]] - ref_xy[pairs["i"]]
    nbins = max(int(np.ceil(2 * search_radius / match_radius)), 1)
    edges = np.linspace(-search_radius, search_radius, nbins + 1)
    votes, _, _ = np.histogram2d(offsets[:, 0], offsets[:, 1], bins=(edges, edges))
    votes = ndimage.uniform_filter(votes, size=3, mode="constant")
    ix, iy = np.unravel_index(int(np.argmax(votes)), votes.shape)
    centre = np.array([(edges[ix] + edges[ix + 1]) / 2, (edges[iy] + edges[iy + 1]) / 2])
    near = np.hypot(*(offsets - centre).T) <= 2.0 * match_radius
    shift = np.median(offsets[near], axis=0)
    for _ in range(2):
        dist, nearest = ref_tree.query(xy - shift, distance_upper_bound=match_radius)
        found = np.flatnonzero(np.isfinite(dist))
        if found.size == 0:
            return empty
        # Keep a pair only if the reference source has no closer candidate.
        order = np.lexsort((dist[found], nearest[found]))
        found = found[order]
        first = np.concatenate(([True], np.diff(nearest[found]) != 0))
        found = found[first]
        ref_idx, idx = nearest[found], found
        shift = np.mean(xy[idx] - ref_xy[ref_idx], axis=0)
    order = np.argsort(ref_idx)
    return ref_idx[order], idx[order]


def chance_match_limit(expected: float, search_radius: float, match_radius: float) -> int:
    """Fewest matches that rule out a wrong shift found by :func:`match_catalogs`.

    At one wrong shift the matches are about Poisson with mean ``expected``; the search tries
    about ``(search_radius / match_radius)**2`` distinct shifts and keeps the best, so the
    tail probability per shift must be that many times smaller than
    :data:`FALSE_MATCH_PROBABILITY`. The limit is never below :data:`CHANCE_FACTOR` times
    ``expected``. (On a sparse field of 33 sources a frame in four 5" windows, three noise
    peaks agreeing on a wrong shift are 9 times what one shift expects, and what the best of
    2500 shifts often reaches.)

    Parameters
    ----------
    expected : float
        Matches expected at one wrong shift.
    search_radius, match_radius : float
        The search and match radii given to :func:`match_catalogs`.

    Returns
    -------
    int
        A match with fewer sources is not to be trusted.
    """
    from scipy.stats import poisson  # lazily: slow to import, only for matching

    trials = max((search_radius / match_radius) ** 2, 1.0)
    tail = int(poisson.isf(FALSE_MATCH_PROBABILITY / trials, expected)) + 1
    return max(tail, int(np.ceil(CHANCE_FACTOR * expected)))


def fit_transform(
    pred: np.ndarray, obs: np.ndarray, *, rotate: bool = False, scale: bool = False, nsigma: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares ``obs = matrix @ pred + shift`` with robust clipping of the residuals.

    Parameters
    ----------
    pred, obs : (N, 2) array_like
        Matched positions (x, y).
    rotate, scale : bool
        Allow a rotation and/or a uniform scale besides the shift.
    nsigma : float
        Pairs whose residual exceeds ``nsigma`` robust sigmas (from the median residual) are
        dropped, for up to 5 rounds.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``matrix`` (2, 2), ``shift`` (2,) and the boolean mask of the pairs kept.
    """
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    keep = np.ones(len(pred), dtype=bool)
    matrix, shift = np.eye(2), np.zeros(2)
    for _ in range(5):
        p, o = pred[keep], obs[keep]
        pc, oc = p.mean(axis=0), o.mean(axis=0)
        matrix = np.eye(2)
        if rotate or scale:
            dp, do = p - pc, o - oc
            if rotate:
                u, _, vt = np.linalg.svd(do.T @ dp)
                rot = u @ np.diag([1.0, np.linalg.det(u @ vt)]) @ vt
            else:
                rot = np.eye(2)
            factor = float(np.sum(do * (dp @ rot.T)) / np.sum(dp * dp)) if scale else 1.0
            matrix = factor * rot
        shift = oc - matrix @ pc
        residual = np.hypot(*(obs - pred @ matrix.T - shift).T)
        # Robust sigma per axis: the median distance of a 2-D Gaussian is 1.1774 sigma.
        sigma = float(np.median(residual[keep])) / 1.1774
        new_keep = residual <= max(nsigma * sigma, 1e-6)
        if new_keep.sum() < 2 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return matrix, shift, keep


def _wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, naxis=2)


def _set_linear_wcs(header: fits.Header, crpix: np.ndarray, cd: np.ndarray) -> None:
    """Write ``CRPIX`` and a ``CD`` matrix, dropping any ``PC``/``CDELT`` form."""
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        header.remove(key, ignore_missing=True)
    header["CRPIX1"], header["CRPIX2"] = float(crpix[0]), float(crpix[1])
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])


def _pixel_scale(wcs: WCS) -> float:
    """Pixel side in arcsec."""
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0


def _centre_shift(old: WCS, new: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Where the sky position of the image centre under ``old`` moves to under ``new`` (x, y)."""
    centre = np.array([(shape[1] + 1) / 2, (shape[0] + 1) / 2])
    ra, dec = old.all_pix2world(centre[0], centre[1], 1)
    x, y = new.all_world2pix(ra, dec, 1)
    return np.array([float(x), float(y)]) - centre


def _offsets_wcs(frame: Frame, ref: Frame, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference WCS moved by the difference in telescope offsets (sources move by +P, +Q)."""
    dp = float(frame.phu.get("POFFSET", 0.0)) - float(ref.phu.get("POFFSET", 0.0))
    dq = float(frame.phu.get("QOFFSET", 0.0)) - float(ref.phu.get("QOFFSET", 0.0))
    ref_wcs = _wcs(ref[0].header)
    return ref_wcs.wcs.crpix + np.array([dp, dq]) / scale, ref_wcs.pixel_scale_matrix


def adjust_wcs_to_reference(
    frames: list[Frame],
    *,
    first_pass: float = 5.0,
    match_radius: float = 0.5,
    min_sources: int = 3,
    rotate: bool = False,
    scale: bool = False,
) -> list[Frame]:
    """Align the WCS of every frame to the first one's (DRAGONS ``adjustWCSToReference``).

    Parameters
    ----------
    frames : list of Frame
        Single-extension frames (mosaics) whose extension has an ``OBJCAT`` (see
        :func:`gemred.detection.add_objcat`); the first is the reference.
    first_pass : float
        Largest WCS error searched for, arcsec.
    match_radius : float
        Match tolerance once the shift is found, arcsec.
    min_sources : int
        Fewest matched sources to trust; below it the telescope offsets are used.
    rotate, scale : bool
        Also fit a rotation and/or a uniform scale.

    Returns
    -------
    list of Frame
        Copies with corrected WCS and ``ALIGNDX``/``ALIGNDY`` (pixels the image centre's
        sky position moved), ``ALIGNMTH`` (``sources`` or ``offsets``) and ``NMATCHED`` in
        the extension header; PHU stamped ``ADJWCS``.

    Raises
    ------
    ValueError
        For no frames, multi-extension frames, or a frame without ``OBJCAT``.
    """
    if not frames:
        msg = "adjust_wcs_to_reference: no frames given"
        raise ValueError(msg)
    for frame in frames:
        if len(frame) != 1:
            msg = f"{frame.root}: has {len(frame)} extensions; mosaic the detectors first"
            raise ValueError(msg)
        if frame[0].objcat is None:
            msg = f"{frame.root}: no OBJCAT; run source detection before aligning"
            raise ValueError(msg)
    ref = frames[0]
    ref_wcs = _wcs(ref[0].header)
    ref_cat = ref[0].objcat
    ref_ra, ref_dec = ref_wcs.all_pix2world(
        np.asarray(ref_cat["X_IMAGE"], dtype=np.float64), np.asarray(ref_cat["Y_IMAGE"], dtype=np.float64), 1
    )
    results = []
    for index, frame in enumerate(frames):
        out = frame.copy(deep=False)  # only the WCS changes
        hdr = out[0].header
        if index == 0:
            shift, nmatched, method = np.zeros(2), len(ref_cat), "reference"
        else:
            old = _wcs(hdr)
            pix_scale = _pixel_scale(old)
            px, py = old.all_world2pix(ref_ra, ref_dec, 1)
            pred = np.column_stack([px, py])
            cat = frame[0].objcat
            obs = np.column_stack([np.asarray(cat["X_IMAGE"], float), np.asarray(cat["Y_IMAGE"], float)])
            iref, iobs = match_catalogs(
                pred, obs, search_radius=first_pass / pix_scale, match_radius=match_radius / pix_scale
            )
            if len(iref) >= min_sources:
                matrix, offset, keep = fit_transform(pred[iref], obs[iobs], rotate=rotate, scale=scale)
                crpix = matrix @ old.wcs.crpix + offset
                cd = old.pixel_scale_matrix @ np.linalg.inv(matrix)
                nmatched, method = int(keep.sum()), "sources"
            else:
                warnings.warn(
                    f"{frame.root}: only {len(iref)} sources match the reference (need {min_sources}); "
                    "aligning on the telescope offsets instead",
                    stacklevel=2,
                )
                crpix, cd = _offsets_wcs(frame, ref, pix_scale)
                for key in ("CRVAL1", "CRVAL2"):
                    hdr[key] = ref[0].header[key]
                nmatched, method = len(iref), "offsets"
            _set_linear_wcs(hdr, crpix, cd)
            shift = _centre_shift(old, _wcs(hdr), frame[0].shape)
        hdr["ALIGNDX"] = (float(shift[0]), "[pix] x shift of the WCS by alignment")
        hdr["ALIGNDY"] = (float(shift[1]), "[pix] y shift of the WCS by alignment")
        hdr["ALIGNMTH"] = (method, "How the WCS was aligned to the reference")
        hdr["NMATCHED"] = (nmatched, "Sources matched to the reference")
        log.info("%s: WCS shifted by (%.3f, %.3f) pix, %s, %d matched", frame.root, *shift, method, nmatched)
        out.stamp("ADJWCS", "adjustWCSToReference")
        results.append(out)
    return results
