"""Provenance of a product: which gemred code made it, from which files, with which parameters.

Snakemake reruns a ``script:`` rule when the script changes, but not when a library module the
script imports changes. Every rule of the workflow therefore takes :func:`software_version` as a
``param``: edit any ``gemred/*.py`` file and the param changes, so Snakemake reruns what the new
code touches (``--rerun-triggers params``, on by default).

Every workflow job runs inside :func:`job` (``logutils.run_job`` opens it), and
:func:`~gemred.io.write_frame` asks :func:`annotate` to record, like DRAGONS does:

- in the primary header: ``GEMRED`` (:func:`software_version`), ``GEMRCOMM`` (the git commit of
  the source, ``-dirty`` if it has uncommitted changes), ``GEMRRULE`` (the rule) and
  ``GEMRPARS`` (the rule's parameters as JSON);
- a ``PROVENANCE`` table: every file that went into the product, directly or through the
  products it was made from, with its MD5 checksum and the rule that used it, back to raw files;
- a ``PROVHISTORY`` table: one row per job along that chain, with its start and end times, the
  primitives it applied (from the time stamps they leave in the primary header), its parameters
  and the software version and commit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from gemred import __version__

if TYPE_CHECKING:
    from astropy.io import fits
    from astropy.table import Table

__all__ = [
    "source_hash",
    "software_version",
    "source_commit",
    "file_md5",
    "store_md5",
    "MD5_XATTR",
    "JobRecord",
    "job",
    "current_job",
    "annotate",
    "PROVENANCE_COLUMNS",
    "PROVHISTORY_COLUMNS",
]

#: Extended attribute in which :func:`store_md5` keeps a product's checksum.
MD5_XATTR = "user.gemred.md5"
#: Checksums computed or read in this process, by (path, size:mtime).
_MD5_SEEN: dict[tuple[str, str], str] = {}

_PACKAGE_DIR = Path(__file__).resolve().parent
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_STAMP_PREFIXES = ("UT time stamp for ", "UT time stamp: ")

PROVENANCE_COLUMNS = ("timestamp", "filename", "md5", "rule")
PROVHISTORY_COLUMNS = (
    "timestamp_start",
    "timestamp_stop",
    "rule",
    "output",
    "primitives",
    "args",
    "software",
    "commit",
)


def source_hash() -> str:
    """Hash every ``.py`` file of the installed gemred package.

    Returns
    -------
    str
        Hex SHA-256 over the sorted relative paths and contents of the package's Python files
        (``__pycache__`` excluded), so it changes with any code edit, rename, addition or
        removal, and not with file times or the install location.

    Examples
    --------
    >>> len(source_hash())
    64
    """
    return _hash_tree(_PACKAGE_DIR)


def _hash_tree(root: Path) -> str:
    """SHA-256 over the sorted relative paths and contents of the ``.py`` files under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts:
            continue
        digest.update(relative.as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def software_version() -> str:
    """The gemred version with the first 12 digits of :func:`source_hash` as local label.

    Returns
    -------
    str
        For example ``"0.1.0+src.3f2a9c1d0b4e"``; written into product headers and used as a
        Snakemake ``param`` so that changed library code reruns the rules that use it.

    Examples
    --------
    >>> software_version().startswith(__version__.split("+")[0])
    True
    """
    return f"{__version__.split('+')[0]}+src.{source_hash()[:12]}"


@functools.lru_cache(maxsize=1)
def source_commit() -> str:
    """The git commit of the gemred source, ``-dirty`` when the package has uncommitted changes.

    Returns
    -------
    str
        A 40-digit commit hash, possibly with ``-dirty``; ``'unknown'`` when gemred is not
        installed from a git checkout (its source hash in :func:`software_version` still
        identifies the code).
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=_PACKAGE_DIR, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _stamp(path: str | os.PathLike) -> str:
    """Size and modification time of a file: what its stored checksum is valid for."""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _compute_md5(path: str | os.PathLike) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 checksum of a file (the checksum DRAGONS and the Gemini archive record).

    A checksum kept with the file by :func:`store_md5` is used while the file's size and
    modification time are those it was computed for; a checksum computed here is remembered
    for the rest of the process. A workflow job records the checksum of every input in each
    product it writes, so without these a product of 170 MB read by a dozen jobs would be
    read a dozen times more just to be checksummed.
    """
    stamp = _stamp(path)
    key = (os.fspath(path), stamp)
    if key not in _MD5_SEEN:
        try:
            kept = os.getxattr(path, MD5_XATTR).decode("ascii").split()
        except (OSError, AttributeError, UnicodeDecodeError):
            kept = []
        _MD5_SEEN[key] = kept[1] if len(kept) == 2 and kept[0] == stamp else _compute_md5(path)
    return _MD5_SEEN[key]


def store_md5(path: str | os.PathLike) -> None:
    """Compute a file's MD5 checksum and keep it with the file, for :func:`file_md5`.

    It is kept in the extended attribute :data:`MD5_XATTR` with the file's size and
    modification time; where the file system has no user extended attributes nothing is
    kept (and :func:`file_md5` reads the file).
    """
    if not hasattr(os, "setxattr"):  # Python has it on Linux only
        return
    stamp = _stamp(path)
    md5 = _compute_md5(path)
    _MD5_SEEN[(os.fspath(path), stamp)] = md5
    with contextlib.suppress(OSError):
        os.setxattr(path, MD5_XATTR, f"{stamp} {md5}".encode("ascii"))


@dataclass
class JobRecord:
    """What one workflow job is doing: its rule, input files, parameters and start time.

    Parameters
    ----------
    rule : str
        The Snakemake rule.
    inputs : list of str
        Every input file of the job.
    params : dict
        The rule's parameters (JSON-serialisable values).
    start : datetime
        When the job started (UTC).
    """

    rule: str
    inputs: list[str]
    params: dict
    start: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    _checksums: threading.Thread | None = field(default=None, repr=False)

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)

    def checksum_inputs(self) -> None:
        """Start computing the inputs' checksums (:func:`file_md5`) on a background thread.

        Products record them when written; computed meanwhile (hashlib frees the GIL), they
        cost a job no time when it has a core to spare (ten raw GMOS biases take 0.4 s to
        checksum, thirty raw GSAOI flats 2 s). :meth:`input_checksums` waits for them.
        """

        def work() -> None:
            for path in self.inputs:
                with contextlib.suppress(OSError):  # reported when a product asks for it
                    file_md5(path)

        self._checksums = threading.Thread(target=work, name="gemred-input-md5", daemon=True)
        self._checksums.start()

    def input_checksums(self) -> list[str]:
        """The MD5 checksum of every input, in order, once :meth:`checksum_inputs` is done."""
        if self._checksums is not None:
            self._checksums.join()
        return [file_md5(path) for path in self.inputs]


