"""GSAOI detector facts: the four HAWAII-2RG arrays, read modes, non-linearity, distortion.

Numbers are those of Gemini's lookup tables (DRAGONS ``gemini_instruments/gsaoi/lookup.py``,
``geminidr/gsaoi/lookups/gsaoi_static_distortion_info.py``); see
``shared/reference/gemini-raw-format.md`` section 4. The same static distortion model is used
by the simulator (to place stars) and by the reduction (to correct them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ArrayInfo",
    "ARRAYS",
    "ARRAY_SHAPE",
    "READ_MODES",
    "read_noise",
    "linearize",
    "ZERO_POINTS",
    "SKY_MAG_PER_ARCSEC2",
    "PIXEL_SCALE",
    "pixel_to_static",
    "static_to_pixel",
]

ARRAY_SHAPE = (2048, 2048)
#: Nominal pixel scale, arcsec per pixel.
PIXEL_SCALE = 0.0197


@dataclass(frozen=True)
class ArrayInfo:
    """One HAWAII-2RG array: identity, placement, gain and levels (ADU)."""

    extver: int
    array_id: str
    detsec: str
    gain: float
    saturation_adu: float
    linear_fraction: float
    nonlinearity: tuple[float, float, float]

    @property
    def nonlinear_adu(self) -> float:
        """Start of the non-linear regime in ADU (DQ bit 2 above it)."""
        return self.saturation_adu * self.linear_fraction


ARRAYS: tuple[ArrayInfo, ...] = (
    ArrayInfo(1, "H2RG-032-074", "[2049:4096,1:2048]", 2.434, 52400.0, 0.73,
              (0.9947237, 3.0403620e-07, 4.2870263e-12)),
    ArrayInfo(2, "H2RG-032-064", "[1:2048,1:2048]", 2.010, 50250.0, 0.64,
              (0.9944842, 3.3573418e-07, 9.1085864e-12)),
    ArrayInfo(3, "H2RG-032-071", "[1:2048,2049:4096]", 2.411, 53700.0, 0.76,
              (0.9947278, 2.9311700e-07, 3.7454887e-12)),
    ArrayInfo(4, "H2RG-032-061", "[2049:4096,2049:4096]", 2.644, 52300.0, 0.75,
              (0.9958842, 2.1448022e-07, 3.8885419e-12)),
)

#: PHU ``LNRS`` -> read-speed setting name.
READ_MODES = {2: "Bright Objects", 8: "Faint Objects", 16: "Very Faint Objects"}

#: Read noise (e-, one coadd) per array id and read-speed setting.
_READ_NOISE = {
    "Bright Objects": (26.53, 19.10, 27.24, 32.26),
    "Faint Objects": (13.63, 9.85, 14.22, 16.78),
    "Very Faint Objects": (10.22, 7.44, 10.61, 12.79),
}

#: Nominal zero points per array (magnitude giving 1 electron per second).
ZERO_POINTS = {
    "J": (26.857, 26.891, 26.774, 26.727),
    "H": (26.796, 26.931, 26.821, 26.796),
    "Kshort": (26.201, 26.287, 26.154, 26.192),
    "Z": (26.71, 26.71, 26.71, 26.71),
}

#: Typical sky surface brightness (mag / arcsec^2) used by the simulator.
SKY_MAG_PER_ARCSEC2 = {"J": 16.0, "H": 14.2, "Kshort": 13.0}


def read_noise(array_index: int, lnrs: int, coadds: int = 1) -> float:
    """Read noise in electrons of array ``array_index`` (0..3) for ``LNRS`` reads and coadds.

    Coadds are averaged by GSAOI, so the read noise falls as ``1/sqrt(coadds)``.
    """
    try:
        mode = READ_MODES[int(lnrs)]
    except KeyError:
        msg = f"unknown GSAOI LNRS={lnrs!r}; expected one of {sorted(READ_MODES)}"
        raise ValueError(msg) from None
    return _READ_NOISE[mode][array_index] / np.sqrt(max(int(coadds), 1))


def linearize(electrons: np.ndarray, array_index: int) -> np.ndarray:
    """Apply GSAOI's non-linearity correction to counts in electrons.

    The corrected count is ``c * (a0 + a1 c + a2 c^2)`` with ``c`` the raw count in electrons.
    """
    a0, a1, a2 = ARRAYS[array_index].nonlinearity
    c = np.asarray(electrons, dtype=np.float64)
    return c * (a0 + c * (a1 + c * a2))


def delinearize(electrons: np.ndarray, array_index: int, iterations: int = 8) -> np.ndarray:
    """Inverse of :func:`linearize`: the raw count that the array reads for a true count.

    Used by the simulator. Solved by Newton iterations, exact to float64 precision
    well beyond saturation.
    """
    a0, a1, a2 = ARRAYS[array_index].nonlinearity
    true = np.asarray(electrons, dtype=np.float64)
    raw = true / a0
    for _ in range(iterations):
        f = raw * (a0 + raw * (a1 + raw * a2)) - true
        df = a0 + raw * (2 * a1 + 3 * raw * a2)
        raw = raw - f / df
    return raw


# Static distortion: per array, pixel (0-based x, y) -> focal-plane "static" arcsec, as the sum
# of a linear and a cubic 2-D polynomial. Coefficients c[i, j] multiply x**i * y**j.
def _poly(coeffs: dict[str, float]) -> np.ndarray:
    c = np.zeros((4, 4))
    for name, value in coeffs.items():
        i, j = (int(v) for v in name[1:].split("_"))
        c[i, j] += value
    return c


_LINEAR = [
    ({"c0_0": -3.767293338535515, "c1_0": 0.01945507134593546, "c0_1": 1.613586631961425e-4},
     {"c0_0": -47.40723615004112, "c1_0": 1.563299085656958e-4, "c0_1": 0.01971384089214057}),
    ({"c0_0": -47.77441111281951, "c1_0": 0.02002115791291804, "c0_1": 1.855292799634021e-4},
     {"c0_0": -47.76547084404991, "c1_0": 1.654311720619638e-4, "c0_1": 0.01971856033820672}),
    ({"c0_0": -47.41388591702555, "c1_0": 0.02001482028626509, "c0_1": -4.212420569230591e-4},
     {"c0_0": -4.654717879799149, "c1_0": 2.286060564658466e-4, "c0_1": 0.01969623747326584}),
    ({"c0_0": -3.608039600938993, "c1_0": 0.01941851868447217, "c0_1": -3.684556341286741e-4},
     {"c0_0": -4.196595494921446, "c1_0": 1.417908733063215e-4, "c0_1": 0.01969654015724558}),
]

_CUBIC = [
    ({"c0_0": -0.2000441189104647, "c1_0": 2.493979183483538e-4, "c2_0": -1.114794181513601e-7,
      "c3_0": -4.531542177492621e-12, "c0_1": 3.137509342682636e-4, "c1_1": -2.641687769102021e-8,
      "c2_1": 4.322499461312955e-12, "c0_2": -1.623821782398624e-7, "c1_2": 7.862705238522332e-12,
      "c0_3": 8.649900385974039e-12},
     {"c0_0": -0.01304663181010625, "c1_0": 2.174054284822841e-5, "c2_0": -2.398957087927592e-8,
      "c3_0": 7.310481620132716e-12, "c0_1": 3.357755871516543e-5, "c1_1": -8.825184536163208e-9,
      "c2_1": 2.050018792243589e-12, "c0_2": -2.478630823986458e-8, "c1_2": 3.538515044761089e-12,
      "c0_3": 4.562723271772565e-12}),
    ({"c0_0": -0.1949408064796304, "c1_0": 2.877778046298606e-4, "c2_0": -1.495360882919546e-7,
      "c3_0": 5.523962776560459e-12, "c0_1": 2.788514653546706e-4, "c1_1": -1.417656730511652e-8,
      "c2_1": 2.675437435818343e-12, "c0_2": -1.353132791439666e-7, "c1_2": 1.450848713190932e-12,
      "c0_3": 4.966560575231940e-13},
     {"c0_0": -0.01563985104451207, "c1_0": 1.397817242056433e-5, "c2_0": -1.808648145552520e-9,
      "c3_0": -1.598683318558063e-12, "c0_1": 2.689748894070916e-5, "c1_1": -1.262163320882350e-8,
      "c2_1": 2.785894821583605e-12, "c0_2": -7.291062769196125e-9, "c1_2": 1.549659955759916e-12,
      "c0_3": -1.631768127489460e-12}),
    ({"c0_0": -0.1789405696262646, "c1_0": 2.741129335821148e-4, "c2_0": -1.383254303482762e-7,
      "c3_0": 3.002958493815011e-12, "c0_1": 2.881098305197146e-4, "c1_1": -2.258908094387217e-8,
      "c2_1": -2.770570714472721e-12, "c0_2": -1.563286907570526e-7, "c1_2": 1.346663655660389e-11,
      "c0_3": 5.052396058993053e-12},
     {"c0_0": -0.004138136556942223, "c1_0": 2.034825825241239e-5, "c2_0": -1.835024363784077e-8,
      "c3_0": 3.064620164702450e-12, "c0_1": 6.221093565420692e-6, "c1_1": -1.870505456604141e-9,
      "c2_1": 6.014753488124164e-12, "c0_2": -1.140840726876328e-8, "c1_2": -3.972015599966025e-12,
      "c0_3": 5.135818314356853e-12}),
    ({"c0_0": -0.2110028606551117, "c1_0": 2.937980723175633e-4, "c2_0": -1.338927929629734e-7,
      "c3_0": 3.873703618592271e-12, "c0_1": 2.574191396723302e-4, "c1_1": -2.259108137743001e-10,
      "c2_1": -1.520549877320857e-13, "c0_2": -1.254406813322947e-7, "c1_2": -2.006490195091191e-12,
      "c0_3": 1.283023891016379e-12},
     {"c0_0": -0.02271822870244537, "c1_0": 3.573598058342320e-5, "c2_0": -2.252987979165502e-8,
      "c3_0": 4.293626327166727e-12, "c0_1": 3.782918002580935e-5, "c1_1": -7.899592934041771e-9,
      "c2_1": 1.394587801179865e-12, "c0_2": -2.922839126802432e-8, "c1_2": 1.202405561311068e-12,
      "c0_3": 6.870431670792159e-12}),
]

#: Per array, (x coefficients, y coefficients) of the full static distortion polynomial.
DISTORTION = tuple(
    (_poly(lx) + _poly(cx), _poly(ly) + _poly(cy))
    for (lx, ly), (cx, cy) in zip(_LINEAR, _CUBIC, strict=True)
)


def pixel_to_static(array_index: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map 0-based pixel coordinates of one array to the distortion-free focal plane (arcsec).

    The static plane has a uniform scale; its axes are those of the detector, so at
    PA = 0 with GSAOI's mirrored parity, +X is East and +Y is North.
    """
    cx, cy = DISTORTION[array_index]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.polynomial.polynomial.polyval2d(x, y, cx), np.polynomial.polynomial.polyval2d(x, y, cy)


