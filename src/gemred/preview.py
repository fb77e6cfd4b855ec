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
    frame: Frame, path: str | os.PathLike, *, max_pixels: int = 1000, title: str | None = None
) -> Path:
    """Write a zscale-stretched greyscale PNG of a frame's first extension, North up.

    Parameters
    ----------
    frame : Frame
        The product (a stack or mosaic: one extension).
    path : path-like
        PNG file to write (atomically).
    max_pixels : int
        Longest side of the picture; larger images are shown binned by block averages.
    title : str, optional
        Stored as the PNG's ``Title`` text; the frame's root name, unit and stretch by default.
        The zscale limits are stored as ``Comment``.

    Returns
    -------
    pathlib.Path
        The PNG written: row 0 of the image at the bottom, pixels without data black.
    """
    # Pillow rather than matplotlib: the picture needs no axes, and matplotlib's import and
    # rendering took 2 s of the stack job.
    from astropy.visualization import ZScaleInterval
    from PIL import Image, PngImagePlugin

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
    finite = np.isfinite(image)
    vmin, vmax = ZScaleInterval().get_limits(image[finite]) if finite.any() else (0.0, 1.0)
    scaled = (np.clip(image, vmin, vmax) - vmin) * (255.0 / max(vmax - vmin, 1e-30))
    grey = np.where(finite, np.rint(scaled), 0).astype(np.uint8)
    text = PngImagePlugin.PngInfo()
    text.add_text("Title", title or f"{frame.root} ({ext.header.get('BUNIT', '')}, zscale)")
    text.add_text("Comment", f"zscale limits {vmin:.6g} {vmax:.6g} ; binned {step}x{step}")
    with atomic_output(path) as tmp:
        Image.fromarray(grey[::-1], mode="L").save(tmp, format="png", pnginfo=text)
    return Path(path)
