"""GSAOI imaging calibration recipes: master lamp flat and calibrated (flat-fielded) frames.

DRAGONS' GSAOI ``makeProcessedFlat`` (``geminidr/gsaoi/recipes/sq/recipes_FLAT_IMAGE.py``:
prepare, addDQ, nonlinearityCorrect, ADUToElectrons, addVAR, makeLampFlat, normalizeFlat,
thresholdFlatfield) and the first steps of ``reduce`` (``recipes_IMAGE.py``, up to
``flatCorrect``); ``shared/reference/reduction-steps.md`` sections 4.1 and 4.2.

A full-size GSAOI frame is 4 x 2048 x 2048 pixels, 168 MB once it has SCI, VAR and DQ, so the
30 dome flats of a master flat do not fit in memory together. :func:`make_lamp_flat`
therefore works in row bands: every raw file is opened once, and for each band of rows (of all
four arrays) the band of every flat goes through the per-frame primitives and the lamp-on and
lamp-off bands are stacked and subtracted. All the per-frame steps act pixel by pixel, so the
result is the same as processing whole frames; only the normalisation and thresholding need
the whole flat (168 MB).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits

from gemred.frame import Extension, Frame, copy_header
from gemred.io import GemredInputError, open_raw, read_bpm, read_frame, read_headers, root_name
from gemred.primitives.ccd import adu_to_electrons
from gemred.primitives.flat import flat_correct, normalize_flat, threshold_flatfield
from gemred.primitives.nonlinearity import nonlinearity_correct
from gemred.primitives.standardize import add_dq, add_var, prepare
from gemred.stacking import n_threads, stack_frames

__all__ = [
    "FLAT_STACK_DEFAULTS",
    "THRESHOLD_DEFAULTS",
    "LAMP_OFF_MIN_WAVELENGTH",
    "standardize_gsaoi",
    "make_lamp_flat",
    "calibrate_gsaoi",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: GSAOI ``stackFlats`` (near-IR ``makeLampFlat``): mean with 3/3-sigma clipping about the median.
FLAT_STACK_DEFAULTS: dict[str, object] = {
    "operation": "mean",
    "reject_method": "sigclip",
    "lsigma": 3.0,
    "hsigma": 3.0,
}
#: ``thresholdFlatfield`` limits (``low``/``high``: UNILLUMINATED, set to 1) and the response
#: below which a pixel is flagged BAD_PIXEL (``weak``; DRAGONS' BPM recipe uses 0.5 too).
THRESHOLD_DEFAULTS: dict[str, float] = {"low": 0.01, "high": 10.0, "weak": 0.5}
#: Effective wavelength (micron) from which the thermal background is removed with lamp-off flats.
LAMP_OFF_MIN_WAVELENGTH = 1.4
#: Memory (MB) for the raw and processed bands of one group of flats and their stack.
_BAND_MEMORY_MB = 1024
#: Bytes per pixel of a band in processing: raw float32 plus SCI/VAR/DQ and primitive copies.
_BAND_BYTES_PER_PIXEL = 40
_LAMP_ON, _LAMP_OFF = "DOMEFLAT", "DOMEFLAT OFF"


def standardize_gsaoi(frame: Frame, bpm: Frame | None = None) -> Frame:
    """The per-frame start of every GSAOI recipe, in electrons with full variance.

    prepare, add_dq (BPM, saturated, non-linear), nonlinearity_correct, adu_to_electrons,
    add_var (read noise and Poisson).

    Parameters
    ----------
    frame : Frame
        A raw GSAOI frame (or a band of rows of one: every step acts pixel by pixel).
    bpm : Frame, optional
        Static bad-pixel mask of the same extensions and shapes.

    Returns
    -------
    Frame
        The standardised copy; ``BUNIT='electron'``, ``VARNOISE='read,Poisson'``.

    Raises
    ------
    GemredInputError
        If the frame is not raw GSAOI data or does not match the BPM.
    """
    frame = nonlinearity_correct(add_dq(prepare(frame), bpm))
    return add_var(adu_to_electrons(frame), read_noise=True, poisson=True)


def _need_inputs(raw_paths: Sequence[PathLike], what: str) -> list[PathLike]:
    paths = list(raw_paths)
    if not paths:
        msg = f"no raw files given to make a {what}"
        raise GemredInputError(msg)
    return paths


def _lamp_groups(paths: Sequence[PathLike]) -> tuple[list[PathLike], list[PathLike], list[Mapping]]:
    """Split dome flats into lamp-on and lamp-off by ``OBJECT``; also return their PHUs."""
    on, off, phus = [], [], []
    for path in paths:
        phu = read_headers(path)[0]
        instrument = str(phu.get("INSTRUME", "")).strip()
        if instrument != "GSAOI":
            msg = f"{path}: instrument {instrument!r}; make_lamp_flat() takes GSAOI dome flats"
            raise GemredInputError(msg)
        obj = str(phu.get("OBJECT", "")).strip().upper()
        if obj == _LAMP_ON:
            on.append(path)
        elif obj == _LAMP_OFF:
            off.append(path)
        else:
            msg = (
                f"{path}: OBJECT={phu.get('OBJECT')!r}, not a GSAOI dome flat "
                "('Domeflat' lamp on or 'Domeflat OFF' lamp off); remove it from the flat list"
            )
            raise GemredInputError(msg)
        phus.append(phu)
    return on, off, phus


def _wavelength_micron(phu: Mapping) -> float | None:
    value = phu.get("WAVELENG")
    try:
        return float(value) / 1e4 if value is not None else None
    except (TypeError, ValueError):
        return None


def _warn_exposure_times(on: Sequence[PathLike], off: Sequence[PathLike], phus: dict) -> None:
    on_times = {float(phus[p].get("EXPTIME", np.nan)) for p in on}
    off_times = {float(phus[p].get("EXPTIME", np.nan)) for p in off}
    if on_times != off_times or len(on_times) > 1:
        log.warning(
            "lamp-on exposure times %s s and lamp-off %s s differ; the off-subtraction will not "
            "remove the thermal background exactly",
            sorted(on_times),
            sorted(off_times),
        )


class _RawGroup:
    """Raw files opened once, read band by band as raw-like frames."""

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.paths = list(paths)
        self.hduls: list[fits.HDUList] = []
        try:
            for path in self.paths:
                self.hduls.append(open_raw(path, memmap=False))
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        self.images = [
            [h for h in hdul[1:] if h.is_image and h.header.get("NAXIS", 0) == 2] for hdul in self.hduls
        ]
        self.shapes = [tuple(h.shape) for h in self.images[0]]
        for path, images in zip(self.paths, self.images, strict=True):
            shapes = [tuple(h.shape) for h in images]
            if shapes != self.shapes:
                msg = f"{path}: array shapes {shapes} differ from {self.paths[0]}'s {self.shapes}"
                raise GemredInputError(msg)
        self.phus = [copy_header(hdul[0].header) for hdul in self.hduls]
        self.headers = [[copy_header(h.header) for h in images] for images in self.images]
        self.roots = [root_name(Path(p), phu) for p, phu in zip(self.paths, self.phus, strict=True)]

    def band(self, index: int, rows: slice) -> Frame:
        """Rows ``rows`` of every array of file ``index``, as a raw frame (float32 ADU)."""
        # Headers are shared, not copied: primitives never change their input frame.
        extensions = [
            Extension(np.asarray(hdu.section[rows], dtype=np.float32), header)
            for hdu, header in zip(self.images[index], self.headers[index], strict=True)
        ]
        return Frame(self.phus[index], extensions, self.roots[index])

    def close(self) -> None:
        for hdul in self.hduls:
            hdul.close()


def _bpm_band(bpm: Frame | None, rows: slice) -> Frame | None:
    if bpm is None:
        return None
    extensions = [
        Extension(np.broadcast_to(np.float32(0), ext.dq[rows].shape), ext.header, dq=ext.dq[rows])
        for ext in bpm
    ]
    return Frame(bpm.phu, extensions, bpm.root)


def _band_rows(n_files: int, shapes: Sequence[tuple[int, int]], memory_mb: float) -> int:
    per_row = n_files * sum(nx for _, nx in shapes) * _BAND_BYTES_PER_PIXEL
    return max(1, int(memory_mb * 2**20 // per_row))


def _stack_group(group: _RawGroup, rows: slice, bpm: Frame | None, stack: Mapping, memory_mb: float) -> Frame:
    """Standardise one band of every file of a group and stack the bands."""
    bpm_rows = _bpm_band(bpm, rows)
    frames = [standardize_gsaoi(group.band(i, rows), bpm_rows) for i in range(len(group.paths))]
    return stack_frames(frames, scale=False, zero=False, memory_mb=memory_mb, **stack)


def make_lamp_flat(
    raw_paths: Sequence[PathLike],
    *,
    bpm_path: PathLike | None = None,
    stack: Mapping[str, object] | None = None,
    threshold: Mapping[str, float] | None = None,
    memory_mb: float = _BAND_MEMORY_MB,
) -> Frame:
    """Make a normalised GSAOI flat from lamp-on and lamp-off dome flats (DRAGONS ``makeProcessedFlat``).

    Every flat is standardised (:func:`standardize_gsaoi`: prepare, add_dq, non-linearity
    correction, electrons, read and Poisson variance). At an effective wavelength of 1.4 micron
    or more (``WAVELENG``; e.g. H, Kshort) the lamp-on flats (``OBJECT='Domeflat'``) and the
    lamp-off flats (``'Domeflat OFF'``) are stacked separately and off is subtracted from on
    (VAR adds, DQ ORs; a warning if their exposure times differ), which removes the thermal
    background and the dark current; at shorter wavelengths all flats are stacked together.
    Stacks are means with 3/3-sigma clipping about the median, no scaling or offsets
    (:data:`FLAT_STACK_DEFAULTS`). The result is divided by the median of its DQ-good pixels
    over all four arrays (:func:`normalize_flat`) and thresholded
    (:func:`threshold_flatfield`, :data:`THRESHOLD_DEFAULTS`).

    The work is done in bands of rows, each raw file opened once (see the module notes), so
    memory is bounded by ``memory_mb`` plus the output (168 MB at full size) whatever the
    number of flats: 15 + 15 full-size flats peak at about 0.8 GB with the default (0.56 GB
    with ``memory_mb=256``, 1.5x slower).

    Parameters
    ----------
    raw_paths : sequence of path-like
        Raw GSAOI dome flats of one filter and read mode, lamp on and lamp off.
    bpm_path : path-like, optional
        Static bad-pixel mask file (``bpm_..._gsaoi_...fits``).
    stack : mapping, optional
        Overrides of :data:`FLAT_STACK_DEFAULTS` (see :func:`gemred.stacking.stack_arrays`).
    threshold : mapping, optional
        Overrides of :data:`THRESHOLD_DEFAULTS`.
    memory_mb : float
        Memory for the bands of one group of flats.

    Returns
    -------
    Frame
        The flat (median of good pixels 1, ``BUNIT='electron'`` as DRAGONS leaves it), named
        after the first lamp-on flat (written as ``<root>_flat.fits``); ``PROCFLAT``,
        ``NCOMBINE`` (lamp-on flats) and ``NLAMPOFF`` in its primary header.

    Raises
    ------
    GemredInputError
        If there are no inputs, one is not a GSAOI dome flat, lamp-off flats are missing where
        they are needed, or inputs do not match one another or the BPM.

    Examples
    --------
    >>> flat = make_lamp_flat(sorted(raw.glob("S20170505S00[3-7]*.fits")),
    ...                       bpm_path=raw / "bpm_20121104_gsaoi_gsaoi_11_full_4amp.fits")  # doctest: +SKIP
    >>> write_frame(flat, out / product_name(flat.root, "_flat"))  # doctest: +SKIP
    """
    paths = _need_inputs(raw_paths, "GSAOI lamp flat")
    on, off, phu_list = _lamp_groups(paths)
    phus = dict(zip(paths, phu_list, strict=True))
    wavelength = _wavelength_micron(phu_list[0])
    subtract = wavelength is None or wavelength >= LAMP_OFF_MIN_WAVELENGTH
    if subtract and not (on and off):
        missing = "lamp-on ('Domeflat')" if not on else "lamp-off ('Domeflat OFF')"
        msg = (
            f"no {missing} flats among the {len(paths)} given (first {paths[0]}); at "
            f"{wavelength or 'unknown'} micron GSAOI flats are lamp on minus lamp off"
        )
        raise GemredInputError(msg)
    if not subtract:
        on, off = list(paths), []
        log.info(
            "wavelength %.2f micron < %.1f: stacking all %d flats",
            wavelength,
            LAMP_OFF_MIN_WAVELENGTH,
            len(on),
        )
    else:
        _warn_exposure_times(on, off, phus)
    stack_params = {**FLAT_STACK_DEFAULTS, **(stack or {})}
    bpm = None if bpm_path is None else read_bpm(bpm_path)
    groups = [_RawGroup(on)]
    try:
        if off:
            groups.append(_RawGroup(off))
        shapes = groups[0].shapes
        if len(groups) > 1 and groups[1].shapes != shapes:
            msg = f"lamp-off flat {off[0]} has array shapes {groups[1].shapes}, lamp-on {on[0]} {shapes}"
            raise GemredInputError(msg)
        if bpm is not None and [ext.dq.shape for ext in bpm] != shapes:
            msg = (
                f"the BPM {bpm_path} has array shapes {[ext.dq.shape for ext in bpm]}, the flats {shapes}; "
                "use the BPM made for this read-out area"
            )
            raise GemredInputError(msg)
        ny = shapes[0][0]
        if any(shape[0] != ny for shape in shapes):
            msg = f"{on[0]}: arrays of different heights {shapes}; not a GSAOI file"
            raise GemredInputError(msg)
        step = _band_rows(max(len(on), len(off)), shapes, memory_mb)
        planes = [(np.empty(s, np.float32), np.empty(s, np.float32), np.empty(s, np.uint16)) for s in shapes]
        template: Frame | None = None
        # The lamp-on and lamp-off bands are made on two threads (numpy frees the GIL for most
        # of the pixel work); each group's files are read by its own thread only.
        with ThreadPoolExecutor(max_workers=min(2, n_threads())) as pool:
            for r0 in range(0, ny, step):
                rows = slice(r0, min(r0 + step, ny))
                stacks = [pool.submit(_stack_group, g, rows, bpm, stack_params, memory_mb) for g in groups]
                lamp = stacks[0].result()
                dark = stacks[1].result() if off else None
                if template is None:
                    template = lamp
                for k, (sci, var, mask) in enumerate(planes):
                    sci[rows] = lamp[k].sci
                    var[rows] = lamp[k].var
                    mask[rows] = lamp[k].dq
                    if dark is not None:
                        sci[rows] -= dark[k].sci
                        var[rows] += dark[k].var
                        mask[rows] |= dark[k].dq
                del lamp, dark, stacks
    finally:
        for group in groups:
            group.close()
    extensions = [
        Extension(sci, copy_header(ext.header), var=var, dq=mask)
        for ext, (sci, var, mask) in zip(template, planes, strict=True)
    ]
    flat = Frame(copy_header(template.phu), extensions, template.root)
    del planes, extensions, template, bpm  # only one full-size copy at a time from here on
    flat.phu["NLAMPOFF"] = (len(off), "Lamp-off flats stacked and subtracted")
    flat.stamp("LAMPFLAT", "UT time stamp for make_lamp_flat")
    flat = normalize_flat(flat)
    flat = threshold_flatfield(flat, **{**THRESHOLD_DEFAULTS, **(threshold or {})})
    flat.stamp("PROCFLAT", "UT time stamp: processed flat")
    return flat


def calibrate_gsaoi(raw_path: PathLike, *, flat: Frame, bpm_path: PathLike | None = None) -> Frame:
    """Reduce one raw GSAOI frame up to flat-fielding, per array, in electrons.

    :func:`standardize_gsaoi` (prepare, add_dq, nonlinearity_correct, adu_to_electrons,
    add_var read + Poisson), then :func:`~gemred.primitives.flat.flat_correct`. VAR is then
    ``(RN**2 + max(counts, 0)) / f**2`` plus the flat's own term, in electrons squared.

    Parameters
    ----------
    raw_path : path-like
        Raw GSAOI science, sky or standard frame.
    flat : Frame
        The matching processed flat (:func:`make_lamp_flat`).
    bpm_path : path-like, optional
        Static bad-pixel mask file.

    Returns
    -------
    Frame
        The flat-fielded frame, root of the raw file.

    Raises
    ------
    GemredInputError
        If the file is unreadable, not GSAOI, or does not match the flat or BPM.
    """
    bpm = None if bpm_path is None else read_bpm(bpm_path)
    return flat_correct(standardize_gsaoi(read_frame(raw_path, memmap=True), bpm), flat)
