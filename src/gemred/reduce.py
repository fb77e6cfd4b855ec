"""The ``Reduce`` class: DRAGONS' Python interface, driving gemred's Snakemake workflow.

A program written for DRAGONS' ``recipe_system.reduction.coreReduce.Reduce`` works with the
import changed::

    from gemred import dataselect, Reduce

    reduce_bias = Reduce()
    reduce_bias.files.extend(list_of_biases)
    reduce_bias.runr()                  # -> N20170613S0180_bias.fits in the current folder

``runr()`` classifies the files (:func:`gemred.table.build_table`), writes their dataset
table, and runs the workflow through Snakemake's Python API for exactly the products those
files make: biases give a master bias, flats a master flat, science frames a stack. The
calibrations they need and do not make come from ``ucals``, else from the calibration
database (:mod:`gemred.caldb`), where the workflow stores every calibration it makes. The
workflow's working folder is ``.gemred/`` in the current folder: its products are cached
there, so running the same reduction again reuses them, and each product is copied to the
current folder under DRAGONS' name.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import yaml

from gemred.io import GemredInputError, atomic_output
from gemred.logutils import get_logger

__all__ = [
    "CALIBRATION_TYPES",
    "RECIPES",
    "Reduce",
    "ReduceError",
    "default_config",
    "parse_ucals",
    "parse_uparms",
    "workflow_snakefile",
]

#: Recipes per role of the input files, the default first: the product each makes, under the
#: workflow's output folder (``{group}``: the group's first frame). The workflow's rules
#: decide what an instrument can make; a product without a rule is refused by name.
RECIPES: dict[str, dict[str, str]] = {
    "bias": {"makeProcessedBias": "calibrations/{group}_bias.fits"},
    "twilight_flat": {"makeProcessedFlat": "calibrations/{group}_flat.fits"},
    "lamp_on_flat": {"makeProcessedFlat": "calibrations/{group}_flat.fits"},
    "science": {
        "reduce": "science/{group}_image.fits",
        "makeProcessedFringe": "calibrations/{group}_fringe.fits",
    },
    "standard": {"reduce": "science/{group}_image.fits"},
}
#: Roles that make no product of their own (a lamp-off flat is part of its lamp-on group).
_PASSIVE_ROLES = ("ignore", "bpm", "lamp_off_flat")
#: Workflow settings that are not primitive parameters.
_SETTINGS = ("datasets", "output_dir", "calibrations")
#: Calibration types ``ucals`` accepts (DRAGONS' names; ``processed_bpm`` is taken for ``bpm``).
CALIBRATION_TYPES = ("processed_bias", "processed_flat", "processed_fringe", "bpm")
_WORKDIR = ".gemred"
_OUTPUT_DIR = "products"

_log = get_logger("gemred.reduce")


class ReduceError(RuntimeError):
    """The workflow started but a job failed; the message names the job's log."""


def workflow_snakefile() -> Path:
    """The ``Snakefile`` of the gemred workflow this library belongs to.

    Returns
    -------
    pathlib.Path
        The Snakefile at the root of gemred's source tree.

    Raises
    ------
    GemredInputError
        If gemred is not installed from its source tree (the workflow is not packaged).
    """
    root = Path(str(resources.files("gemred"))).resolve().parents[1]
    snakefile = root / "Snakefile"
    if not snakefile.is_file():
        msg = (
            f"gemred's workflow is not next to the library ({snakefile} missing); install gemred "
            "from its source tree with 'pip install -e /path/to/gemred'"
        )
        raise GemredInputError(msg)
    return snakefile


def default_config() -> dict:
    """The workflow's default settings.

    Returns
    -------
    dict
        ``config/config.yaml`` of gemred's source tree, as read by the workflow.
    """
    path = workflow_snakefile().parent / "config" / "config.yaml"
    with open(path) as fh:
        return yaml.safe_load(fh)


