"""Which frames are sky and which skies go with each object frame (DRAGONS' GSAOI sky logic).

Pure logic on frame descriptors (rows of the dataset table from :func:`gemred.table.read_table`,
as a :class:`pandas.DataFrame` or a list of dicts); no pixel is read. It follows DRAGONS'
``separateSky`` and ``associateSky`` (``shared/reference/reduction-steps.md`` section 4.2,
steps 3 and 5).

Pointings
---------
A frame's pointing is a position in arcseconds on a local tangent plane: its base RA/Dec
projected about the first frame's base position, plus its telescope offsets
(``telescope_x_offset``, ``telescope_y_offset``). Distances between frames that share a base
position are therefore exact whatever the position angle; when bases differ as well the
offsets are taken as aligned with RA/Dec (a small approximation for the few-arcminute
offsets of a sky sequence). Missing offsets count as zero.

Overlap rule
------------
Two pointings see the same field when they differ by less than ``frac_fov`` times the field
of view along both axes (GSAOI: a square field of 85"), i.e. when their fields overlap by
more than ``1 - frac_fov`` of the field in each direction. This is DRAGONS' ``frac_FOV``
meaning (the field of view scaled by ``frac_FOV``); ``frac_fov`` below 1 keeps pointings
that barely touch apart. Groups are the connected sets of this relation (single linkage), so
a long dither pattern stays one group even when its ends do not overlap.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gemred.errors import GemredInputError

__all__ = [
    "CONFIG_KEYS",
    "GSAOI_FIELD_OF_VIEW",
    "frame_positions",
    "group_pointings",
    "linked_groups",
    "separate_sky",
    "associate_sky",
    "drift_tracers",
]

#: Descriptors that must be equal between an object frame and its skies.
CONFIG_KEYS = ("filter_name", "exposure_time", "read_mode", "detector_roi_setting", "coadds")
#: Side of GSAOI's square field of view, in arcseconds.
GSAOI_FIELD_OF_VIEW = 85.0

Frames = pd.DataFrame | Sequence[Mapping[str, Any]]


def frame_positions(frames: Frames) -> np.ndarray:
    """Pointing of each frame in arcseconds on a common tangent plane.

    Parameters
    ----------
    frames : pandas.DataFrame or sequence of mappings
        Frame descriptors with ``ra``, ``dec`` (degrees; may be missing) and
        ``telescope_x_offset``, ``telescope_y_offset`` (arcseconds; may be missing).

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``: east and north offsets of each pointing from the first frame's base
        position, in arcseconds (see the module notes).
    """
    table = _as_table(frames)
    n = len(table)
    ra = _column(table, "ra", n)
    dec = _column(table, "dec", n)
    xoff = np.nan_to_num(_column(table, "telescope_x_offset", n))
    yoff = np.nan_to_num(_column(table, "telescope_y_offset", n))
    good = np.isfinite(ra) & np.isfinite(dec)
    if good.any():
        ra0, dec0 = ra[good][0], dec[good][0]
        dra = (ra - ra0 + 180.0) % 360.0 - 180.0
        east = np.where(good, dra * math.cos(math.radians(dec0)) * 3600.0, 0.0)
        north = np.where(good, (dec - dec0) * 3600.0, 0.0)
    else:
        east = north = np.zeros(n)
    return np.column_stack([east + xoff, north + yoff])


def group_pointings(
    frames: Frames, *, frac_fov: float = 0.9, field_of_view_arcsec: float = GSAOI_FIELD_OF_VIEW
) -> list[list[int]]:
    """Group frames whose pointings see the same field.

    Parameters
    ----------
    frames : pandas.DataFrame or sequence of mappings
        Frame descriptors (see :func:`frame_positions`).
    frac_fov : float, optional
        Fraction of the field of view within which two pointings are the same field.
    field_of_view_arcsec : float, optional
        Side of the (square) field of view, in arcseconds.

    Returns
    -------
    list of list of int
        Row positions of each group, in order of each group's first frame; the members of a
        group are in input order.

    Raises
    ------
    ValueError
        If ``frac_fov`` or ``field_of_view_arcsec`` is not positive.
    """
    if not frac_fov > 0 or not field_of_view_arcsec > 0:
        msg = f"frac_fov ({frac_fov}) and field_of_view_arcsec ({field_of_view_arcsec}) must be positive"
        raise ValueError(msg)
    pos = frame_positions(frames)
    limit = frac_fov * field_of_view_arcsec
    return linked_groups(np.all(np.abs(pos[:, None, :] - pos[None, :, :]) < limit, axis=2))


def linked_groups(linked: np.ndarray) -> list[list[int]]:
    """Connected sets of a symmetric boolean ``linked[i, j]`` relation (single linkage).

    Parameters
    ----------
    linked : numpy.ndarray
        (n, n) boolean matrix: whether items ``i`` and ``j`` are directly linked.

    Returns
    -------
    list of list of int
        The groups, in order of their first item; the items of a group in increasing order.
    """
    from scipy.sparse.csgraph import connected_components  # lazily: planning imports this module

    if len(linked) == 0:
        return []
    count, labels = connected_components(linked, directed=False)
    groups = [np.flatnonzero(labels == k).tolist() for k in range(count)]
    return sorted(groups, key=lambda group: group[0])


def separate_sky(
    frames: Frames,
    *,
    frac_fov: float = 0.9,
    field_of_view_arcsec: float = GSAOI_FIELD_OF_VIEW,
    ref_obj: Iterable[str] | None = None,
    ref_sky: Iterable[str] | None = None,
) -> tuple[Frames, Frames]:
    """Split science frames into object frames and sky frames, as DRAGONS' ``separateSky``.

    Rules, in order:

    1. Frames are grouped by pointing (:func:`group_pointings`).
    2. One group (a dither-only sequence): every frame is both an object and a sky frame.
    3. Several groups: unguided frames (``sky_candidate`` True) are sky; a group made only of
       unguided frames is a sky group. The other groups are ranked by the distance of their
       centre from the target, which is the mean pointing of the guided frames when guided
       and unguided frames are mixed, and the base position (zero offset) otherwise. The
       nearest group is the object group; with more than two groups, the next nearest are
       added until at least half of the frames are objects. Frames of the remaining groups,
       and unguided frames of object groups, are sky frames. When every frame is unguided
       the guiding flag carries no information and is ignored.
    4. ``ref_obj`` / ``ref_sky`` override: named frames become objects / skies only (a frame
       named in both is both). With only one of the two given, every other frame goes to the
       other side; with both given, unnamed frames keep the automatic classification.

    Parameters
    ----------
    frames : pandas.DataFrame or sequence of mappings
        Science frame descriptors: ``filename``, ``ra``, ``dec``, ``telescope_x_offset``,
        ``telescope_y_offset`` and ``sky_candidate`` (missing: guided).
    frac_fov : float, optional
        Overlap fraction for grouping (DRAGONS ``frac_FOV``; see the module notes).
    field_of_view_arcsec : float, optional
        Side of the field of view in arcseconds (GSAOI: 85).
    ref_obj, ref_sky : iterable of str, optional
        File names (full path, base name or root without ``.fits``) forced to be objects or
        skies.

    Returns
    -------
    objects, skies : pandas.DataFrame or list of mappings
        The object frames and the sky frames, in input order, of the same type as ``frames``
        (a frame may be in both).

    Raises
    ------
    gemred.io.GemredInputError
        If ``frames`` is empty, or an override names a frame that is not among ``frames``.

    Examples
    --------
    >>> rows = [{"filename": f"f{i}.fits", "telescope_x_offset": x, "telescope_y_offset": 0.0,
    ...          "sky_candidate": x > 100} for i, x in enumerate([0, 300, 1, 301])]
    >>> objects, skies = separate_sky(rows)
    >>> [r["filename"] for r in objects], [r["filename"] for r in skies]
    (['f0.fits', 'f2.fits'], ['f1.fits', 'f3.fits'])
    """
    table = _as_table(frames)
    n = len(table)
    if n == 0:
        msg = "separate_sky: no frames given"
        raise GemredInputError(msg)
    names = [str(name) for name in table["filename"]]
    is_obj, is_sky = _automatic(table, frac_fov, field_of_view_arcsec)
    forced_obj = _lookup(ref_obj, names, "ref_obj")
    forced_sky = _lookup(ref_sky, names, "ref_sky")
    if forced_obj is not None or forced_sky is not None:
        if forced_sky is None:
            is_obj, is_sky = forced_obj.copy(), ~forced_obj
        elif forced_obj is None:
            is_obj, is_sky = ~forced_sky, forced_sky.copy()
        else:
            named = forced_obj | forced_sky
            is_obj = np.where(named, forced_obj, is_obj)
            is_sky = np.where(named, forced_sky, is_sky)
    return _subset(frames, table, is_obj), _subset(frames, table, is_sky)


def associate_sky(
    objects: Frames,
    skies: Frames,
    *,
    time: float = 900.0,
    min_skies: int = 3,
    max_skies: int | None = None,
    distance: float = 1.0,
) -> dict[str, list[str]]:
    """Choose the sky frames for each object frame, as DRAGONS' GSAOI ``associateSky``.

    Candidates for an object frame are the sky frames with the same configuration
    (:data:`CONFIG_KEYS`: filter, exposure time, read mode, ROI, coadds) whose pointing is
    more than ``distance`` arcseconds from the object's, never the object itself. They are
    sorted by absolute time difference (then by file name); those within ``time`` seconds are
    used, but at least ``min_skies`` (the time limit is ignored as needed, and fewer are
    used if fewer exist), and at most ``max_skies``.

    Parameters
    ----------
    objects, skies : pandas.DataFrame or sequence of mappings
        Frame descriptors with ``filename``, ``ut_datetime`` (ISO string or datetime), the
        :data:`CONFIG_KEYS` and the pointing columns (see :func:`frame_positions`); the two
        may share frames. Pointings of both are measured on one tangent plane.
    time : float, optional
        Largest time difference, in seconds, of the skies used when there are enough.
    min_skies : int, optional
        Smallest number of skies to use when that many candidates exist.
    max_skies : int, optional
        Largest number of skies to use (None: no limit).
    distance : float, optional
        Smallest separation, in arcseconds, between an object's pointing and its skies'.

    Returns
    -------
    dict of str to list of str
        For each object file name, in input order, its sky file names, nearest in time first.

    Raises
    ------
    gemred.io.GemredInputError
        Naming the object frame, if it has no sky candidate; or if a frame lacks a
        ``ut_datetime``.
    ValueError
        If ``min_skies`` is below 1 or ``max_skies`` below ``min_skies``.
    """
    if min_skies < 1:
        msg = f"min_skies must be at least 1, got {min_skies}"
        raise ValueError(msg)
    if max_skies is not None and max_skies < min_skies:
        msg = f"max_skies ({max_skies}) must not be below min_skies ({min_skies})"
        raise ValueError(msg)
    obj = _as_table(objects)
    sky = _as_table(skies)
    both = pd.concat([obj, sky], ignore_index=True)
    pos = frame_positions(both)
    obj_pos, sky_pos = pos[: len(obj)], pos[len(obj) :]
    obj_time = _times(obj)
    sky_time = _times(sky)
    sky_names = [str(name) for name in sky["filename"]]
    sky_config = [_config(sky, j) for j in range(len(sky))]
    result: dict[str, list[str]] = {}
    for i, name in enumerate(str(name) for name in obj["filename"]):
        config = _config(obj, i)
        sep = np.hypot(*(sky_pos - obj_pos[i]).T)
        candidates = [
            j
            for j in range(len(sky))
            if sky_names[j] != name and sky_config[j] == config and sep[j] > distance
        ]
        if not candidates:
            described = ", ".join(f"{key}={value!r}" for key, value in zip(CONFIG_KEYS, config, strict=True))
            msg = (
                f"{name}: no sky frame for this object frame: none of the {len(sky)} sky frame(s) has "
                f'the same configuration ({described}) and a pointing more than {distance}" away; '
                "add sky frames or name them with ref_sky"
            )
            raise GemredInputError(msg)
        dtime = {j: abs((sky_time[j] - obj_time[i]).total_seconds()) for j in candidates}
        candidates.sort(key=lambda j: (dtime[j], sky_names[j]))
        within = sum(dtime[j] <= time for j in candidates)
        count = max(within, min(min_skies, len(candidates)))
        if max_skies is not None:
            count = min(count, max_skies)
        result[name] = [sky_names[j] for j in candidates[:count]]
    return result


def drift_tracers(
    objects: Frames, skies: Frames, association: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Object frames that carry the sky's drift to an object frame taken outside its skies' span.

    An object frame exposed before the first or after the last of its associated skies gets
    the other object frames of its configuration (:data:`CONFIG_KEYS`) whose mid-exposure
    lies strictly between its first and last sky's: the sky level read at their times, with
    their own levels, tells the level at its time better than an extrapolation
    (:func:`gemred.primitives.sky.make_sky`, ``tracers``). Other frames get none.

    Parameters
    ----------
    objects, skies : pandas.DataFrame or sequence of mappings
        Frame descriptors (``filename``, ``ut_datetime``, ``exposure_time`` and the
        :data:`CONFIG_KEYS`), as given to :func:`associate_sky`.
    association : mapping of str to sequence of str
        Each object file name's sky file names (:func:`associate_sky`).

    Returns
    -------
    dict of str to list of str
        For each object file name of ``association``, its tracer file names in time order.

    Raises
    ------
    gemred.io.GemredInputError
        If a frame lacks a ``ut_datetime``, or an associated name is not among ``skies``.
    """
    obj = _as_table(objects)
    sky = _as_table(skies)
    obj_names = [str(name) for name in obj["filename"]]
    obj_time = dict(zip(obj_names, _mid_times(obj), strict=True))
    obj_config = {name: _config(obj, i) for i, name in enumerate(obj_names)}
    sky_time = dict(zip((str(name) for name in sky["filename"]), _mid_times(sky), strict=True))
    result: dict[str, list[str]] = {}
    for name, sky_names in association.items():
        missing = [s for s in sky_names if s not in sky_time]
        if missing:
            msg = f"{name}: associated sky frame(s) {missing} not among the sky frames given"
            raise GemredInputError(msg)
        span = [sky_time[s] for s in sky_names]
        inside = []
        if span and not min(span) <= obj_time[name] <= max(span):
            first, last = min(span), max(span)
            inside = [
                other
                for other in obj_names
                if other != name and obj_config[other] == obj_config[name] and first < obj_time[other] < last
            ]
        result[name] = sorted(inside, key=lambda other: (obj_time[other], other))
    return result


