"""Shared pytest fixtures: hand-made raw files (``raw_headers``), simulated presets (``simulated``).

Workflow runs store their calibrations in a calibration database, by default the user's
(``~/.gemred``). Tests never touch it: a session's module-wide runs share one database of their
own, and every test function starts with an empty one, so calibrations stored by one test are
never matched in another.
"""

from __future__ import annotations

import os

import pytest

from gemred.caldb import CALDB_ENV

pytest_plugins = ("raw_headers", "simulated")


@pytest.fixture(scope="session", autouse=True)
def _session_caldb(tmp_path_factory):
    db = tmp_path_factory.mktemp("session-caldb") / "cal_manager.db"
    old = os.environ.get(CALDB_ENV)
    os.environ[CALDB_ENV] = str(db)
    yield db
    if old is None:
        os.environ.pop(CALDB_ENV, None)
    else:
        os.environ[CALDB_ENV] = old


@pytest.fixture(autouse=True)
def _test_caldb(tmp_path_factory, monkeypatch):
    db = tmp_path_factory.mktemp("caldb") / "cal_manager.db"
    monkeypatch.setenv(CALDB_ENV, str(db))
    return db