_CURRENT: list[JobRecord] = []


@contextlib.contextmanager
def job(rule: str, *, inputs: Iterable[str | os.PathLike], params: Mapping) -> Iterator[JobRecord]:
    """Record provenance for every product written by :func:`~gemred.io.write_frame` inside.

    Parameters
    ----------
    rule : str
        Name of the step (the Snakemake rule).
    inputs : iterable of path-like
        Every file the step reads.
    params : mapping
        The parameters of the step.

    Examples
    --------
    >>> with job("master_bias", inputs=biases, params={"stack": {}}):  # doctest: +SKIP
    ...     write_frame(make_master_bias(biases), "bias.fits")
    """
    record = JobRecord(rule, [os.fspath(path) for path in inputs], dict(params))
    record.checksum_inputs()
    _CURRENT.append(record)
    try:
        yield record
    finally:
        _CURRENT.remove(record)


def current_job() -> JobRecord | None:
    """The innermost :func:`job` being run, if any."""
    return _CURRENT[-1] if _CURRENT else None


def annotate(phu: fits.Header, tables: Mapping[str, Table], *, output: str) -> dict[str, Table]:
    """Add the current job's provenance to a product's primary header and tables.

    Outside :func:`job` nothing is added and ``tables`` comes back as it is.

    Parameters
    ----------
    phu : astropy.io.fits.Header
        The product's primary header; gets ``GEMRED``, ``GEMRCOMM``, ``GEMRRULE``, ``GEMRPARS``.
    tables : mapping of str to Table
        The product's frame-level tables.
    output : str
        File name of the product.

    Returns
    -------
    dict of str to Table
        ``tables`` with ``PROVENANCE`` and ``PROVHISTORY`` replaced by those of this product:
        its inputs' tables merged, plus this job's inputs and this job.
    """
    from astropy.table import Table, unique, vstack  # loaded with astropy.io.fits by io

    record = current_job()
    if record is None:
        return dict(tables)
    stop = datetime.now(timezone.utc)
    phu["GEMRED"] = (software_version(), "gemred version+source hash")
    phu["GEMRCOMM"] = (source_commit(), "gemred git commit")
    phu["GEMRRULE"] = (record.rule, "workflow rule that made this file")
    phu["GEMRPARS"] = record.params_json()  # long: CONTINUE cards, no room for a comment

    provenance, history = [], []
    for path in record.inputs:
        inherited = _product_tables(path)
        provenance.extend(inherited.get("PROVENANCE", []))
        history.extend(inherited.get("PROVHISTORY", []))
    now = stop.strftime(_TIME_FORMAT)
    own_rows = [
        (now, os.path.basename(path), md5, record.rule)
        for path, md5 in zip(record.inputs, record.input_checksums(), strict=True)
    ]
    provenance.append(Table(rows=own_rows or None, names=PROVENANCE_COLUMNS, dtype=[str] * 4))
    history.append(
        Table(
            rows=[
                (
                    record.start.strftime(_TIME_FORMAT),
                    now,
                    record.rule,
                    os.path.basename(output),
                    ",".join(_primitives_since(phu, record.start)),
                    record.params_json(),
                    software_version(),
                    source_commit(),
                )
            ],
            names=PROVHISTORY_COLUMNS,
            dtype=[str] * len(PROVHISTORY_COLUMNS),
        )
    )
    result = {name: table for name, table in tables.items() if name not in ("PROVENANCE", "PROVHISTORY")}
    result["PROVENANCE"] = unique(vstack(provenance), keys=["filename", "md5", "rule"], keep="first")
    result["PROVHISTORY"] = unique(vstack(history), keys=["rule", "output", "timestamp_start"], keep="first")
    return result


