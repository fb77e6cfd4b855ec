"""PNG previews of products, displayed with IRAF's zscale limits (as DS9 users expect)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from gemred import dq
from gemred.frame import Frame
from gemred.io import atomic_output

__all__ = ["write_preview"]


def write_preview(
    frame: Frame, path: str | os.PathLike, *, max_pixels: int = 2000, title: str | None = None
) -> Path:
    """Write a zscale-stretched greyscale PNG of a frame's first extension.

    Parameters
    ----------
    frame : Frame
        The product (a stack or mosaic: one extension).
    path : path-like
        PNG file to write (atomically).
    max_pixels : int
        Longest side of the picture; larger images are shown binned by block averages.
    title : str, optional
        Title above the image; the frame's root name by default.

    Returns
    -------
    pathlib.Path
        The PNG written.
    """
    # Imported here: astropy.visualization brings in matplotlib, which only this job needs.
    # The object-oriented API without pyplot has no global figure state (safe in a worker
    # thread) and imports less.
    from astropy.visualization import ZScaleInterval
    from matplotlib.figure import Figure

    ext = frame[0]
    image = ext.sci.astype(np.float32)
    if ext.dq is not None:
        image = np.where(ext.dq & dq.NO_DATA, np.nan, image)
    step = max(1, int(np.ceil(max(image.shape) / max_pixels)))
    if step > 1:
        ny, nx = (image.shape[0] // step) * step, (image.shape[1] // step) * step
        blocks = image[:ny, :nx].reshape(ny // step, step, nx // step, step)
        with warnings.catch_warnings():  # blocks wholly without data stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            image = np.nanmean(blocks, axis=(1, 3))
    finite = image[np.isfinite(image)]
    vmin, vmax = ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)
    height = 8.0 * image.shape[0] / image.shape[1]
    fig = Figure(figsize=(8.0, max(2.0, height) + 0.6))
    ax = fig.subplots()
    ax.imshow(image, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title or f"{frame.root} ({ext.header.get('BUNIT', '')}, zscale)")
    ax.set_xticks([])
    ax.set_yticks([])
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    return Path(path)
