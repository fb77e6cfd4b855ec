"""Shared pytest fixtures: hand-made raw files (``raw_headers``), simulated presets (``simulated``)."""

pytest_plugins = ("raw_headers", "simulated")
