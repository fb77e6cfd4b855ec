"""Reading raw Gemini files and writing multi-extension FITS products, atomically.

Every write goes to a temporary file in the destination folder and is renamed into place,
so a reader (or Snakemake after a crash) never sees a half-written product. Every read of
a raw file checks that it is a complete, readable FITS file from a supported Gemini
instrument, and says which file is wrong and why when it is not.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from gemred import provenance
from gemred.errors import GemredInputError
from gemred.frame import Extension, Frame, copy_header

__all__ = [
    "GemredInputError",
    "read_frame",
    "read_catalogues",
    "read_bpm",
    "root_name",
    "write_frame",
    "SUPPORTED_INSTRUMENTS",
    "check_instrument",
    "open_raw",
    "open_fits",
    "read_headers",
    "HeaderCards",
    "write_fits_atomic",
    "atomic_output",
    "processed_hdus",
]

SUPPORTED_INSTRUMENTS = ("GMOS-N", "GMOS-S", "GSAOI")


def check_instrument(path: str | os.PathLike, header: fits.Header) -> None:
    """Check that a primary header comes from a Gemini instrument that gemred reduces.

    Parameters
    ----------
    path : path-like
        The file the header was read from; named in the error message.
    header : astropy.io.fits.Header
        Its primary header.

    Raises
    ------
    GemredInputError
        If ``INSTRUME`` is missing (not Gemini raw data) or names an unsupported instrument.
    """
    instrument = str(header.get("INSTRUME", "")).strip()
    if not instrument:
        msg = f"{path}: not a Gemini raw file (no INSTRUME keyword in the primary header)"
        raise GemredInputError(msg)
    if instrument not in SUPPORTED_INSTRUMENTS:
        msg = (
            f"{path}: instrument {instrument!r} is not supported "
            f"(gemred reduces {', '.join(SUPPORTED_INSTRUMENTS)} imaging); remove it from the selection"
        )
        raise GemredInputError(msg)


class HeaderCards(Mapping):
    """A read-only FITS header that parses a card's value only when it is asked for.

    Reading descriptors of many files needs a few dozen keywords out of the ~1,500 cards of a
    raw GMOS file; building full :class:`astropy.io.fits.Header` objects for all of them is what
    makes header scans slow. Behaves like a header for ``get``, ``[]``, ``in`` and ``keys``;
    :meth:`to_header` gives the full astropy header when it is really needed.
    """

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._cards: dict[str, str] = {}
        self._values: dict[str, object] = {}
        text = raw.decode("ascii", errors="replace")
        cards = [text[i : i + 80] for i in range(0, len(text), 80)]
        for i, card in enumerate(cards):
            key = card[:8].rstrip()
            if key == "END":
                break
            if not key or key in ("COMMENT", "HISTORY", "CONTINUE") or key in self._cards:
                continue
            if card[8:10] != "= ":
                continue
            image = card
            j = i + 1
            while j < len(cards) and cards[j][:8] == "CONTINUE":
                image += cards[j]
                j += 1
            self._cards[key] = image

    def __getitem__(self, key: str) -> object:
        key = key.upper()
        if key not in self._values:
            self._values[key] = fits.Card.fromstring(self._cards[key]).value
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.upper() in self._cards

    def __iter__(self):
        return iter(self._cards)

    def __len__(self) -> int:
        return len(self._cards)

    def to_header(self) -> fits.Header:
        """The full astropy header."""
        return fits.Header.fromstring(self._raw)


def read_headers(path: str | os.PathLike) -> list[HeaderCards]:
    """Read every header of a FITS file without reading its pixels.

    Parameters
    ----------
    path : path-like
        The FITS file.

    Returns
    -------
    list of HeaderCards
        The primary header first, then one per extension; values are parsed on access.

    Raises
    ------
    GemredInputError
        If the file is missing, empty, not FITS, truncated, or its headers are corrupt.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: file not found"
        raise GemredInputError(msg)
    headers: list[HeaderCards] = []
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                msg = f"{path}: file is empty; download it again"
                raise GemredInputError(msg)
            while fh.tell() < size:
                header = _read_header_blocks(fh, path, first=not headers)
                headers.append(header)
                fh.seek(_data_nbytes(header), os.SEEK_CUR)
            if fh.tell() > size:
                msg = (
                    f"{path}: truncated FITS file ({size} bytes, headers announce at least "
                    f"{fh.tell()}); download it again"
                )
                raise GemredInputError(msg)
    except GemredInputError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as exc:
        msg = f"{path}: not a readable FITS file ({exc}); check it is the right file, or download it again"
        raise GemredInputError(msg) from exc
    return headers


