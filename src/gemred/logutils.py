"""Logging set-up, shaped like DRAGONS' ``gempy.utils.logutils``.

``logutils.config(file_name="reduce.log")`` sends gemred's messages to that file and to the
terminal; Snakemake jobs call it with their ``log:`` file so each job keeps its own log.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["config", "get_logger"]

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def get_logger(name: str = "gemred") -> logging.Logger:
    """The logger of a gemred module (``gemred.<module>``)."""
    return logging.getLogger(name)


def config(
    file_name: str | os.PathLike | None = None, mode: str = "standard", *, stream: bool = True
) -> logging.Logger:
    """Configure the ``gemred`` logger.

    Parameters
    ----------
    file_name : path-like, optional
        Log file, appended to (created with its folder if needed).
    mode : {'standard', 'quiet', 'debug'}
        ``standard`` logs INFO and above; ``quiet`` only warnings; ``debug`` everything.
    stream : bool
        Also log to standard error.

    Returns
    -------
    logging.Logger
        The configured ``gemred`` logger.
    """
    levels = {"standard": logging.INFO, "quiet": logging.WARNING, "debug": logging.DEBUG}
    if mode not in levels:
        msg = f"unknown logging mode {mode!r}; choose one of {', '.join(levels)}"
        raise ValueError(msg)
    logger = logging.getLogger("gemred")
    logger.setLevel(levels[mode])
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    if file_name is not None:
        os.makedirs(os.path.dirname(os.path.abspath(file_name)), exist_ok=True)
        handler = logging.FileHandler(file_name, mode="a")
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if stream:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def options(mapping: dict | None) -> dict:
    """Primitive parameters from the config, without the ``null`` ones (meaning: the default)."""
    return {key: value for key, value in (mapping or {}).items() if value is not None}


def run_job(smk, main, *, calibration: bool = False) -> None:
    """Run a Snakemake script's ``main(smk)`` with the job's log file, timing and a logged traceback.

    Products written with :func:`gemred.io.write_frame` during ``main`` record the job's
    provenance (:func:`gemred.provenance.job`): software, commit, parameters, inputs.

    Parameters
    ----------
    smk : snakemake.script.Snakemake
        The object Snakemake gives a ``script:`` rule.
    main : callable
        The job's work.
    calibration : bool, optional
        The job's outputs are processed calibrations: unless the config says
        ``calibrations: store: false``, they are added to the calibration database
        (``calibrations: caldb``) in one transaction once made.

    Notes
    -----
    Before ``main`` runs, numpy is told not to ask for transparent huge pages
    (:func:`_use_small_pages`) and the C library's allocator to keep the memory the job frees
    for its next arrays (:func:`_keep_freed_memory`).

    On success the job's process ends here (exit status 0) once its log and standard streams
    are flushed, without the interpreter's teardown: clearing the modules of numpy, astropy and
    scipy and collecting what the job made takes about 0.15 s, in each of the dozens of jobs
    of a reduction, for nothing that Snakemake reads. A failure raises as usual.
    """
    import time

    from gemred import provenance

    logger = config(file_name=smk.log[0] if smk.log else None)
    _use_small_pages()
    _keep_freed_memory()
    start = time.perf_counter()
    logger.info(
        "rule %s (gemred %s): %s", smk.rule, provenance.software_version(), ", ".join(map(str, smk.output))
    )
    try:
        with provenance.job(smk.rule, inputs=list(smk.input), params=dict(smk.params.items())):
            main(smk)
        if calibration:
            _store(smk, logger)
    except Exception:
        logger.exception("rule %s failed", smk.rule)
        raise
    logger.info("rule %s done in %.2f s", smk.rule, time.perf_counter() - start)
    _end_process()


#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _use_small_pages() -> None:
    """Stop numpy asking the kernel for transparent huge pages for its large arrays.

    numpy advises the kernel (``madvise``) to back every array of 4 MB or more with huge
    pages, unless ``NUMPY_MADVISE_HUGEPAGE=0`` was set when numpy was imported, which a job
    script has done before this runs. The kernel then faults such memory in 2 MB at a time;
    on a virtual machine whose host takes back the guest's free memory (free page reporting),
    first touches of huge pages cost 5-6 ms per MB against 0.55 ms per MB for 4 kB pages
    (256 MB arrays touched in new processes). A job uses each array a few times, so fewer TLB
    misses do not pay that back: the full-size GMOS benchmark took 23.1-23.7 s with small
    pages against 24.4-25.4 s (3 interleaved runs).
    Where numpy has no such switch nothing changes.
    """
    import numpy as np

    multiarray = getattr(getattr(np, "_core", None) or getattr(np, "core", None), "multiarray", None)
    set_madvise = getattr(multiarray, "_set_madvise_hugepage", None)
    if set_madvise is not None:
        set_madvise(False)


def _keep_freed_memory() -> None:
    """Make glibc's ``malloc`` keep the memory this process frees, to reuse it, for good.

    By default glibc gives large blocks (numpy arrays of more than 32 MB, and smaller ones
    freed at the top of its heap) back to the system as soon as they are freed, so the next
    array of a step gets pages that the kernel must fault in and zero again, at about 0.5 ms
    per MB on a virtual machine whose host takes back the guest's free memory (free page
    reporting). Here every block comes from the heap and none is returned: the full-size
    GMOS benchmark took 23.1-23.7 s with this against 24.7-26.1 s without (3 interleaved
    runs, small pages in both). The heap's fragmentation adds 1-9 % to the jobs' peak memory
    in the benchmarks, which is why only workflow jobs, processes that end with their step,
    do this. All threads share one heap (one arena): memory that one thread frees would
    otherwise stay in that thread's arena, out of reach of the others, which raised the
    GMOS stack's peak from 955 to 1252 MB when it read the next frame on a second thread.
    Where the C library has no ``mallopt`` nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    mallopt(_M_ARENA_MAX, 1)


def _end_process() -> None:
    """Exit with status 0 now, skipping the interpreter's teardown (see :func:`run_job`).

    Files, executors and database connections are closed by the ``with`` blocks that opened
    them; only the logging handlers and the standard streams are left to flush.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _store(smk, logger: logging.Logger) -> None:
    """Add a job's processed calibrations to the calibration database the config names."""
    settings = smk.config.get("calibrations") or {}
    if not settings.get("store", True):
        return
    from gemred.caldb import CalibrationDB

    db = CalibrationDB(settings.get("caldb"))
    for path in db.add(smk.output):
        logger.info("stored %s in the calibration database %s", path, db.path)
