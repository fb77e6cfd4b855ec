"""Which gemred code made a product: the package version plus a hash of its source.

Snakemake reruns a ``script:`` rule when the script changes, but not when a library module the
script imports changes. Every rule of the workflow therefore takes :func:`software_version` as a
``param``: edit any ``gemred/*.py`` file and the param changes, so Snakemake reruns what the new
code touches (``--rerun-triggers params``, on by default).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gemred import __version__

__all__ = ["source_hash", "software_version"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_hash() -> str:
    """Hash every ``.py`` file of the installed gemred package.

    Returns
    -------
    str
        Hex SHA-256 over the sorted relative paths and contents of the package's Python files
        (``__pycache__`` excluded), so it changes with any code edit, rename, addition or
        removal, and not with file times or the install location.

    Examples
    --------
    >>> len(source_hash())
    64
    """
    return _hash_tree(_PACKAGE_DIR)


def _hash_tree(root: Path) -> str:
    """SHA-256 over the sorted relative paths and contents of the ``.py`` files under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts:
            continue
        digest.update(relative.as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def software_version() -> str:
    """The gemred version with the first 12 digits of :func:`source_hash` as local label.

    Returns
    -------
    str
        For example ``"0.1.0+src.3f2a9c1d0b4e"``; written into product headers and used as a
        Snakemake ``param`` so that changed library code reruns the rules that use it.

    Examples
    --------
    >>> software_version().startswith(__version__.split("+")[0])
    True
    """
    return f"{__version__.split('+')[0]}+src.{source_hash()[:12]}"