def _product_tables(path: str) -> dict[str, list[Table]]:
    """The PROVENANCE and PROVHISTORY tables of an input that is a gemred product (else none)."""
    from astropy.io import fits
    from astropy.table import Table

    with open(path, "rb") as fh:
        if fh.read(9) != b"SIMPLE  =":
            return {}
    # The tables come with GEMRED in the primary header (see annotate): a raw frame, a BPM or
    # a reference catalogue has none, and looking for them meant reading all its extension
    # headers (0.12 s for ten raw GMOS biases).
    if "GEMRED" not in fits.getheader(path, 0):
        return {}
    found: dict[str, list[Table]] = {}
    with fits.open(path, memmap=True) as hdul:
        for hdu in hdul[1:]:
            if hdu.name in ("PROVENANCE", "PROVHISTORY") and isinstance(hdu, fits.BinTableHDU):
                found[hdu.name] = [Table.read(hdu)]
    return found


def _primitives_since(phu: fits.Header, start: datetime) -> list[str]:
    """Primitives that left their time stamp in ``phu`` since ``start``, in header order.

    Every primitive stamps a keyword with the UT time and its name in the comment (DRAGONS'
    convention); those stamped during this job are the primitives the job applied.
    """
    since = start.replace(microsecond=0, tzinfo=None)
    applied = []
    for card in phu.cards:
        if not isinstance(card.value, str):
            continue
        try:
            when = datetime.strptime(card.value, _TIME_FORMAT)
        except ValueError:
            continue
        if when < since:
            continue
        name = card.comment
        for prefix in _STAMP_PREFIXES:
            name = name.removeprefix(prefix)
        applied.append(name or card.keyword)
    return applied
