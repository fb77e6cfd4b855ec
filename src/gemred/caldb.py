"""A local calibration database: processed calibrations and BPMs kept in one SQLite file.

Like DRAGONS' local calibration manager (``~/.dragons/cal_manager.db``), the database
remembers where processed biases, flats, fringes and static BPMs are, with the descriptors
used to match them to science frames, so that a later run in another folder finds and reuses
them. Matching follows the same rules as the dataset table
(:func:`gemred.association.rank_candidates`): equal descriptors per kind, closest in time
within a window, BPMs valid on the date of observation.

Each file is recorded with its size, modification time and SHA-256 checksum. A calibration
whose file vanished or changed since it was added is refused with a message, never used.

Several processes may add calibrations at once (jobs of one run, two runs): every write is
one ``BEGIN IMMEDIATE`` transaction, rows are keyed by a ``UNIQUE`` path and written as
upserts, the journal is in WAL mode and a busy connection waits instead of failing. SQLite's
locking needs a local file system; do not put the database on NFS.

Examples
--------
>>> db = CalibrationDB("cal_manager.db")  # doctest: +SKIP
>>> db.init()  # doctest: +SKIP
>>> db.add(["calibrations/N20170613S0180_bias.fits"])  # doctest: +SKIP
>>> db.find("processed_bias", descriptors("raw/N20170614S0201.fits"))  # doctest: +SKIP
PosixPath('/home/me/calibrations/N20170613S0180_bias.fits')
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gemred.association import MATCH_KEYS, WINDOW_DAYS, rank_candidates
from gemred.descriptors import descriptors as read_descriptors
from gemred.errors import GemredInputError

# pandas only where tables are read: a job storing its calibration skips its import (0.2 s).
if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CalibrationDB",
    "CALDB_ENV",
    "COLUMNS",
    "DEFAULT_PATH",
    "DESCRIPTOR_COLUMNS",
    "KINDS",
    "default_path",
    "kind_of",
    "match_kind",
]

#: Environment variable naming the database file (overrides :data:`DEFAULT_PATH`).
CALDB_ENV = "GEMRED_CALDB"
#: Database used when neither an argument nor :data:`CALDB_ENV` names one (one per user).
DEFAULT_PATH = Path("~/.gemred/cal_manager.db")
#: Kinds of calibration the database holds (DRAGONS' calibration types).
KINDS = ("processed_bias", "processed_flat", "processed_fringe", "bpm")
#: Descriptors recorded for every calibration: every matching key, plus the time.
DESCRIPTOR_COLUMNS = (
    "instrument",
    "detector_name",
    "binning",
    "read_mode",
    "detector_roi_setting",
    "filter_name",
    "ut_datetime",
)
#: Columns of :meth:`CalibrationDB.list`, in order.
COLUMNS = ("path", "kind", *DESCRIPTOR_COLUMNS, "size", "mtime", "sha256", "added")

#: Version of the schema below, kept in ``PRAGMA user_version``.
_SCHEMA_VERSION = 1
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS calibrations (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in KINDS)})),
    {", ".join(f"{name} TEXT" for name in DESCRIPTOR_COLUMNS)},
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT NOT NULL,
    added TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calibrations_kind ON calibrations (kind, instrument);
"""
#: Seconds a connection waits for another process's write to finish.
_BUSY_TIMEOUT = 60.0
#: Tags of a file (:func:`gemred.descriptors.tags`) that give its kind, most specific first.
_KIND_TAGS = (
    ("BPM", "bpm"),
    ("PROCESSED_FRINGE", "processed_fringe"),
    ("PROCESSED_FLAT", "processed_flat"),
    ("PROCESSED_BIAS", "processed_bias"),
)
_ALIASES = {"processed_bpm": "bpm"}


def default_path() -> Path:
    """The database file used when none is given: ``$GEMRED_CALDB``, else ``~/.gemred/cal_manager.db``.

    Returns
    -------
    pathlib.Path
        Absolute path of the database file (which may not exist yet).
    """
    env = os.environ.get(CALDB_ENV, "").strip()
    return Path(env or DEFAULT_PATH).expanduser().absolute()


