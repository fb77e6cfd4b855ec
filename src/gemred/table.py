"""The dataset table: one row per raw file with its role, stacking group and descriptors.

``gemred table RAW_DIR -o dataset.tsv`` writes it; the Snakemake workflow reads it with
:func:`read_table` and never opens a FITS header itself. Roles and groups follow DRAGONS'
tags and stacking-compatibility keys (``shared/reference/reduction-steps.md`` section 6):

========================  ==================================================================
role                      frames
========================  ==================================================================
``bias``                  GMOS ``BIAS``
``twilight_flat``         GMOS ``TWILIGHT`` imaging flats
``lamp_on_flat``          GSAOI dome flats with the lamp on (``LAMPON``)
``lamp_off_flat``         GSAOI dome flats with the lamp off (``LAMPOFF``)
``science``               ``OBSTYPE=OBJECT``, ``OBSCLASS=science``, not ``CAL``; for GSAOI this
                          includes the unguided offset-to-sky frames (``sky_candidate`` True),
                          which the reduction's sky separation tells apart
``standard``              imaging photometric standards: ``OBSTYPE=OBJECT``, ``partnerCal``
``bpm``                   processed static bad-pixel masks (``BPM`` tag)
``ignore``                anything else: acquisitions, darks, processed files, spectroscopy
========================  ==================================================================

A group is named after the root (file name without ``.fits``) of its first frame in time;
biases and twilight flats are split where consecutive frames are more than 3 days apart, lamp
flats where they are more than 1 day apart.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from gemred.descriptors import descriptors
from gemred.errors import GemredInputError

__all__ = ["ROLES", "TABLE_COLUMNS", "build_table", "write_table", "read_table"]

#: Every role a row may have.
ROLES = ("bias", "twilight_flat", "lamp_on_flat", "lamp_off_flat", "science", "standard", "bpm", "ignore")

#: Descriptor columns, after ``filename``, ``role``, ``group`` and ``sky_candidate``.
_DESCRIPTOR_COLUMNS = (
    "instrument",
    "observation_type",
    "observation_class",
    "object",
    "tags",
    "filter_name",
    "exposure_time",
    "binning",
    "read_mode",
    "gain_setting",
    "detector_roi_setting",
    "ut_datetime",
    "ra",
    "dec",
    "telescope_x_offset",
    "telescope_y_offset",
    "data_label",
    "observation_id",
    "detector_name",
    "coadds",
)
_FLOAT_COLUMNS = ("exposure_time", "ra", "dec", "telescope_x_offset", "telescope_y_offset")
_TEXT_COLUMNS = tuple(c for c in _DESCRIPTOR_COLUMNS if c not in (*_FLOAT_COLUMNS, "coadds"))

#: Columns of the table, in file order.
TABLE_COLUMNS: tuple[str, ...] = ("filename", "role", "group", "sky_candidate", *_DESCRIPTOR_COLUMNS)

_FITS_SUFFIXES = (".fits", ".fit")
_BIAS_KEYS = ("instrument", "detector_name", "binning", "read_mode", "gain_setting", "detector_roi_setting")
_SCIENCE_KEYS = {
    "GMOS": ("instrument", "observation_id", "filter_name", "binning", "read_mode", "detector_roi_setting"),
    "GSAOI": (
        "instrument", "observation_id", "filter_name", "exposure_time", "read_mode", "detector_roi_setting",
    ),
}
_STANDARD_KEYS = ("instrument", "object", "filter_name", "observation_id")
#: Longest time between consecutive frames of one group, per group family (others: no limit).
_MAX_GAPS = {
    "bias": dt.timedelta(days=3),
    "twilight_flat": dt.timedelta(days=3),
    "lamp_flat": dt.timedelta(days=1),
}


def build_table(raw: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Classify raw files into roles and stacking groups.

    Parameters
    ----------
    raw : path-like or iterable of path-like
        A folder of raw files (its ``*.fits`` files are used; other files and sub-folders,
        such as a README or ``truth/``, are skipped), or FITS files and folders.

    Returns
    -------
    pandas.DataFrame
        One row per FITS file with the columns of :data:`TABLE_COLUMNS`; ``filename`` is the
        path as given (folder path joined with the file name). Missing text values are ``''``,
        missing numbers NaN.

    Raises
    ------
    gemred.io.GemredInputError
        If an input is missing, a folder holds no FITS file, two inputs share a root name,
        or a FITS file is corrupt, truncated, not Gemini data or not GMOS/GSAOI.
    """
    files = _input_files(raw)
    roots: dict[str, str] = {}
    for path in files:
        root = _root(path)
        if root in roots:
            msg = f"{path}: same file name as {roots[root]}; output names would collide, keep only one"
            raise GemredInputError(msg)
        roots[root] = path
    rows = []
    for path in files:
        values = descriptors(path)
        row = {name: values.get(name) for name in TABLE_COLUMNS}
        row["filename"] = path
        row["role"] = _role(values)
        row["sky_candidate"] = "SKY" in values["tags"]
        row["tags"] = ",".join(sorted(values["tags"]))
        rows.append(row)
    table = _normalise(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    table["group"] = _groups(table)
    return table


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the dataset table as tab-separated text, atomically.

    File names are stored relative to the table's folder, so that a project folder holding
    both can be moved; :func:`read_table` resolves them again.

    Parameters
    ----------
    table : pandas.DataFrame
        A table from :func:`build_table` (extra columns are kept after the standard ones).
    path : path-like
        Destination ``.tsv``; its folder is created if needed.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    out = table[[*TABLE_COLUMNS, *(c for c in table.columns if c not in TABLE_COLUMNS)]].copy()
    out["filename"] = [_relative(name, folder) for name in out["filename"]]
    from gemred.io import atomic_output  # astropy: not loaded to read a table

    with atomic_output(path) as tmp:
        out.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
    return path


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a dataset table written by :func:`write_table`.

    Parameters
    ----------
    path : path-like
        The ``.tsv`` file.

    Returns
    -------
    pandas.DataFrame
        The table with typed columns and ``filename`` resolved to absolute paths.

    Raises
    ------
    gemred.io.GemredInputError
        With one line naming the table, the faulty row's file and the fix, if the table is
        missing or unreadable, lacks a column, lists a file twice, lists a file that does
        not exist, has an unknown role, a role without a group, or a malformed value.
    """
    path = Path(path)
    remake = f"run `gemred table RAW_DIR -o {path}` again"
    if not path.is_file():
        msg = f"{path}: dataset table not found; create it with `gemred table RAW_DIR -o {path}`"
        raise GemredInputError(msg)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except ValueError as exc:  # includes pandas' parser errors and undecodable bytes
        msg = f"{path}: not a readable dataset table ({exc}); {remake}"
        raise GemredInputError(msg) from None
    missing = [column for column in TABLE_COLUMNS if column not in table.columns]
    if missing:
        msg = f"{path}: column(s) {', '.join(missing)} missing; {remake}"
        raise GemredInputError(msg)
    folder = path.parent.resolve()
    fix = f"{remake} or remove the row"
    seen: dict[str, int] = {}
    resolved = []
    rows = zip(table["filename"], table["role"], table["group"], strict=True)
    for line, (name, role, group) in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path}: line {line}, {name or '(no file name)'}"
        file = os.path.normpath(folder / name) if name else ""
        if not name or not os.path.isfile(file):
            msg = f"{where}: file not found; {fix}"
            raise GemredInputError(msg)
        if file in seen:
            msg = f"{where}: file already listed on line {seen[file]}; {fix}"
            raise GemredInputError(msg)
        seen[file] = line
        if role not in ROLES:
            msg = f"{where}: unknown role {role!r} (expected one of {', '.join(ROLES)}); {fix}"
            raise GemredInputError(msg)
        if role != "ignore" and not group:
            msg = f"{where}: role {role} needs a group; {fix}"
            raise GemredInputError(msg)
        resolved.append(file)
    table["filename"] = resolved
    return _normalise(table, source=path, fix=fix)


def _input_files(raw: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """The FITS files named by ``raw``: folders expanded (sorted, not recursive)."""
    items = [raw] if isinstance(raw, str | os.PathLike) else list(raw)
    files: list[str] = []
    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            found = sorted(
                entry.name
                for entry in os.scandir(text)
                if entry.is_file() and not entry.name.startswith(".") and _is_fits_name(entry.name)
            )
            if not found:
                msg = f"{text}: no FITS files (*.fits) in this folder; check the path"
                raise GemredInputError(msg)
            files.extend(os.path.join(text, name) for name in found)
        elif os.path.isfile(text):
            files.append(text)
        else:
            msg = f"{text}: file or folder not found"
            raise GemredInputError(msg)
    if not files:
        msg = "no input files given"
        raise GemredInputError(msg)
    return files


def _is_fits_name(name: str) -> bool:
    return name.lower().endswith(_FITS_SUFFIXES)


def _root(path: str) -> str:
    """File name without directory and FITS suffix: the DRAGONS output root."""
    name = os.path.basename(path)
    for suffix in _FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _role(values: dict) -> str:
    """Role of one file from its tags and descriptors (see the module docstring)."""
    tags = values["tags"]
    if "BPM" in tags:
        return "bpm"
    if "RAW" not in tags or "PROCESSED" in tags or "ACQUISITION" in tags:
        return "ignore"
    if "BIAS" in tags:
        return "bias"
    if "IMAGE" not in tags:
        return "ignore"
    if "GMOS" in tags and "TWILIGHT" in tags:
        return "twilight_flat"
    if "GSAOI" in tags and "LAMPON" in tags:
        return "lamp_on_flat"
    if "GSAOI" in tags and "LAMPOFF" in tags:
        return "lamp_off_flat"
    if "CAL" in tags or values["observation_type"] != "OBJECT":
        return "ignore"
    return {"science": "science", "partnerCal": "standard"}.get(values["observation_class"] or "", "ignore")


def _groups(table: pd.DataFrame) -> list[str]:
    """Stacking group of every row, named after the root of the group's first frame in time."""
    groups = [""] * len(table)
    order = sorted(range(len(table)), key=lambda i: (table["ut_datetime"].iat[i], table["filename"].iat[i]))
    families: dict[tuple, list[int]] = {}
    for i in order:
        row = table.iloc[i]
        key = _group_key(row)
        if key is not None:
            families.setdefault(key, []).append(i)
    for (family, *_), members in families.items():
        max_gap = _MAX_GAPS.get(family)
        runs: list[list[int]] = []
        previous = None
        for i in members:
            when = _time(table["ut_datetime"].iat[i])
            split = max_gap is not None and None not in (when, previous) and when - previous > max_gap
            if not runs or split:
                runs.append([])
            runs[-1].append(i)
            previous = when if when is not None else previous
        for run in runs:
            lamp_on = [i for i in run if table["role"].iat[i] == "lamp_on_flat"]
            name = _root(table["filename"].iat[(lamp_on or run)[0]])
            for i in run:
                groups[i] = name
    return groups


def _group_key(row: pd.Series) -> tuple | None:
    """Rows with equal keys may be stacked together; None for rows that are never stacked."""
    role = row["role"]
    if role == "ignore":
        return None
    if role == "bpm":
        return ("bpm", row["filename"])
    if role == "bias":
        keys = _BIAS_KEYS
    elif role == "twilight_flat":
        keys = (*_BIAS_KEYS, "filter_name")
    elif role in ("lamp_on_flat", "lamp_off_flat"):
        role, keys = "lamp_flat", ("instrument", "filter_name")
    elif role == "science":
        keys = _SCIENCE_KEYS["GSAOI" if row["instrument"] == "GSAOI" else "GMOS"]
    else:
        keys = _STANDARD_KEYS
    return (role, *(None if pd.isna(row[key]) else row[key] for key in keys))


def _time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _relative(name: str, folder: Path) -> str:
    """``name`` relative to ``folder`` when it can be (always on POSIX), else absolute.

    The file's folder is resolved like ``folder`` (symbolic links followed), its name is not.
    """
    absolute = os.path.join(Path(name).parent.resolve(), os.path.basename(name))
    try:
        return os.path.relpath(absolute, folder)
    except ValueError:  # another drive on Windows
        return absolute


def _normalise(table: pd.DataFrame, source: Path | None = None, fix: str = "") -> pd.DataFrame:
    """Give every standard column its type: text ('' if missing), float (NaN), int, bool.

    ``source`` and ``fix`` are given when the values come from a table file, so that a
    malformed value is reported with its line.
    """
    table = table.copy()
    text = ["filename", "role", "group", *_TEXT_COLUMNS]
    for column in text:
        table[column] = [("" if value is None or pd.isna(value) else str(value)) for value in table[column]]
    converters: dict[str, tuple[Callable[[object], object], str]] = {
        **{column: (_to_float, "a number") for column in _FLOAT_COLUMNS},
        "coadds": (_to_int, "a whole number"),
        "sky_candidate": (_to_bool, "True or False"),
    }
    for column, (convert, expected) in converters.items():
        values = []
        for line, value in enumerate(table[column], start=2):
            try:
                values.append(convert(value))
            except (TypeError, ValueError):
                if source is None:
                    raise
                msg = (
                    f"{source}: line {line}, {table['filename'].iat[line - 2]}: {column} is {value!r}, "
                    f"not {expected}; {fix}"
                )
                raise GemredInputError(msg) from None
        table[column] = values
    types = {"coadds": "int64", "sky_candidate": bool, **dict.fromkeys(_FLOAT_COLUMNS, "float64")}
    return table.astype(types)


def _to_float(value: object) -> float:
    if value is None or value == "":
        return float("nan")
    return float(value)


def _to_int(value: object) -> int:
    number = float(value)
    if not number.is_integer():
        msg = f"{value!r} is not a whole number"
        raise ValueError(msg)
    return int(number)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    mapping = {"true": True, "false": False}
    key = str(value).strip().lower()
    if key not in mapping:
        msg = f"{value!r} is not True or False"
        raise ValueError(msg)
    return mapping[key]
