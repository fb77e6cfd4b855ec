"""DRAGONS' ``mosaicDetectors`` for GMOS Hamamatsu: twelve amplifiers to one image.

Each CCD is first assembled from its amplifiers by their ``CCDSEC`` (binned); amplifiers
that do not tile the CCD (regions of interest, cropped files) give separate blocks. CCD2 is
the reference: its pixels are copied. CCD1 and CCD3 are placed at the shifts and rotations
of :mod:`gemred.instruments.gmos` (``shared/reference/gemini-raw-format.md`` section 3.7):
an unbinned chip pixel ``u`` lands at focal-plane position ``R(rot) (u - c) + shift`` with
``c`` the chip centre, CCD2's chip pixels being the focal plane itself, the convention of
:class:`gemred.simulation.gmos.GmosGeometry`. Placement interpolates SCI and VAR and ORs DQ
as :func:`gemred.resample.resample_arrays` describes. Pixels no CCD covers (the chip gaps)
get SCI 0, VAR 0 and DQ ``NO_DATA``.

The output WCS is CCD2's linear WCS with ``CRPIX`` moved to the mosaic's pixel frame.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from gemred import dq as dqbits
from gemred.frame import Extension, Frame, copy_header
from gemred.instruments import gmos
from gemred.resample import resample_arrays
from gemred.sections import Section, format_section, parse_section

__all__ = ["ccd_transform", "mosaic_gmos"]

#: Per-amplifier keywords that mean nothing for a mosaic.
_AMP_KEYWORDS = ("AMPNAME", "CCDNAME", "BIASSEC", "CCDSEC", "DETSEC", "CCDSIZE", "TRIMSEC", "OVERSCAN")


@dataclass
class _Block:
    """Amplifiers of one CCD that together fill a rectangle of it (binned CCD pixels)."""

    ccd: int
    x1: int
    y1: int
    sci: np.ndarray
    var: np.ndarray | None
    dq: np.ndarray


def ccd_transform(
    dset: gmos.DetectorSet, ccd: int, xbin: int, ybin: int, *, tile: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Affine map from binned pixels of CCD ``ccd`` (0, 1, 2) to binned pixels of CCD2.

    Coordinates are 0-based pixel centres of the whole binned CCD, x first:
    ``p2 = matrix @ p + offset``.

    Parameters
    ----------
    dset : DetectorSet
        The detector generation (shifts, rotations, tile gap).
    ccd : int
        0 for CCD1, 1 for CCD2, 2 for CCD3.
    xbin, ybin : int
        Binning.
    tile : bool
        Tiling instead: CCDs side by side, ``tile_gap`` unbinned pixels apart, no rotation.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``matrix`` (2, 2) and ``offset`` (2,).
    """
    if ccd == 1:
        return np.eye(2), np.zeros(2)
    k = 0 if ccd == 0 else 1
    if tile:
        step = (gmos.CHIP_SHAPE[1] + dset.tile_gap) // xbin
        return np.eye(2), np.array([step * (ccd - 1), 0.0])
    theta = np.radians(dset.ccd_rotations[k])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    binning = np.diag([float(xbin), float(ybin)])
    unbin = np.diag([1.0 / xbin, 1.0 / ybin])
    half = np.array([(xbin - 1) / 2, (ybin - 1) / 2])
    centre = np.array([(gmos.CHIP_SHAPE[1] - 1) / 2, (gmos.CHIP_SHAPE[0] - 1) / 2])
    shift = np.asarray(dset.ccd_shifts[k], dtype=np.float64)
    matrix = unbin @ rot @ binning
    offset = unbin @ (rot @ (half - centre) + shift + centre - half)
    return matrix, offset


def _detector_set(frame: Frame) -> gmos.DetectorSet:
    instrument = frame.instrument
    if instrument not in ("GMOS-N", "GMOS-S"):
        msg = f"{frame.root}: mosaic_gmos needs GMOS data, not {instrument or 'an unknown instrument'}"
        raise ValueError(msg)
    detid = str(frame.phu.get("DETID", "")).strip() or None
    date = None
    text = str(frame.phu.get("DATE-OBS", frame.phu.get("DATE", ""))).strip()
    if text:
        date = dt.date.fromisoformat(text[:10])
    try:
        return gmos.detector_set(instrument, date, detid)
    except ValueError:
        if detid is None:
            raise
        return gmos.detector_set(instrument, date)


