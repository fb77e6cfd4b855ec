"""gemred: reduce Gemini GMOS and GSAOI imaging, the DRAGONS way, with Snakemake.

``from gemred import dataselect, Reduce`` gives DRAGONS' Python interface; both are imported
on first use, so that ``import gemred`` (done by every workflow job) stays cheap.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gemred")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Reduce", "__version__", "dataselect", "logutils"]

#: Lazily imported names: name -> (module, attribute or None for the module itself).
_LAZY = {
    "Reduce": ("gemred.reduce", "Reduce"),
    "dataselect": ("gemred.dataselect", None),
    "logutils": ("gemred.logutils", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        msg = f"module 'gemred' has no attribute {name!r}"
        raise AttributeError(msg)
    module_name, attribute = _LAZY[name]
    module = import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