def _read_header_blocks(fh, path: Path, *, first: bool) -> HeaderCards:
    """Read 2880-byte blocks up to and including the one holding the END card."""
    blocks = []
    while True:
        block = fh.read(2880)
        if len(block) < 2880:
            msg = f"{path}: truncated FITS header; download it again"
            raise GemredInputError(msg)
        if not blocks and not block.startswith(b"SIMPLE  =" if first else b"XTENSION="):
            card = "SIMPLE" if first else "XTENSION"
            msg = f"{path}: not a readable FITS file (no {card} card where one must be); check the file"
            raise GemredInputError(msg)
        blocks.append(block)
        if any(block[i : i + 8] == b"END     " for i in range(0, 2880, 80)):
            return HeaderCards(b"".join(blocks))


def _data_nbytes(header: Mapping) -> int:
    """Bytes of the data unit following ``header``, padded to 2880 bytes."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    nelem = 1
    for i in range(1, naxis + 1):
        nelem *= int(header[f"NAXIS{i}"])
    nelem = (nelem + int(header.get("PCOUNT", 0))) * int(header.get("GCOUNT", 1))
    nbytes = nelem * abs(int(header["BITPIX"])) // 8
    return -(-nbytes // 2880) * 2880


def open_raw(path: str | os.PathLike, *, memmap: bool = False, scale: bool = True) -> fits.HDUList:
    """Open a raw Gemini GMOS or GSAOI file after checking it is complete and supported.

    Parameters
    ----------
    path : path-like
        A raw multi-extension FITS file.
    memmap : bool
        Memory-map the pixel data (the file is opened read-only either way).
    scale : bool
        Apply ``BSCALE``/``BZERO`` when the data are read (astropy cannot for memory maps).

    Returns
    -------
    astropy.io.fits.HDUList
        The open file; the caller closes it.

    Raises
    ------
    GemredInputError
        If the file is missing, truncated, corrupt, not from GMOS or GSAOI, or has no image
        extensions.
    """
    path = Path(path)
    headers = read_headers(path)
    check_instrument(path, headers[0])
    if len(headers) < 2:
        msg = f"{path}: no image extensions; a raw Gemini file has one per amplifier or array"
        raise GemredInputError(msg)
    return open_fits(path, memmap=memmap, scale=scale)


def open_fits(
    path: str | os.PathLike,
    *,
    memmap: bool = False,
    scale: bool = True,
    what: str = "FITS data",
    remedy: str = "download it again",
) -> fits.HDUList:
    """Open a FITS file read-only; a missing, truncated or corrupt one is an error naming it.

    astropy only warns when a file is shorter than its headers announce, and then drops the
    extensions it cannot read; here that warning is an error.

    Parameters
    ----------
    path : path-like
        The file.
    memmap, scale : bool
        As in :func:`open_raw`.
    what, remedy : str
        How the error message names the contents and the fix:
        ``"<path>: cannot read <what> (<reason>); <remedy>"``, raised as
        :class:`GemredInputError` when astropy cannot open the file or warns that it is
        truncated. The caller closes the file returned.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        hdul = None
        try:
            hdul = fits.open(path, mode="readonly", memmap=memmap, do_not_scale_image_data=not scale)
            len(hdul)  # reads every header, which is where astropy finds a file too short
        except (OSError, ValueError, AstropyUserWarning) as exc:
            if hdul is not None:
                hdul.close()
            msg = f"{path}: cannot read {what} ({exc}); {remedy}"
            raise GemredInputError(msg) from exc
    return hdul