def parse_uparms(uparms: Iterable, defaults: Mapping) -> dict[str, dict]:
    """Primitive parameter overrides as config blocks, checked against the known ones.

    Parameters
    ----------
    uparms : iterable
        ``('primitive:param', value)`` pairs or ``'primitive:param=value'`` strings, as
        DRAGONS' ``Reduce.uparms`` and ``reduce -p``. Without ``primitive:`` the value goes to
        every primitive that has the parameter. String values are read as YAML
        (``False``, ``3``, ``minmax``).
    defaults : mapping
        The workflow's settings (:func:`default_config`): which primitives and parameters exist.

    Returns
    -------
    dict
        ``{primitive: {param: value}}`` for the primitives changed.

    Raises
    ------
    GemredInputError
        For a malformed entry, an unknown primitive, or a parameter the primitive does not have.
    """
    blocks = {name: block for name, block in defaults.items() if name not in _SETTINGS}
    changed: dict[str, dict] = {}
    for item in uparms:
        name, value = _split_uparm(item)
        primitive, _, param = name.rpartition(":")
        if primitive:
            if primitive not in blocks:
                msg = f"uparms {item!r}: unknown primitive {primitive!r}; known: {', '.join(blocks)}"
                raise GemredInputError(msg)
            targets = [primitive]
        else:
            targets = [block for block, keys in blocks.items() if param in keys]
        missing = [block for block in targets if param not in blocks[block]]
        if missing or not targets:
            known = ", ".join(blocks[primitive]) if primitive else "none"
            where = f"primitive {primitive!r}" if primitive else "any primitive"
            msg = f"uparms {item!r}: {where} has no parameter {param!r}" + (
                f"; its parameters: {known}" if primitive else ""
            )
            raise GemredInputError(msg)
        for block in targets:
            changed.setdefault(block, {})[param] = value
    return changed


def _split_uparm(item: object) -> tuple[str, object]:
    if isinstance(item, str):
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            msg = f"uparms {item!r}: write 'primitive:parameter=value'"
            raise GemredInputError(msg)
        return name.strip(), yaml.safe_load(text) if text.strip() else None
    if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
        return item[0].strip(), item[1]
    msg = f"uparms {item!r}: give ('primitive:parameter', value) or 'primitive:parameter=value'"
    raise GemredInputError(msg)


def parse_ucals(ucals: Mapping | Iterable | None) -> dict[str, str]:
    """Explicit calibrations as absolute paths by calibration type.

    Parameters
    ----------
    ucals : mapping, iterable or None
        ``{'processed_bias': path, ...}``, or ``('processed_bias', path)`` pairs or
        ``'processed_bias:path'`` strings (DRAGONS' ``--user_cal``).

    Returns
    -------
    dict
        ``{type: absolute path}`` with types from :data:`CALIBRATION_TYPES`.

    Raises
    ------
    GemredInputError
        For an unknown calibration type, a malformed entry, or a file that does not exist.
    """
    if not ucals:
        return {}
    pairs = ucals.items() if isinstance(ucals, Mapping) else (_split_ucal(item) for item in ucals)
    found: dict[str, str] = {}
    for kind, path in pairs:
        kind = {"processed_bpm": "bpm"}.get(kind, kind)
        if kind not in CALIBRATION_TYPES:
            msg = f"ucals: unknown calibration type {kind!r}; use one of {', '.join(CALIBRATION_TYPES)}"
            raise GemredInputError(msg)
        full = Path(path).expanduser().absolute()
        if not full.is_file():
            msg = f"ucals: {kind} {full} does not exist"
            raise GemredInputError(msg)
        found[kind] = os.fspath(full)
    return found


def _split_ucal(item: object) -> tuple[str, str]:
    if isinstance(item, str) and ":" in item:
        kind, _, path = item.partition(":")
        return kind.strip(), path.strip()
    if isinstance(item, tuple | list) and len(item) == 2:
        return str(item[0]), os.fspath(item[1])
    msg = f"ucals {item!r}: give 'processed_bias:FILE' or ('processed_bias', FILE)"
    raise GemredInputError(msg)