def kind_of(desc: Mapping) -> str | None:
    """Kind of calibration a file is, from its descriptors' tags.

    Parameters
    ----------
    desc : mapping
        Descriptors of the file (:func:`gemred.descriptors.descriptors`).

    Returns
    -------
    str or None
        One of :data:`KINDS`, or None if the file is no processed calibration or BPM.
    """
    file_tags = desc.get("tags") or frozenset()
    return next((kind for tag, kind in _KIND_TAGS if tag in file_tags), None)


def match_kind(kind: str, instrument: str | None) -> str:
    """The matching rules (a key of :data:`gemred.association.MATCH_KEYS`) of a kind.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    instrument : str or None
        Instrument of the frame that needs the calibration: GSAOI flats are lamp flats,
        GMOS flats twilight flats.

    Returns
    -------
    str
        ``bias``, ``twilight_flat``, ``lamp_flat``, ``fringe`` or ``bpm``.
    """
    if kind == "processed_flat":
        return "lamp_flat" if instrument == "GSAOI" else "twilight_flat"
    return {"processed_bias": "bias", "processed_fringe": "fringe", "bpm": "bpm"}[kind]


class CalibrationDB:
    """A calibration database in one SQLite file.

    Parameters
    ----------
    path : path-like, optional
        The database file; by default :func:`default_path` (``$GEMRED_CALDB`` or
        ``~/.gemred/cal_manager.db``). It is created, with its folder, by :meth:`init` or
        the first :meth:`add`.

    Examples
    --------
    >>> db = CalibrationDB(tmp / "cal_manager.db")  # doctest: +SKIP
    >>> db.add(["N20170613S0180_bias.fits", "N20170702S0178_flat.fits"])  # doctest: +SKIP
    >>> db.list()[["kind", "filter_name", "path"]]  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = default_path() if path is None else Path(path).expanduser().absolute()

    def __repr__(self) -> str:
        return f"CalibrationDB({os.fspath(self.path)!r})"

    # --- writing --------------------------------------------------------------------------

    def init(self, *, wipe: bool = False) -> Path:
        """Create the database file and its tables; harmless when they exist.

        Parameters
        ----------
        wipe : bool, optional
            Forget every calibration recorded (the files themselves are not touched).

        Returns
        -------
        pathlib.Path
            The database file.
        """
        with self._transaction(create=True) as con:
            if wipe:
                con.execute("DROP TABLE IF EXISTS calibrations")
                _create_tables(con)
        return self.path

    def add(self, paths: Iterable[str | os.PathLike], *, kind: str | None = None) -> list[Path]:
        """Record processed calibrations or BPMs; a file already recorded is updated.

        Parameters
        ----------
        paths : iterable of path-like
            Processed calibrations (``PROCBIAS``, ``PROCFLAT`` or ``PROCFRNG`` in the primary
            header) or static BPMs (``OBSTYPE='BPM'``).
        kind : str, optional
            One of :data:`KINDS`, for files whose headers do not say; it must agree with
            the headers when they do.

        Returns
        -------
        list of pathlib.Path
            The absolute paths recorded.

        Raises
        ------
        GemredInputError
            If a file is missing, unreadable, not Gemini data, or not a calibration; nothing
            is recorded then.
        """
        if kind is not None:
            kind = _check_kind(kind)
        rows = [self._row(Path(p), kind) for p in paths]
        columns = ("path", "kind", *DESCRIPTOR_COLUMNS, "size", "mtime", "sha256", "added")
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        sql = (
            f"INSERT INTO calibrations ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT (path) DO UPDATE SET {updates}"
        )
        with self._transaction(create=True) as con:
            con.executemany(sql, [tuple(row[c] for c in columns) for row in rows])
        return [Path(row["path"]) for row in rows]

    def remove(self, paths: Iterable[str | os.PathLike]) -> list[Path]:
        """Forget calibrations (the files themselves are not touched).

        Parameters
        ----------
        paths : iterable of path-like
            Files recorded in the database, whether or not they still exist.

        Returns
        -------
        list of pathlib.Path
            The absolute paths that were recorded and are now forgotten; paths that were not
            recorded are left out.
        """
        wanted = [_absolute(p) for p in paths]
        if not self.path.exists():
            return []
        removed: list[Path] = []
        with self._transaction() as con:
            for path in wanted:
                if con.execute("DELETE FROM calibrations WHERE path = ?", (os.fspath(path),)).rowcount:
                    removed.append(path)
        return removed

    # --- reading --------------------------------------------------------------------------

    def list(self) -> pd.DataFrame:
        """Every calibration recorded, by kind and time.

        Returns
        -------
        pandas.DataFrame
            One row per file, columns :data:`COLUMNS`; empty when the database does not exist.
        """
        import pandas as pd

        if not self.path.exists():
            return pd.DataFrame(columns=list(COLUMNS))
        with self._connection() as con:
            cursor = con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM calibrations ORDER BY kind, ut_datetime, path"
            )
            return pd.DataFrame(cursor.fetchall(), columns=list(COLUMNS))

    def find(
        self,
        kind: str,
        descriptors: Mapping,
        *,
        window_days: float | None = None,
        required: bool = True,
    ) -> Path | None:
        """The calibration of a kind that serves a frame: matching, closest in time, unchanged.

        Parameters
        ----------
        kind : str
            One of :data:`KINDS` (``processed_bpm`` is taken for ``bpm``).
        descriptors : mapping
            Descriptors of the frame that needs it (:func:`gemred.descriptors.descriptors`
            or a row of the dataset table): the keys of
            :data:`gemred.association.MATCH_KEYS` for that kind, and ``ut_datetime``.
        window_days : float, optional
            Override the default time window (:data:`gemred.association.WINDOW_DAYS`).
        required : bool, optional
            When False, return None instead of raising when nothing matches.

        Returns
        -------
        pathlib.Path or None
            The calibration file; None only when ``required`` is False and nothing matches.

        Raises
        ------
        GemredInputError
            When nothing matches (the message names what was needed and why each candidate
            was refused), or when the best match vanished or changed since it was added
            (the message names the file and says to add it again or remove it).
        """
        kind = _check_kind(kind)
        rules = match_kind(kind, descriptors.get("instrument"))
        window = WINDOW_DAYS[rules] if window_days is None else window_days
        table = self.list()
        rows = _nearest_first(table[table["kind"] == kind], descriptors.get("ut_datetime"))
        candidates = [(row["path"], row) for _, row in rows.iterrows()]
        accepted, refused = rank_candidates(rules, descriptors, candidates, window_days=window)
        if accepted:
            best = rows[rows["path"] == accepted[0]].iloc[0]
            _verify(best, self.path)
            return Path(best["path"])
        if not required:
            return None
        needs = ", ".join(f"{k}={descriptors.get(k)!r}" for k in MATCH_KEYS[rules])
        frame = descriptors.get("filename") or "the frame"
        msg = (
            f"no {kind.replace('_', ' ')} in the calibration database {self.path} for {frame} "
            f"(needs {needs}"
            + (f", within {window:g} days of {descriptors.get('ut_datetime')}" if window else "")
            + "); "
            + (
                "candidates refused: " + "; ".join(refused[:5]) + (" ..." if len(refused) > 5 else "")
                if refused
                else f"it holds no {kind.replace('_', ' ')}"
                + ("" if self.path.exists() else " (the file does not exist)")
            )
            + ". Add a matching calibration with 'gemred caldb add FILE'."
        )
        raise GemredInputError(msg)

    # --- helpers --------------------------------------------------------------------------

    def _row(self, path: Path, kind: str | None) -> dict:
        """What the database records about one file."""
        desc = read_descriptors(path)
        found = kind_of(desc)
        if found is None and kind is None:
            msg = (
                f"{path}: not a processed calibration or BPM (no PROCBIAS, PROCFLAT or PROCFRNG "
                "keyword, OBSTYPE is not 'BPM'); only processed calibrations go in the database"
            )
            raise GemredInputError(msg)
        if found is not None and kind is not None and found != kind:
            msg = f"{path}: its headers make it a {found}, not a {kind}"
            raise GemredInputError(msg)
        path = _absolute(path)
        stat = path.stat()
        return {
            "path": os.fspath(path),
            "kind": found or kind,
            **{name: _text(desc.get(name)) for name in DESCRIPTOR_COLUMNS},
            "size": stat.st_size,
            "mtime": stat.st_mtime,
            "sha256": _sha256(path),
            "added": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    @contextlib.contextmanager
    def _connection(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        """An open connection in autocommit mode (transactions are explicit), with the schema."""
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            msg = f"no calibration database at {self.path}; create it with 'gemred caldb init'"
            raise GemredInputError(msg)
        try:
            con = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            msg = f"{self.path}: cannot open the calibration database ({exc})"
            raise GemredInputError(msg) from None
        try:
            con.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT * 1000)}")
            _retry_when_locked(lambda: self._prepare(con))
            yield con
        except sqlite3.DatabaseError as exc:
            msg = f"{self.path}: calibration database error ({exc}); 'gemred caldb init --wipe' starts over"
            raise GemredInputError(msg) from None
        finally:
            con.close()

    @contextlib.contextmanager
    def _transaction(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` (the write lock taken at once): all or nothing."""
        with self._connection(create=create) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _prepare(self, con: sqlite3.Connection) -> None:
        """Switch to WAL, check the schema version, create the tables if needed."""
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode = WAL")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == _SCHEMA_VERSION:
            return
        if version > _SCHEMA_VERSION:
            msg = (
                f"{self.path}: calibration database of a newer gemred (schema {version}); "
                "upgrade gemred or use another database"
            )
            raise GemredInputError(msg)
        con.execute("BEGIN IMMEDIATE")
        try:
            _create_tables(con)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def _nearest_first(rows: pd.DataFrame, when: object) -> pd.DataFrame:
    """Rows sorted by their time difference to ``when`` (so refusals list the nearest first)."""
    import pandas as pd

    moment = pd.to_datetime(when, errors="coerce")
    if pd.isna(moment):
        return rows
    gap = (pd.to_datetime(rows["ut_datetime"], errors="coerce") - moment.tz_localize(None)).abs()
    order = gap.sort_values(kind="stable", na_position="last").index
    return rows.loc[order]


