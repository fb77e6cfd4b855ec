"""The error gemred raises for inputs it cannot reduce (imported without astropy, so that the
workflow's Snakefile, which catches it, starts quickly)."""

__all__ = ["GemredInputError"]


class GemredInputError(ValueError):
    """An input file or selection that cannot be reduced; the message names file and fix."""