def _automatic(table: pd.DataFrame, frac_fov: float, fov: float) -> tuple[np.ndarray, np.ndarray]:
    """Automatic object / sky flags (rules 1-3 of :func:`separate_sky`)."""
    n = len(table)
    groups = group_pointings(table, frac_fov=frac_fov, field_of_view_arcsec=fov)
    if len(groups) == 1:
        return np.ones(n, bool), np.ones(n, bool)
    unguided = (
        np.array([bool(v) if pd.notna(v) else False for v in table["sky_candidate"]])
        if "sky_candidate" in table.columns
        else np.zeros(n, bool)
    )
    if unguided.all():
        unguided = np.zeros(n, bool)
    pos = frame_positions(table)
    target = pos[~unguided].mean(axis=0) if unguided.any() else _base_position(table, pos)
    ranked = sorted(
        (g for g in groups if not unguided[g].all()),
        key=lambda g: (float(np.hypot(*(pos[g].mean(axis=0) - target))), g[0]),
    )
    is_obj = np.zeros(n, bool)
    for k, group in enumerate(ranked):
        if k > 0 and (len(groups) == 2 or is_obj.sum() >= n / 2):
            break
        is_obj[group] = True
    is_obj &= ~unguided
    return is_obj, ~is_obj


def _base_position(table: pd.DataFrame, pos: np.ndarray) -> np.ndarray:
    """Pointing of the first frame's base position (its offsets removed)."""
    xoff = np.nan_to_num(_column(table, "telescope_x_offset", len(table)))
    yoff = np.nan_to_num(_column(table, "telescope_y_offset", len(table)))
    return np.array([pos[0, 0] - xoff[0], pos[0, 1] - yoff[0]])