def static_to_pixel(
    array_index: int, sx: np.ndarray, sy: np.ndarray, iterations: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pixel_to_static` by Newton iterations (converges to < 1e-8 pixel)."""
    cx, cy = DISTORTION[array_index]
    dcx_dx = np.polynomial.polynomial.polyder(cx, axis=0)
    dcx_dy = np.polynomial.polynomial.polyder(cx, axis=1)
    dcy_dx = np.polynomial.polynomial.polyder(cy, axis=0)
    dcy_dy = np.polynomial.polynomial.polyder(cy, axis=1)
    sx = np.asarray(sx, dtype=np.float64)
    sy = np.asarray(sy, dtype=np.float64)
    # Start from the linear terms alone.
    a, b, c, d = cx[1, 0], cx[0, 1], cy[1, 0], cy[0, 1]
    det = a * d - b * c
    rx, ry = sx - cx[0, 0], sy - cy[0, 0]
    x = (d * rx - b * ry) / det
    y = (-c * rx + a * ry) / det
    pv = np.polynomial.polynomial.polyval2d
    for _ in range(iterations):
        fx = pv(x, y, cx) - sx
        fy = pv(x, y, cy) - sy
        j11, j12 = pv(x, y, dcx_dx), pv(x, y, dcx_dy)
        j21, j22 = pv(x, y, dcy_dx), pv(x, y, dcy_dy)
        det = j11 * j22 - j12 * j21
        x = x - (j22 * fx - j12 * fy) / det
        y = y - (-j21 * fx + j11 * fy) / det
    return x, y