def _retry_when_locked(action, *, deadline: float = _BUSY_TIMEOUT) -> None:
    """Run ``action``, retrying while SQLite reports the database locked.

    Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, when several processes try it together.
    """
    start = time.monotonic()
    wait = 0.01
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() - start > deadline:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 0.5)


def _create_tables(con: sqlite3.Connection) -> None:
    """Create the tables and index (inside the caller's transaction) and set the version."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            con.execute(statement)
    con.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


def _check_kind(kind: str) -> str:
    kind = _ALIASES.get(kind, kind)
    if kind not in KINDS:
        msg = f"unknown kind of calibration {kind!r}; use one of {', '.join(KINDS)}"
        raise GemredInputError(msg)
    return kind


def _absolute(path: str | os.PathLike) -> Path:
    """Absolute path with symbolic links resolved (the key of a row)."""
    return Path(path).expanduser().resolve()


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(row: Mapping, db_path: Path) -> None:
    """Refuse a recorded calibration whose file vanished or changed since it was added."""
    path = Path(row["path"])
    fix = (
        f"add it again ('gemred caldb --db {db_path} add {path}') if the new file is right, "
        f"or forget it ('gemred caldb --db {db_path} remove {path}')"
    )
    if not path.is_file():
        msg = f"calibration {path} is in the database but the file is gone; restore it or {fix}"
        raise GemredInputError(msg)
    if path.stat().st_size != row["size"] or _sha256(path) != row["sha256"]:
        msg = f"calibration {path} changed since it was added to the database (checksum differs); {fix}"
        raise GemredInputError(msg)
