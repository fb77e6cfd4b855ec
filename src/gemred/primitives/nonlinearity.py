"""Non-linearity correction of GSAOI data (DRAGONS ``nonlinearityCorrect``).

Each HAWAII-2RG array reads fewer counts than it collected as its pixels fill; Gemini's
correction is a polynomial per array, ``c * (a0 + a1 c + a2 c**2)`` with ``c`` the count in
electrons (:func:`gemred.instruments.gsaoi.linearize`; ``shared/reference/gemini-raw-format.md``
section 4, ``reduction-steps.md`` section 4.1; ``DRAGONS: geminidr/core/primitives_preprocess.py``,
``geminidr/gsaoi/primitives_gsaoi.py``). :func:`linearize_counts` is the numerical core, on
plain arrays; :func:`nonlinearity_correct` applies it to a prepared frame.
"""

from __future__ import annotations

import numpy as np

from gemred.frame import Frame
from gemred.instruments import gsaoi
from gemred.io import GemredInputError
from gemred.primitives.standardize import coadds, frame_label, gsaoi_array_index

__all__ = ["linearize_counts", "nonlinearity_correct"]

#: Rows linearised at a time, so that the work stays in the CPU cache.
_ROWS_PER_BLOCK = 64


def linearize_counts(counts: np.ndarray, array_index: int, *, gain: float = 1.0) -> np.ndarray:
    """Linearise the counts of one GSAOI array, in the unit they come in.

    With ``c = counts * gain`` in electrons the corrected count is
    ``c * (a0 + a1 c + a2 c**2) / gain``, evaluated as
    ``counts * (a0 + counts * (a1 g + counts * a2 g**2))`` in float32, in place and in
    blocks of rows (relative error ~1e-7, far below the noise; no float64 copy of the image).

    Parameters
    ----------
    counts : numpy.ndarray
        Counts read by the array: ADU (``gain`` = e-/ADU) or electrons (``gain=1``).
    array_index : int
        Index 0-3 of the array in :data:`gemred.instruments.gsaoi.ARRAYS`.
    gain : float
        Electrons per unit of ``counts``.

    Returns
    -------
    numpy.ndarray
        float32 linearised counts, same unit and shape.

    Examples
    --------
    >>> round(float(linearize_counts(np.float32(20000.0), 1, gain=2.01)))
    20454
    """
    a0, a1, a2 = gsaoi.ARRAYS[array_index].nonlinearity
    c0, c1, c2 = np.float32(a0), np.float32(a1 * gain), np.float32(a2 * gain * gain)
    counts = np.asarray(counts, dtype=np.float32)
    out = np.empty(counts.shape, dtype=np.float32)
    blocks = range(0, counts.shape[0], _ROWS_PER_BLOCK) if counts.ndim else [None]
    for r0 in blocks:
        rows = Ellipsis if r0 is None else slice(r0, r0 + _ROWS_PER_BLOCK)
        c, o = counts[rows], out[rows]
        np.multiply(c, c2, out=o)
        o += c1
        o *= c
        o += c0
        o *= c
    return out


def nonlinearity_correct(frame: Frame) -> Frame:
    """Correct a prepared GSAOI frame for the non-linearity of its arrays.

    Per array, SCI is converted to electrons, linearised (:func:`linearize_counts`) and
    converted back, so the unit is kept (ADU or electrons). ``SATLEVEL`` and ``NONLINEA`` go
    through the same polynomial. If VAR already holds the Poisson term (``VARNOISE``), it is
    corrected additively by the change of that term, ``(max(new, 0) - max(old, 0)) / gain /
    COADDS``, as DRAGONS does; otherwise VAR (read noise only, or none) is left as it is.

    Parameters
    ----------
    frame : Frame
        A prepared GSAOI frame (``GAIN``, ``BUNIT`` and ``ARRAYID`` on every extension), usually
        with DQ already added so that saturated and non-linear pixels are flagged on the raw
        counts.

    Returns
    -------
    Frame
        The corrected copy, with a ``LINCORR`` timestamp.

    Raises
    ------
    GemredInputError
        If the frame is not from GSAOI, not prepared, or already corrected.

    Examples
    --------
    The recipe order is prepare, add_dq, nonlinearity_correct, adu_to_electrons, add_var::

        frame = add_var(adu_to_electrons(nonlinearity_correct(add_dq(prepare(raw), bpm))),
                        read_noise=True, poisson=True)
    """
    name = frame_label(frame)
    if frame.instrument != "GSAOI":
        msg = f"{name}: instrument {frame.instrument!r}; non-linearity coefficients exist for GSAOI only"
        raise GemredInputError(msg)
    if "LINCORR" in frame.phu:
        msg = f"{name}: already corrected for non-linearity (LINCORR={frame.phu['LINCORR']})"
        raise GemredInputError(msg)
    n_coadds = coadds(frame)
    out = frame.copy(deep=False)  # SCI and VAR are replaced by new arrays below
    for i, ext in enumerate(out):
        hdr = ext.header
        if "GAIN" not in hdr or "BUNIT" not in hdr:
            msg = f"{name}: extension {i + 1} lacks GAIN/BUNIT; run prepare() before nonlinearity_correct()"
            raise GemredInputError(msg)
        try:
            index = gsaoi_array_index(hdr, i)
        except ValueError as exc:
            msg = f"{name}: extension {i + 1}: {exc}"
            raise GemredInputError(msg) from exc
        gain = float(hdr["GAIN"]) if str(hdr["BUNIT"]).lower() == "adu" else 1.0
        corrected = linearize_counts(ext.sci, index, gain=gain)
        if ext.var is not None and "Poisson" in str(hdr.get("VARNOISE", "")).split(","):
            zero = np.float32(0)
            change = np.maximum(corrected, zero) - np.maximum(ext.sci, zero)
            ext.var = ext.var + change / np.float32(gain * n_coadds)
        ext.sci = corrected
        for key in ("SATLEVEL", "NONLINEA"):
            if key in hdr:
                hdr[key] = float(gsaoi.linearize(float(hdr[key]) * gain, index)) / gain
    out.stamp("LINCORR", "UT time stamp for nonlinearity_correct")
    return out
