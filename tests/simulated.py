"""Session fixtures: simulated presets at small size, made once per test session (per worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemred.simulation.presets import simulate


@pytest.fixture(scope="session")
def gmos_starfield_small(tmp_path_factory) -> Path:
    """Raw folder of the small ``gmos-starfield`` preset, seed 1."""
    out = tmp_path_factory.mktemp("gmos-starfield")
    simulate("gmos-starfield", out, size="small", seed=1)
    return out


@pytest.fixture(scope="session")
def gmos_fringe_small(tmp_path_factory) -> Path:
    """Raw folder of the small ``gmos-fringe`` preset, seed 2."""
    out = tmp_path_factory.mktemp("gmos-fringe")
    simulate("gmos-fringe", out, size="small", seed=2)
    return out


@pytest.fixture(scope="session")
def gsaoi_offsetsky_small(tmp_path_factory) -> Path:
    """Raw folder of the small ``gsaoi-offsetsky`` preset, seed 3."""
    out = tmp_path_factory.mktemp("gsaoi-offsetsky")
    simulate("gsaoi-offsetsky", out, size="small", seed=3)
    return out