def write_fits_atomic(
    hdul: fits.HDUList | Iterable[fits.hdu.base.ExtensionHDU],
    path: str | os.PathLike,
    *,
    checksum: bool = False,
) -> Path:
    """Write an HDU list to ``path`` so that the file appears complete or not at all.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList or iterable of HDUs
        What to write; the first HDU must be a primary HDU.
    path : path-like
        Destination. Its folder is created if needed; an existing file is replaced.
    checksum : bool
        Keep the file's MD5 checksum with it (:func:`gemred.provenance.store_md5`), for the
        provenance of the products made from it.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    if not isinstance(hdul, fits.HDUList):
        hdul = fits.HDUList(list(hdul))
    with atomic_output(path) as tmp:
        hdul.writeto(tmp, overwrite=True, output_verify="silentfix")
        if checksum:
            provenance.store_md5(tmp)
    return Path(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Give a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Readers (and Snakemake after a crash) thus see the whole file or none. The folder is created
    if needed, and the file gets ordinary permissions (the temporary file is made private).

    Examples
    --------
    >>> with atomic_output("table.tsv") as tmp:  # doctest: +SKIP
    ...     frame.to_csv(tmp, sep="\t")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def processed_hdus(
    sci: np.ndarray,
    var: np.ndarray | None,
    dq: np.ndarray | None,
    header: fits.Header | None = None,
    *,
    extver: int = 1,
    bunit: str = "electron",
) -> list[fits.ImageHDU]:
    """Build the ``SCI``, ``VAR`` and ``DQ`` extensions of one processed extension.

    SCI and VAR are stored as float32 and DQ as uint16, as DRAGONS writes them.
    """
    base = fits.Header() if header is None else copy_header(header)
    for key in ("EXTNAME", "EXTVER", "BZERO", "BSCALE", "BUNIT"):
        base.remove(key, ignore_missing=True, remove_all=True)
    hdus = []
    for name, data, dtype in (("SCI", sci, np.float32), ("VAR", var, np.float32), ("DQ", dq, np.uint16)):
        if data is None:
            continue
        hdr = base.copy()
        hdu = fits.ImageHDU(np.asarray(data, dtype=dtype), header=hdr, name=name, ver=extver)
        if name != "DQ":
            hdu.header["BUNIT"] = (bunit if name == "SCI" else f"({bunit})**2", "physical unit")
        hdus.append(hdu)
    return hdus


def root_name(path: Path, phu: Mapping) -> str:
    """Root of the original raw file name: ``ORIGNAME`` if recorded, else this file's stem."""
    original = str(phu.get("ORIGNAME", "")).strip()
    name = original or path.name
    return name[:-5] if name.endswith(".fits") else Path(name).stem


