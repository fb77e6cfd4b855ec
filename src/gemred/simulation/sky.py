"""The simulated sky: star catalogues, point-spread functions, rendering, cosmic rays.

Shared by the GMOS and GSAOI simulators. Everything is in electrons and pixels of the
detector being simulated; the instrument modules decide where on which array a star lands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "tangent_plane",
    "from_tangent_plane",
    "star_catalogue",
    "Moffat",
    "Gaussian",
    "PSF",
    "add_stars",
    "add_cosmic_rays",
]

ARCSEC = 1.0 / 3600.0


def tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) projection about ``(ra0, dec0)``: standard coordinates in arcsec.

    Returns ``(xi, eta)``: xi grows to the East, eta to the North.
    """
    ra, dec = np.radians(ra), np.radians(dec)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def from_tangent_plane(
    xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`tangent_plane`: standard coordinates (arcsec) to RA, Dec (degrees)."""
    x = np.radians(np.asarray(xi, dtype=np.float64) / 3600.0)
    y = np.radians(np.asarray(eta, dtype=np.float64) / 3600.0)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def star_catalogue(
    rng: np.random.Generator,
    ra0: float,
    dec0: float,
    half_width_arcsec: float | tuple[float, float],
    n_stars: int,
    mag_range: tuple[float, float],
    zero_point: float,
    *,
    slope: float = 0.3,
) -> pd.DataFrame:
    """Draw stars uniformly over a rectangular field with counts rising as ``10**(slope*m)``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    ra0, dec0 : float
        Field centre (degrees).
    half_width_arcsec : float or (float, float)
        Half the side of the field on the sky: one value for a square, or (East-West,
        North-South) half widths for a rectangle.
    n_stars : int
        Number of stars.
    mag_range : (float, float)
        Brightest and faintest magnitude.
    zero_point : float
        Magnitude giving one electron per second on the detector.
    slope : float
        Logarithmic slope of the differential counts (0.3 is typical of Galactic fields).

    Returns
    -------
    pandas.DataFrame
        Columns ``ra_deg``, ``dec_deg``, ``mag``, ``flux_e_per_s``, brightest first.
    """
    m1, m2 = mag_range
    u = rng.uniform(size=n_stars)
    # Inverse CDF of p(m) ~ 10**(slope m) on [m1, m2].
    k = slope * np.log(10.0)
    if k == 0:
        mag = m1 + u * (m2 - m1)
    else:
        mag = np.log(np.exp(k * m1) + u * (np.exp(k * m2) - np.exp(k * m1))) / k
    hx, hy = np.broadcast_to(np.asarray(half_width_arcsec, dtype=np.float64), (2,))
    xi = rng.uniform(-hx, hx, n_stars)
    eta = rng.uniform(-hy, hy, n_stars)
    ra, dec = from_tangent_plane(xi, eta, ra0, dec0)
    table = pd.DataFrame(
        {"ra_deg": ra, "dec_deg": dec, "mag": mag, "flux_e_per_s": 10 ** (-0.4 * (mag - zero_point))}
    )
    return table.sort_values("mag", ignore_index=True)


@dataclass(frozen=True)
class Moffat:
    """Circular Moffat profile, normalised to unit integral over the plane (pixels)."""

    fwhm: float
    beta: float

    @property
    def alpha(self) -> float:
        return self.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def __call__(self, r2: np.ndarray) -> np.ndarray:
        a2 = self.alpha**2
        return (self.beta - 1.0) / (np.pi * a2) * (1.0 + r2 / a2) ** (-self.beta)

    def radius_enclosing(self, fraction: float) -> float:
        """Radius (pixels) inside which ``fraction`` of the flux falls."""
        return self.alpha * np.sqrt((1.0 - fraction) ** (1.0 / (1.0 - self.beta)) - 1.0)


@dataclass(frozen=True)
class Gaussian:
    """Circular Gaussian profile, normalised to unit integral over the plane (pixels)."""

    fwhm: float

    def __call__(self, r2: np.ndarray) -> np.ndarray:
        s2 = (self.fwhm / 2.3548200450309493) ** 2
        return np.exp(-0.5 * r2 / s2) / (2.0 * np.pi * s2)

    def radius_enclosing(self, fraction: float) -> float:
        s = self.fwhm / 2.3548200450309493
        return s * np.sqrt(-2.0 * np.log(1.0 - fraction))


@dataclass(frozen=True)
class PSF:
    """A point-spread function made of weighted profiles (weights sum to 1).

    Each component is drawn on its own stamp, large enough to hold all but
    ``1 - enclosed`` of its flux, and sampled ``oversample`` times per pixel side
    where it is narrow enough to need it.
    """

    components: tuple[tuple[float, Moffat | Gaussian], ...]
    enclosed: float = 0.9995

    @property
    def fwhm(self) -> float:
        """FWHM of the narrowest component (pixels), the one that sets the sampling."""
        return min(profile.fwhm for _, profile in self.components)


def _stamp(profile: Moffat | Gaussian, dx: float, dy: float, radius: int, oversample: int) -> np.ndarray:
    """Pixel-integrated profile on a (2r+1)^2 stamp, centred ``(dx, dy)`` from its middle pixel."""
    n = 2 * radius + 1
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    grid = np.arange(-radius, radius + 1, dtype=np.float64)
    xs = (grid[:, None] + sub[None, :]).ravel() - dx
    ys = (grid[:, None] + sub[None, :]).ravel() - dy
    values = profile(ys[:, None] ** 2 + xs[None, :] ** 2)
    return values.reshape(n, oversample, n, oversample).mean(axis=(1, 3))


def add_stars(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
    psf: PSF,
) -> None:
    """Add point sources to ``image`` in place.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image in electrons; modified in place.
    x, y : array_like
        0-based pixel positions of the sources (column, row); sources whose stamp misses the
        image are skipped, those on an edge are clipped.
    counts : array_like
        Total electrons of each source (the PSF integrates to one).
    psf : PSF
        The point-spread function.
    """
    ny, nx = image.shape
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    for weight, profile in psf.components:
        radius = int(np.ceil(profile.radius_enclosing(psf.enclosed)))
        oversample = int(np.clip(np.ceil(7.0 / profile.fwhm), 1, 9))
        for xc, yc, flux in zip(x, y, counts, strict=True):
            ix, iy = int(np.rint(xc)), int(np.rint(yc))
            if ix + radius < 0 or iy + radius < 0 or ix - radius >= nx or iy - radius >= ny:
                continue
            stamp = _stamp(profile, xc - ix, yc - iy, radius, oversample)
            x1, x2 = max(ix - radius, 0), min(ix + radius + 1, nx)
            y1, y2 = max(iy - radius, 0), min(iy + radius + 1, ny)
            image[y1:y2, x1:x2] += (weight * flux) * stamp[
                y1 - (iy - radius) : y2 - (iy - radius), x1 - (ix - radius) : x2 - (ix - radius)
            ]


def add_cosmic_rays(
    image: np.ndarray,
    rng: np.random.Generator,
    n_events: int,
    *,
    energy_range: tuple[float, float] = (300.0, 6000.0),
    max_length: int = 6,
) -> np.ndarray:
    """Add cosmic-ray hits (short straight tracks) to ``image`` in place.

    Returns a boolean mask of the pixels hit, for the truth files.
    """
    ny, nx = image.shape
    mask = np.zeros(image.shape, dtype=bool)
    for _ in range(n_events):
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        length = rng.integers(1, max_length + 1)
        angle = rng.uniform(0, np.pi)
        energy = rng.uniform(*energy_range)
        steps = np.arange(length)
        xs = np.clip(np.rint(x0 + steps * np.cos(angle)).astype(int), 0, nx - 1)
        ys = np.clip(np.rint(y0 + steps * np.sin(angle)).astype(int), 0, ny - 1)
        np.add.at(image, (ys, xs), energy / length)
        mask[ys, xs] = True
    return mask
