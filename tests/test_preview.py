"""The zscale PNG preview of a stack."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from PIL import Image

from gemred import dq
from gemred.frame import Extension, Frame
from gemred.preview import write_preview


def _frame(shape=(300, 500)) -> Frame:
    rng = np.random.default_rng(1)
    sci = rng.normal(100.0, 5.0, shape).astype(np.float32)
    sci[150:153, 400:403] = 1e5  # a bright star, near the top right
    mask = np.zeros(shape, dtype=np.uint16)
    mask[:, :20] = dq.NO_DATA  # a strip without data on the left
    header = fits.Header({"BUNIT": "electron"})
    return Frame(fits.Header(), [Extension(sci, header, None, mask)], "N20170614S0201_image")


def test_preview_is_zscaled_north_up_with_no_data_black(tmp_path):
    frame = _frame()
    path = write_preview(frame, tmp_path / "stack.png", max_pixels=250)
    with Image.open(path) as png:
        grey = np.asarray(png)
        title, comment = png.text["Title"], png.text["Comment"]
    assert grey.shape == (150, 250)  # binned 2x2 to fit 250 pixels
    assert title == "N20170614S0201_image (electron, zscale)"
    vmin, vmax = (float(v) for v in comment.split()[2:4])
    # zscale brackets the sky (100 +/- 2.5 after binning) tightly, not the star.
    assert 85 < vmin < 100 < vmax < 115
    sky = grey[:, 20:]
    assert 60 < np.median(sky) < 200
    assert np.all(grey[:, :10] == 0)  # no data: black
    # Row 0 of the image is the bottom of the picture: the star at row 151 of 300 (binned 75)
    # appears at picture row 150 - 1 - 75 = 74, column 200, saturated white.
    assert grey[74, 200] == 255
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left behind
