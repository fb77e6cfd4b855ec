"""flag_cosmic_rays_by_stacking on synthetic aligned frames with known cosmic rays."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from gemred import dq
from gemred.frame import Extension, Frame
from gemred.primitives.cosmic_rays import flag_cosmic_rays_by_stacking

SKY, READ_VAR = 500.0, 25.0
SIGMA = float(np.sqrt(SKY + READ_VAR))


def _frames(rng: np.random.Generator, shape=(200, 200)) -> list[Frame]:
    """Three flat-sky frames; the third has no data on the right half, so only two cover it."""
    frames = []
    for k in range(3):
        sci = (SKY + rng.normal(0.0, SIGMA, shape)).astype(np.float32)
        var = np.full(shape, SKY + READ_VAR, dtype=np.float32)
        flags = np.zeros(shape, dtype=np.uint16)
        if k == 2:
            flags[:, shape[1] // 2 :] = dq.NO_DATA
            sci[flags != 0] = 0.0
        frames.append(Frame(fits.Header(), [Extension(sci, fits.Header(), var, flags)], f"frame{k}"))
    return frames


def test_cosmic_rays_found_where_three_and_where_only_two_frames_overlap():
    rng = np.random.default_rng(3)
    frames = _frames(rng)
    rows = rng.choice(np.arange(10, 190), 40, replace=False)
    cols = np.concatenate([rng.integers(10, 90, 20), rng.integers(110, 190, 20)])
    # 12 sigma: in the two-frame half the median of the pair (their mean) would leave such a
    # hit only 6 sigma above it, under the 7-sigma threshold.
    frames[0][0].sci[rows, cols] += np.float32(12 * SIGMA)
    # A 4x4 hit in the second frame, which the pair's mean would show as a source.
    block = (slice(150, 154), slice(150, 154))
    frames[1][0].sci[block] += np.float32(12 * SIGMA)
    flagged = flag_cosmic_rays_by_stacking(frames, hsigma=7.0, dilation=0)
    hits = (flagged[0][0].dq & dq.COSMIC_RAY) != 0
    assert hits[rows[:20], cols[:20]].all(), "three-frame half"
    assert hits[rows[20:], cols[20:]].all(), "two-frame half"
    assert ((flagged[1][0].dq[block] & dq.COSMIC_RAY) != 0).all(), "block in the two-frame half"
    # Noise alone flags almost nothing: a 7-sigma excess over the other frame of a pair is a
    # 4.9-sigma difference, expected in about 0.01 of the 20000 pixel pairs per frame.
    false = [int(((f[0].dq & dq.COSMIC_RAY) != 0).sum()) for f in flagged]
    assert false[0] - 40 <= 2 and false[1] - 16 <= 2 and false[2] <= 2, false
    # The inputs keep their DQ; only cosmic-ray bits are added.
    assert not (frames[0][0].dq & dq.COSMIC_RAY).any()
    np.testing.assert_array_equal(flagged[2][0].dq & ~np.uint16(dq.COSMIC_RAY), frames[2][0].dq)


def test_cosmic_rays_found_where_one_frame_alone_has_data():
    """Beside another frame's chip gap and a third's bad columns one frame alone covers the
    sky: its cosmic rays are found against its own neighbourhood, its stars are kept."""
    rng = np.random.default_rng(8)
    frames = _frames(rng)
    frames[2][0].dq[:] = 0
    frames[2][0].sci[:, 100:] = (SKY + rng.normal(0.0, SIGMA, (200, 100))).astype(np.float32)
    frames[1][0].dq[:, 95:135] = dq.NO_DATA
    frames[2][0].dq[:, 105:145] = dq.BAD_PIXEL
    lone = np.zeros((200, 200), bool)
    lone[:, 105:135] = True
    yy, xx = np.indices((200, 200))
    star = 150 * SIGMA * np.exp(-((xx - 120.3) ** 2 + (yy - 60.6) ** 2) / (2 * 1.7**2))
    for frame in frames:
        frame[0].sci += star.astype(np.float32)
    rows = rng.choice(np.arange(100, 195), 15, replace=False)
    cols = rng.integers(107, 133, 15)
    frames[0][0].sci[rows, cols] += np.float32(12 * SIGMA)
    block = (slice(20, 22), slice(110, 112))
    frames[0][0].sci[block] += np.float32(12 * SIGMA)
    flagged = flag_cosmic_rays_by_stacking(frames, hsigma=7.0, dilation=0)
    hits = (flagged[0][0].dq & dq.COSMIC_RAY) != 0
    assert hits[rows, cols].all() and hits[block].all()
    assert not hits[np.hypot(xx - 120.3, yy - 60.6) < 8].any(), "the star is not a cosmic ray"
    # Noise alone: a 7-sigma excess over a 25-pixel median (itself 0.25 sigma noisy) on
    # 6000 lone pixels is expected about 0.001 times.
    others = hits & lone
    others[rows, cols] = others[block] = False
    assert others.sum() == 0