def read_frame(path: str | os.PathLike, *, memmap: bool = False, tables: bool = True) -> Frame:
    """Read a raw or processed GMOS/GSAOI file into a :class:`~gemred.frame.Frame`.

    Raw files (unnamed image extensions) give one extension per amplifier or array with SCI in
    ADU as float32 and no VAR or DQ. Processed files give their ``SCI``/``VAR``/``DQ`` planes
    grouped by ``EXTVER``, with each ``OBJCAT`` table attached to its extension and any other
    table (``REFCAT``, ``PROVENANCE``) in ``Frame.tables``.

    Parameters
    ----------
    path : path-like
        The file.
    memmap : bool
        For a processed file: SCI and VAR are copy-on-write memory maps of the file (float32
        in its big-endian byte order) instead of copies in memory; DQ is read into memory.
        For frames that are only read, such as calibrations and the many inputs of a sky:
        their pixels then take no memory beyond the file system's cache, which a file just
        written is in, and nothing is copied that is not used. A raw file's pixels are scaled
        from the map into memory: the same values, with one full-size copy fewer than astropy's
        own read.
    tables : bool
        Also read the binary tables (``OBJCAT``, ``PROVENANCE``, ...). Reading one costs
        about 10 ms, a lot for a job that reads a dozen frames only for their pixels.

    Raises
    ------
    GemredInputError
        If the file is missing, corrupt, truncated or not from a supported instrument.
    """
    path = Path(path)

    def pixels(hdu: fits.ImageHDU) -> np.ndarray:
        return _scaled_map(hdu) if memmap else hdu.data

    with open_raw(path, memmap=memmap, scale=not memmap) as hdul:
        phu = copy_header(hdul[0].header)
        named = any(h.name in ("SCI", "VAR", "DQ") for h in hdul[1:])
        extensions: dict[int, Extension] = {}
        other_tables: dict[str, Table] = {}
        objcats: dict[int, Table] = {}
        for index, hdu in enumerate(hdul[1:], start=1):
            if isinstance(hdu, fits.BinTableHDU):
                if not tables:
                    continue
                if hdu.name == "OBJCAT":
                    objcats[hdu.ver] = Table.read(hdu)
                else:
                    other_tables[hdu.name] = Table.read(hdu)
                continue
            if hdu.data is None:
                continue
            if not named:
                extensions[index] = Extension(pixels(hdu).astype(np.float32), copy_header(hdu.header))
                continue
            ver = hdu.ver
            if hdu.name == "SCI":
                if memmap:
                    # Set after construction, which would copy it to native byte order.
                    extensions[ver] = Extension(np.empty((0, 0), np.float32), copy_header(hdu.header))
                    extensions[ver].sci = pixels(hdu)
                else:
                    extensions[ver] = Extension(hdu.data, copy_header(hdu.header))
            elif hdu.name == "VAR" and ver in extensions:
                var = pixels(hdu)
                extensions[ver].var = var if memmap and var.dtype == ">f4" else var.astype(np.float32)
            elif hdu.name == "DQ" and ver in extensions:
                extensions[ver].dq = pixels(hdu).astype(np.uint16, copy=False)
        for ver, table in objcats.items():
            if ver in extensions:
                extensions[ver].objcat = table
    if not extensions:
        msg = f"{path}: no image data found"
        raise GemredInputError(msg)
    return Frame(phu, [extensions[k] for k in sorted(extensions)], root_name(path, phu), other_tables)


def read_catalogues(path: str | os.PathLike) -> Frame:
    """A processed file's headers and source catalogues, without its pixels.

    For steps that need only where the sources are, such as alignment: each ``SCI`` extension
    becomes an :class:`~gemred.frame.Extension` with its header, zero-stride placeholder pixels
    of its shape (no memory) and the ``OBJCAT`` of its ``EXTVER`` (None where there is none).
    No other table is read.

    Raises
    ------
    GemredInputError
        If the file is unreadable or has no ``SCI`` extension.
    """
    path = Path(path)
    with open_raw(path, memmap=True) as hdul:
        phu = copy_header(hdul[0].header)
        objcats = {hdu.ver: hdu for hdu in hdul[1:] if hdu.name == "OBJCAT"}
        extensions = []
        for hdu in sorted((hdu for hdu in hdul[1:] if hdu.name == "SCI"), key=lambda hdu: hdu.ver):
            shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
            objcat = Table.read(objcats[hdu.ver]) if hdu.ver in objcats else None
            pixels = np.broadcast_to(np.float32(0), shape)
            extensions.append(Extension(pixels, copy_header(hdu.header), objcat=objcat))
    if not extensions:
        msg = f"{path}: no SCI extension; give a processed (mosaicked or sky-subtracted) frame"
        raise GemredInputError(msg)
    return Frame(phu, extensions, root_name(path, phu))


def _scaled_map(hdu: fits.ImageHDU) -> np.ndarray:
    """Pixels of an HDU opened unscaled and memory-mapped, as astropy would scale them: the
    map itself when there is no scaling, unsigned 16-bit integers (``BZERO = 32768``) exactly,
    anything else as float32."""
    data = hdu.data
    bscale, bzero = float(hdu.header.get("BSCALE", 1)), float(hdu.header.get("BZERO", 0))
    if bscale == 1 and bzero == 0:
        return data
    if bscale == 1 and bzero == 32768 and data.dtype.kind == "i" and data.dtype.itemsize == 2:
        # Adding 32768 to a 16-bit signed integer flips its top bit. Byte-swapping copy first,
        # then the flip in place: twice as fast as one ufunc reading big-endian input.
        pixels = data.view(data.dtype.str.replace("i", "u")).astype(np.uint16)
        pixels ^= np.uint16(0x8000)
        return pixels
    return data.astype(np.float32) * np.float32(bscale) + np.float32(bzero)


