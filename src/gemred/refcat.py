"""Absolute astrometry against a user's reference catalogue (DRAGONS ``addReferenceCatalog`` and
``determineAstrometricSolution``, with the catalogue read from a file instead of a web service).

Without a catalogue a stack is only aligned to its reference frame, whose WCS carries the
telescope's pointing error (a few tenths of an arcsecond: tens of GSAOI pixels). With one,
the reference frame's sources are matched to the catalogue on the tangent plane and the
shift between them is the pointing error; every frame's pointing is moved by it before the
output grid is built, so the stack stays exactly North up and its WCS is tied to the
catalogue. Only a shift is fitted: the static distortion model fixes the scale and the
position angle.

A catalogue is any table astropy reads (CSV, ECSV, FITS, VOTable) with right ascension and
declination in degrees, in columns named as in :data:`RA_NAMES` and :data:`DEC_NAMES` (any
case): ``RAJ2000``/``DEJ2000`` as DRAGONS' ``REFCAT`` and VizieR's 2MASS, ``ra``/``dec`` as
Gaia's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from gemred.alignment import chance_match_limit, fit_transform, match_catalogs
from gemred.distortion import FrameGeometry, from_tangent, to_tangent
from gemred.io import GemredInputError

__all__ = [
    "DEC_NAMES",
    "RA_NAMES",
    "AstrometricSolution",
    "read_reference_catalog",
    "solve_pointing",
    "apply_pointing",
]

log = logging.getLogger(__name__)

#: Accepted names of the right-ascension column (degrees), compared without case.
RA_NAMES = ("RAJ2000", "RA_ICRS", "RA", "RA_DEG", "RADEG", "ALPHA_J2000")
#: Accepted names of the declination column (degrees), compared without case.
DEC_NAMES = ("DEJ2000", "DE_ICRS", "DEC", "DEC_DEG", "DECDEG", "DELTA_J2000")


@dataclass(frozen=True)
class AstrometricSolution:
    """The pointing correction found against a reference catalogue.

    Attributes
    ----------
    catalog : str
        The catalogue file's name.
    shift : numpy.ndarray
        (East, North) arcsec to move the pointing by.
    nmatched : int
        Sources matched and kept by the clipped fit.
    rms : float
        Rms distance (arcsec) of the kept matches after the shift.
    """

    catalog: str
    shift: np.ndarray
    nmatched: int
    rms: float

    def header_cards(self) -> dict[str, tuple]:
        """Primary-header keywords recording the solution."""
        return {
            "REFCAT": (self.catalog, "Reference catalogue of the absolute astrometry"),
            "REFNMTCH": (self.nmatched, "Sources matched to the reference catalogue"),
            "REFRMS": (round(self.rms, 4), "[arcsec] Rms of the matches after the fit"),
            "REFDX": (round(float(self.shift[0]), 4), "[arcsec] East shift of the pointing"),
            "REFDY": (round(float(self.shift[1]), 4), "[arcsec] North shift of the pointing"),
        }


def _column(table: Table, names: tuple[str, ...]) -> str | None:
    by_upper = {name.upper(): name for name in table.colnames}
    return next((by_upper[n] for n in names if n in by_upper), None)


def read_reference_catalog(path: str | PathLike) -> Table:
    """Read a reference catalogue into a table of ``RA`` and ``DEC`` (degrees).

    Parameters
    ----------
    path : path-like
        A table file astropy can read (format from the extension: ``.csv``, ``.ecsv``,
        ``.fits``, ``.xml``/``.vot``...), with RA and Dec columns named as in
        :data:`RA_NAMES`/:data:`DEC_NAMES`.

    Returns
    -------
    astropy.table.Table
        ``RA``, ``DEC`` of every row with finite coordinates; ``meta['name']`` the file name.

    Raises
    ------
    GemredInputError
        If the file is missing or unreadable, lacks the columns, or has no usable row.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: reference catalogue not found; check the refcat setting"
        raise GemredInputError(msg)
    try:
        table = Table.read(path, format="ascii.csv") if path.suffix.lower() == ".csv" else Table.read(path)
    except Exception as err:  # astropy raises many types for unreadable tables
        msg = f"{path}: cannot read the reference catalogue ({err}); give a CSV, ECSV, FITS or VOTable file"
        raise GemredInputError(msg) from err
    ra_name, dec_name = _column(table, RA_NAMES), _column(table, DEC_NAMES)
    if ra_name is None or dec_name is None:
        msg = (
            f"{path}: the reference catalogue needs RA and Dec columns in degrees, named one of "
            f"{', '.join(RA_NAMES)} and {', '.join(DEC_NAMES)}; it has {', '.join(table.colnames)}"
        )
        raise GemredInputError(msg)
    ra = np.asarray(table[ra_name], dtype=np.float64)
    dec = np.asarray(table[dec_name], dtype=np.float64)
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        msg = f"{path}: the reference catalogue has no row with finite {ra_name}, {dec_name}"
        raise GemredInputError(msg)
    return Table({"RA": ra[good], "DEC": dec[good]}, meta={"name": path.name})


