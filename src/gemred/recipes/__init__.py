"""Recipes: ordered chains of primitives that turn raw files into calibrations and science frames."""

from gemred.recipes.gmos_calibrations import calibrate_science, make_master_bias, make_master_flat

__all__ = ["make_master_bias", "make_master_flat", "calibrate_science"]