def write_frame(
    frame: Frame,
    path: str | os.PathLike,
    *,
    bunit: str | None = None,
    scratch: bool = False,
    read_later: bool = True,
) -> Path:
    """Write a frame as multi-extension FITS, atomically.

    Each extension becomes ``SCI`` (float32), ``VAR`` (float32) and ``DQ`` (uint16) HDUs sharing
    an ``EXTVER``, followed by its ``OBJCAT`` table if any; frame-level tables come last. The
    primary header records ``ORIGNAME`` (the raw root) so later products keep the name. Inside a
    workflow job (:func:`gemred.provenance.job`) the header and ``PROVENANCE``/``PROVHISTORY``
    tables also record how the product was made.

    Parameters
    ----------
    frame : Frame
        What to write.
    path : path-like
        Destination file.
    bunit : str, optional
        Physical unit of SCI; by default the extension header's ``BUNIT`` or ``'adu'``.
    scratch : bool
        A work file of one job, not a product: no provenance recorded, no checksum kept.
    read_later : bool
        Other jobs read the product: keep its MD5 checksum with it (reading the whole file
        once more to compute it), so that the jobs that read it record it without doing so.
        False for an end product (a stack), one kept only for inspection (a sky frame) or one
        that a single job reads (a GMOS mosaic): whoever reads it computes the checksum
        then, on a background thread while it works.
    """
    phu = copy_header(frame.phu)
    phu.setdefault("ORIGNAME", f"{frame.root}.fits")
    for key in ("EXTEND", "NEXTEND"):
        phu.remove(key, ignore_missing=True)
    tables = dict(frame.tables) if scratch else provenance.annotate(phu, frame.tables, output=os.fspath(path))
    hdus: list = [fits.PrimaryHDU(header=phu)]
    for ver, ext in enumerate(frame.extensions, start=1):
        unit = bunit or str(ext.header.get("BUNIT", "adu"))
        hdus.extend(processed_hdus(ext.sci, ext.var, ext.dq, ext.header, extver=ver, bunit=unit))
        if ext.objcat is not None:
            cat = fits.table_to_hdu(Table(ext.objcat))
            cat.name, cat.ver = "OBJCAT", ver
            hdus.append(cat)
    for name, table in tables.items():
        hdu = fits.table_to_hdu(Table(table))
        hdu.name = name
        hdus.append(hdu)
    return write_fits_atomic(fits.HDUList(hdus), path, checksum=read_later and not scratch)


def read_bpm(path: str | os.PathLike) -> Frame:
    """Read a static bad-pixel mask file (one uint16 ``DQ`` extension per raw extension).

    Parameters
    ----------
    path : path-like
        The BPM file (``OBSTYPE='BPM'``), e.g. ``bpm_20170306_gmos-n_Ham_22_full_12amp.fits``.

    Returns
    -------
    Frame
        One extension per mask with its bits in ``dq`` (``sci`` is a read-only zero placeholder
        that takes no memory).

    Raises
    ------
    GemredInputError
        If the file is unreadable or holds no image extension.
    """
    with open_raw(path) as hdul:
        phu = copy_header(hdul[0].header)
        extensions = [
            Extension(np.broadcast_to(np.float32(0), hdu.data.shape), copy_header(hdu.header), dq=hdu.data)
            for hdu in hdul[1:]
            if isinstance(hdu, fits.ImageHDU) and hdu.data is not None
        ]
    if not extensions:
        msg = f"{path}: no mask extensions in this BPM file"
        raise GemredInputError(msg)
    return Frame(phu, extensions, root_name(Path(path), phu))