def _lookup(names: Iterable[str] | None, filenames: list[str], what: str) -> np.ndarray | None:
    """Flags of the frames named in an override list, or None if none is given."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    flags = np.zeros(len(filenames), bool)
    keys = [{f, _basename(f), _root(f)} for f in filenames]
    for name in names:
        hits = [i for i, k in enumerate(keys) if str(name) in k]
        if not hits:
            msg = f"{what}: {name} is not one of the {len(filenames)} frames given; check the file name"
            raise GemredInputError(msg)
        flags[hits] = True
    return flags


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _root(path: str) -> str:
    base = _basename(path)
    return base[:-5] if base.lower().endswith(".fits") else base


def _as_table(frames: Frames) -> pd.DataFrame:
    """The frames as a DataFrame with a fresh 0..n-1 index."""
    if isinstance(frames, pd.DataFrame):
        table = frames.reset_index(drop=True)
    else:
        table = pd.DataFrame([dict(row) for row in frames])
    if len(table) and "filename" not in table.columns:
        msg = "frame descriptors need a 'filename' column"
        raise GemredInputError(msg)
    if "filename" not in table.columns:
        table["filename"] = pd.Series(dtype=str)
    return table


def _subset(frames: Frames, table: pd.DataFrame, flags: np.ndarray) -> Frames:
    """Rows of ``frames`` where ``flags`` is set, in the type of ``frames``."""
    if isinstance(frames, pd.DataFrame):
        return frames[np.asarray(flags, bool)]
    return [row for row, keep in zip(frames, flags, strict=True) if keep]


def _column(table: pd.DataFrame, name: str, n: int) -> np.ndarray:
    if name not in table.columns:
        return np.full(n, np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(float)


def _config(table: pd.DataFrame, i: int) -> tuple:
    """The configuration of row ``i``, comparable between frames."""
    values = []
    for key in CONFIG_KEYS:
        value = table[key].iloc[i] if key in table.columns else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = None
        elif key in ("exposure_time", "coadds"):
            value = round(float(value), 6)
        else:
            value = str(value)
        values.append(value)
    return tuple(values)


def _mid_times(table: pd.DataFrame) -> list[dt.datetime]:
    """Middle of every row's exposure: ``ut_datetime`` plus half ``exposure_time`` (0 if unknown)."""
    exptime = np.nan_to_num(_column(table, "exposure_time", len(table)))
    return [
        start + dt.timedelta(seconds=float(t) / 2) for start, t in zip(_times(table), exptime, strict=True)
    ]


def _times(table: pd.DataFrame) -> list[dt.datetime]:
    """``ut_datetime`` of every row, as naive datetimes."""
    out = []
    for name, value in zip(table["filename"], table.get("ut_datetime", [None] * len(table)), strict=True):
        try:
            stamp = pd.Timestamp(value)
        except (TypeError, ValueError):
            stamp = pd.NaT
        if pd.isna(stamp):
            msg = f"{name}: no valid ut_datetime ({value!r}); rebuild the dataset table"
            raise GemredInputError(msg)
        out.append(stamp.tz_localize(None).to_pydatetime() if stamp.tzinfo else stamp.to_pydatetime())
    return out