def _binning(frame: Frame) -> tuple[int, int]:
    values = {str(ext.header.get("CCDSUM", "1 1")).strip() for ext in frame}
    if len(values) != 1:
        msg = f"{frame.root}: extensions disagree on CCDSUM ({sorted(values)})"
        raise ValueError(msg)
    xbin, ybin = (int(v) for v in values.pop().split())
    return xbin, ybin


def _amp_sections(frame: Frame, xbin: int, ybin: int) -> list[tuple[int, Section]]:
    """(CCD index, CCDSEC) of every extension, checked against the trimmed data shape."""
    out = []
    for i, ext in enumerate(frame, start=1):
        try:
            ccdsec = parse_section(ext.header["CCDSEC"])
            detsec = parse_section(ext.header["DETSEC"])
        except (KeyError, ValueError) as exc:
            msg = f"{frame.root}: extension {i}: no valid CCDSEC/DETSEC ({exc})"
            raise ValueError(msg) from exc
        expected = ((ccdsec.y2 - ccdsec.y1) // ybin, (ccdsec.x2 - ccdsec.x1) // xbin)
        if ext.shape != expected:
            msg = (
                f"{frame.root}: extension {i} has shape {ext.shape} but CCDSEC {format_section(ccdsec)} "
                f"binned {xbin}x{ybin} needs {expected}; trim the overscan before mosaicking"
            )
            raise ValueError(msg)
        out.append((detsec.x1 // gmos.CHIP_SHAPE[1], ccdsec))
    return out


def _blocks(frame: Frame, sections: list[tuple[int, Section]], xbin: int, ybin: int) -> list[_Block]:
    """Join each CCD's side-by-side amplifiers into rectangular blocks."""
    with_var = all(ext.var is not None for ext in frame)
    order = sorted(range(len(frame)), key=lambda i: (sections[i][0], sections[i][1].y1, sections[i][1].x1))
    groups: list[list[int]] = []
    for i in order:
        ccd, sec = sections[i]
        if groups:
            last_ccd, last = sections[groups[-1][-1]]
            if last_ccd == ccd and (last.y1, last.y2) == (sec.y1, sec.y2) and last.x2 == sec.x1:
                groups[-1].append(i)
                continue
        groups.append([i])
    blocks = []
    for group in groups:
        exts = [frame[i] for i in group]
        ccd, first = sections[group[0]]
        dq = [np.zeros(e.shape, dtype=np.uint16) if e.dq is None else e.dq for e in exts]
        blocks.append(
            _Block(
                ccd,
                first.x1 // xbin,
                first.y1 // ybin,
                np.concatenate([e.sci for e in exts], axis=1),
                np.concatenate([e.var for e in exts], axis=1) if with_var else None,
                np.concatenate(dq, axis=1),
            )
        )
    return blocks


def _mosaic_header(
    frame: Frame, sections: list[tuple[int, Section]], xbin: int, ybin: int, origin: np.ndarray
) -> fits.Header:
    """CCD2's first extension header, per-amplifier keywords dropped, WCS moved to the mosaic."""
    ccd2 = [i for i, (ccd, _) in enumerate(sections) if ccd == 1]
    if not ccd2:
        msg = f"{frame.root}: no extension of CCD2 (the mosaic's reference) found"
        raise ValueError(msg)
    first = min(ccd2, key=lambda i: sections[i][1].x1)
    header = copy_header(frame[first].header)
    sec = sections[first][1]
    for axis, start, bin_ in ((1, sec.x1, xbin), (2, sec.y1, ybin)):
        key = f"CRPIX{axis}"
        if key in header:
            header[key] = float(header[key]) + start // bin_ - origin[axis - 1]
    for key in _AMP_KEYWORDS:
        header.remove(key, ignore_missing=True, remove_all=True)
    for key, combine in (("RDNOISE", np.mean), ("GAIN", np.mean), ("SATLEVEL", np.min), ("NONLINEA", np.min)):
        values = [float(ext.header[key]) for ext in frame if key in ext.header]
        if values:
            header[key] = float(combine(values))
    return header


def mosaic_gmos(
    frame: Frame, *, interpolant: str = "poly3", tile: bool = False, dq_threshold: float = 0.001
) -> Frame:
    """Mosaic the amplifiers of a trimmed GMOS Hamamatsu frame into one extension.

    Parameters
    ----------
    frame : Frame
        A GMOS frame whose extensions are trimmed amplifiers (data shape = binned
        ``CCDSEC``) with ``CCDSEC``, ``DETSEC``, ``CCDSUM`` and a linear WCS on CCD2.
    interpolant : {'poly3', 'linear'}
        Interpolation placing CCD1 and CCD3 (cubic B-spline or bilinear).
    tile : bool
        Tile instead of mosaicking: CCDs side by side ``tile_gap`` unbinned pixels apart,
        no interpolation (DRAGONS ``tileArrays``); the WCS is then exact on CCD2 only.
    dq_threshold : float
        See :func:`gemred.resample.resample_arrays`.

    Returns
    -------
    Frame
        One extension covering the three CCDs, PHU stamped ``MOSAIC``.

    Raises
    ------
    ValueError
        If the frame is not GMOS Hamamatsu, is not trimmed, lacks section keywords, or has
        no CCD2 extension.

    Examples
    --------
    >>> mosaic = mosaic_gmos(trimmed_frame)  # doctest: +SKIP
    >>> mosaic[0].shape                       # doctest: +SKIP
    (2112, 3140)
    """
    dset = _detector_set(frame)
    xbin, ybin = _binning(frame)
    sections = _amp_sections(frame, xbin, ybin)
    blocks = _blocks(frame, sections, xbin, ybin)
    transforms = {ccd: ccd_transform(dset, ccd, xbin, ybin, tile=tile) for ccd in {b.ccd for b in blocks}}

    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for block in blocks:
        matrix, offset = transforms[block.ccd]
        ny, nx = block.sci.shape
        corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]])
        placed = (corners + [block.x1, block.y1]) @ matrix.T + offset
        lo, hi = np.minimum(lo, placed.min(axis=0)), np.maximum(hi, placed.max(axis=0))
    # Integer origin (x, y) in CCD2 pixels: CCD2 is copied, never interpolated.
    origin = np.ceil(lo - 1e-9).astype(int)
    shape = (int(np.floor(hi[1] + 1e-9)) + 1 - origin[1], int(np.floor(hi[0] + 1e-9)) + 1 - origin[0])

    with_var = blocks[0].var is not None
    sci = np.zeros(shape, dtype=np.float32)
    var = np.zeros(shape, dtype=np.float32) if with_var else None
    dq = np.full(shape, dqbits.NO_DATA, dtype=np.uint16)
    for block in blocks:
        matrix, offset = transforms[block.ccd]
        start = np.array([block.x1, block.y1]) + offset - origin
        integer = np.allclose(matrix, np.eye(2), atol=1e-12) and np.allclose(start, np.rint(start), atol=1e-9)
        if integer:
            x0, y0 = (int(v) for v in np.rint(start))
            ny, nx = block.sci.shape
            dst = (slice(y0, y0 + ny), slice(x0, x0 + nx))
            sci[dst] = block.sci
            if var is not None:
                var[dst] = block.var
            dq[dst] = block.dq
            continue
        # Output (y, x) -> CCD2 (x, y) = (x, y) + origin -> block pixels through the inverse.
        inverse = np.linalg.inv(matrix)
        swap = np.array([[0, 1], [1, 0]])
        part = resample_arrays(
            block.sci,
            block.var,
            block.dq,
            swap @ inverse @ swap,
            swap @ (inverse @ (origin - offset) - [block.x1, block.y1]),
            shape,
            interpolant=interpolant,
            dq_threshold=dq_threshold,
        )
        if part is not None:
            part.paste(sci, var, dq)

    header = _mosaic_header(frame, sections, xbin, ybin, origin)
    header["DATASEC"] = (format_section((0, shape[1], 0, shape[0])), "Data section")
    result = Frame(
        copy_header(frame.phu), [Extension(sci, header, var, dq, None)], frame.root, dict(frame.tables)
    )
    result.stamp("MOSAIC", "mosaicDetectors" if not tile else "tileArrays")
    return result