def _chance_matches(obs: np.ndarray, ref: np.ndarray, *, radius: float, step: float) -> float:
    """Sources within ``radius`` of a catalogue star when shifted ``step`` in 8 directions: the
    matches a wrong shift would give in this field, whatever its footprint and crowding."""
    tree = cKDTree(ref)
    angles = np.arange(8) * np.pi / 4
    counts = [
        np.isfinite(
            tree.query(obs + step * np.array([np.cos(a), np.sin(a)]), distance_upper_bound=radius)[0]
        ).sum()
        for a in angles
    ]
    return float(np.mean(counts))


def solve_pointing(
    ra: np.ndarray,
    dec: np.ndarray,
    refcat: Table,
    *,
    centre: tuple[float, float],
    initial: float = 5.0,
    final: float = 0.1,
    min_sources: int = 3,
) -> AstrometricSolution | None:
    """Find the shift that puts detected sources on a reference catalogue.

    Parameters
    ----------
    ra, dec : numpy.ndarray
        Detected sources (degrees) through the frame's current geometry.
    refcat : astropy.table.Table
        From :func:`read_reference_catalog`.
    centre : (float, float)
        RA, Dec (degrees) of the tangent point (the frame's pointing).
    initial : float
        Largest pointing error searched for, arcsec (DRAGONS ``initial``).
    final : float
        Match radius once the shift is found, arcsec (DRAGONS ``final``). DRAGONS' GSAOI
        default is 0.5"; through the static distortion model the detections are good to a
        few mas, and in a crowded field a wider radius lets chance pairs pull the shift.
    min_sources : int
        Fewest matches to trust.

    Returns
    -------
    AstrometricSolution or None
        None, with a warning, when no catalogue star lies in the field (a catalogue made for
        another group's field).

    Raises
    ------
    GemredInputError
        If too few sources match, or not more than a wrong shift could
        (:func:`gemred.alignment.chance_match_limit`).
    """
    name = str(refcat.meta.get("name", "reference catalogue"))
    obs = np.column_stack(to_tangent(np.asarray(ra), np.asarray(dec), centre))
    ref = np.column_stack(to_tangent(np.asarray(refcat["RA"]), np.asarray(refcat["DEC"]), centre))
    # Only the catalogue stars near the detections can match.
    near = (np.abs(ref[:, 0]) < np.abs(obs[:, 0]).max() + initial) & (
        np.abs(ref[:, 1]) < np.abs(obs[:, 1]).max() + initial
    )
    ref = ref[near]
    if len(ref) == 0:
        log.warning('%s: no star within %s" of the field; only relative alignment', name, initial)
        return None
    iref, iobs = (
        match_catalogs(ref, obs, search_radius=initial, match_radius=final)
        if len(ref) and len(obs)
        else (np.zeros(0, int), np.zeros(0, int))
    )
    if len(iref) < min_sources:
        msg = (
            f"{name}: {len(iref)} of {len(obs)} detected sources match the reference catalogue "
            f'within {initial}" ({min_sources} needed); check that the catalogue covers the field, '
            "or raise initial"
        )
        raise GemredInputError(msg)
    _, shift, keep = fit_transform(obs[iobs], ref[iref])
    chance = _chance_matches(obs + shift, ref, radius=final, step=2.0 * initial)
    limit = chance_match_limit(chance, initial, final)
    if keep.sum() < limit:
        msg = (
            f"{name}: {keep.sum()} detected sources match the reference catalogue, but "
            f"{chance:.1f} would by chance at a wrong shift in this field and the search could "
            f"find one with up to {limit - 1}; the catalogue does not constrain the pointing "
            "(too sparse, or the wrong field)"
        )
        raise GemredInputError(msg)
    residual = ref[iref][keep] - (obs[iobs][keep] + shift)
    rms = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))
    log.info('%s: pointing shift (%.3f, %.3f)", %d matches, rms %.3f"', name, *shift, keep.sum(), rms)
    return AstrometricSolution(name, shift, int(keep.sum()), rms)


def apply_pointing(geometries: list[FrameGeometry], solution: AstrometricSolution) -> list[FrameGeometry]:
    """Move every frame's pointing by the solution's shift (East, North arcsec).

    The shift is measured about the first frame's pointing and applied about each frame's
    own, which for fields a few arcminutes wide differs far less than a pixel.
    """
    east, north = (np.array([value]) for value in solution.shift)
    moved = []
    for geom in geometries:
        ra, dec = from_tangent(east, north, geom.pointing)
        moved.append(replace(geom, pointing=(float(ra[0]), float(dec[0]))))
    return moved