class Reduce:
    """Reduce files the way DRAGONS' ``Reduce`` does, with gemred's Snakemake workflow.

    Attributes
    ----------
    files : list of str
        Raw files to reduce (all of one kind, or several kinds: each group makes its product).
    uparms : list
        Primitive parameter overrides: ``('primitive:param', value)`` or
        ``'primitive:param=value'`` (see :func:`parse_uparms`).
    ucals : dict or list
        Calibrations named explicitly, e.g. ``{'processed_bias': 'N20170613S0180_bias.fits'}``;
        they win over those made in the run, which win over the calibration database's.
    recipename : str or None
        Recipe where a kind of file has more than one (:data:`RECIPES`), e.g.
        ``makeProcessedFringe`` for science frames; None: the default recipe.
    output_filenames : list of str
        Products written to the current folder by the last :meth:`runr`.
    cores : int
        Cores the workflow may use (default: all).

    Examples
    --------
    >>> r = Reduce()  # doctest: +SKIP
    >>> r.files.extend(list_of_science)  # doctest: +SKIP
    >>> r.uparms.append(("stackFrames:reject_method", "minmax"))  # doctest: +SKIP
    >>> r.runr()  # doctest: +SKIP
    >>> r.output_filenames  # doctest: +SKIP
    ['N20170614S0201_image.fits']
    """

    def __init__(self, *, cores: int | None = None) -> None:
        self.files: list[str] = []
        self.uparms: list = []
        self.ucals: dict | list = {}
        self.recipename: str | None = None
        self.output_filenames: list[str] = []
        self.cores = cores or os.cpu_count() or 1

    def runr(self) -> list[str]:
        """Run the reduction of :attr:`files` and copy the products to the current folder.

        Returns
        -------
        list of str
            :attr:`output_filenames`.

        Raises
        ------
        GemredInputError
            For bad inputs, parameters or calibrations, or when a needed calibration is
            found nowhere (nothing has run then).
        ReduceError
            When a job of the workflow failed.
        """
        from gemred.table import build_table, write_table

        if not self.files:
            msg = "Reduce: no files to reduce; add raw files to Reduce.files"
            raise GemredInputError(msg)
        defaults = default_config()
        config = self._config(defaults)
        table = build_table([os.fspath(f) for f in self.files])
        products = self._products(table)
        work = Path(_WORKDIR).absolute()
        digest = hashlib.sha256("\n".join(sorted(map(str, table["filename"]))).encode()).hexdigest()
        config["datasets"] = os.fspath(write_table(table, work / "tables" / f"{digest[:16]}.tsv"))
        _log.info("reducing %d file(s) into %s", len(table), ", ".join(Path(p).name for p in products))
        _run_workflow(config, [f"{_OUTPUT_DIR}/{p}" for p in products], work=work, cores=self.cores)
        self.output_filenames = [_publish(work / _OUTPUT_DIR / p) for p in products]
        return self.output_filenames

    def _config(self, defaults: Mapping) -> dict:
        config = copy.deepcopy(dict(defaults))
        for block, values in parse_uparms(self.uparms, defaults).items():
            config[block].update(values)
        config["calibrations"].update(parse_ucals(self.ucals))
        config["output_dir"] = _OUTPUT_DIR
        return config

    def _products(self, table) -> list[str]:
        """Products of the files' groups, by the recipe of each role."""
        products: list[str] = []
        active = table[~table["role"].isin(_PASSIVE_ROLES)]
        if active.empty:
            msg = "Reduce: none of the files makes a product (only BPMs or files to ignore)"
            raise GemredInputError(msg)
        for role, rows in active.groupby("role", sort=False):
            recipes = RECIPES.get(role, {})
            recipe = self.recipename or next(iter(recipes), None)
            if recipe not in recipes:
                msg = (
                    f"Reduce: no recipe {recipe!r} for {role} files such as {rows['filename'].iloc[0]}; "
                    f"recipes for them: {', '.join(recipes) or 'none yet'}"
                )
                raise GemredInputError(msg)
            products += [recipes[recipe].format(group=g) for g in sorted(rows["group"].unique())]
        return products


def _run_workflow(config: dict, targets: list[str], *, work: Path, cores: int) -> None:
    """Run the workflow in ``work`` for ``targets`` through Snakemake's Python API."""
    from snakemake.api import SnakemakeApi
    from snakemake.exceptions import WorkflowError
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    work.mkdir(parents=True, exist_ok=True)
    try:
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=cores),
                config_settings=ConfigSettings(config=config),
                snakefile=workflow_snakefile(),
                workdir=work,
            )
            dag = workflow.dag(DAGSettings(targets=frozenset(targets)))
            dag.execute_workflow(executor="local")
    except WorkflowError as exc:
        # Snakemake raises the same error for a bad plan and for a failed job; these are its words
        # for the latter (the plan, with every input check, is made before any job starts).
        if "did not complete successfully" in str(exc):
            msg = f"a job of the workflow failed; its log is under {work / _OUTPUT_DIR / 'logs'}"
            raise ReduceError(msg) from exc
        raise GemredInputError(str(exc)) from None


def _publish(product: Path) -> str:
    """Copy a product to the current folder (atomically) and return its name there."""
    name = product.name
    with atomic_output(Path(name)) as tmp:
        shutil.copyfile(product, tmp)
    return name
