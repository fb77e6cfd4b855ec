"""The ``gemred`` command line: ``gemred <command> ...``.

Each sub-command is a pair of small functions: ``_add_<name>_parser(subparsers)`` declares
its arguments and sets ``run=_run_<name>``, and ``_run_<name>(args)`` does the work and
returns the exit status. Adding a command is adding such a pair and listing the first in
:data:`_SUBCOMMANDS`. Input errors (:class:`gemred.io.GemredInputError`) end the program
with one line ``gemred: error: <message>`` on stderr and exit status 2, without traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from gemred import __version__
from gemred.dataselect import descriptor_table, expr_parser, select_data
from gemred.descriptors import DESCRIPTOR_NAMES
from gemred.io import GemredInputError, atomic_output
from gemred.table import ROLES, build_table, write_table

__all__ = ["main"]

_DEFAULT_SHOW = "observation_type,observation_class,object,filter_name,exposure_time"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gemred`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        Exit status: 0 on success, 1 when ``select`` matches no file, 2 on an input error.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (GemredInputError, OSError) as exc:
        print(f"gemred: error: {exc}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemred",
        description="Reduce Gemini GMOS and GSAOI imaging the DRAGONS way, with Snakemake.",
        epilog=_examples(
            "gemred table raw/ -o dataset.tsv",
            "gemred select raw/*.fits --tags BIAS -o biases.lis",
            "gemred show raw/*.fits -d object,exposure_time",
            "gemred reduce @biases.lis",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gemred {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_parser in _SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _subparser(
    subparsers: argparse._SubParsersAction, name: str, summary: str, *examples: str
) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=_examples(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# --- gemred table -------------------------------------------------------------------------


def _add_table_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _subparser(
        subparsers,
        "table",
        "Classify raw files into roles and stacking groups and write the dataset table.",
        "gemred table raw/ -o dataset.tsv",
        "gemred table raw/N2017061*.fits bpm_20170306_gmos-n_Ham_22_full_12amp.fits -o dataset.tsv",
    )
    parser.add_argument(
        "raw",
        nargs="+",
        metavar="RAW_DIR",
        help="folder of raw *.fits files (README, truth/ and other files are skipped), "
        "or FITS files, or @list files naming them",
    )
    parser.add_argument("-o", "--output", required=True, metavar="TABLE", help="the table to write (.tsv)")
    parser.set_defaults(run=_run_table)


def _run_table(args: argparse.Namespace) -> int:
    table = build_table(_expand_inputs(args.raw))
    path = write_table(table, args.output)
    counts = Counter(table["role"])
    groups = table[table["role"] != "ignore"].groupby("role")["group"].nunique()
    parts = [
        f"{counts[role]} {role}" + (f" in {groups[role]} group(s)" if role in groups else "")
        for role in ROLES
        if counts[role]
    ]
    print(f"wrote {path}: {len(table)} files: {', '.join(parts)}")
    return 0


# --- gemred select ------------------------------------------------------------------------


def _add_select_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _subparser(
        subparsers,
        "select",
        "Print the files that have given tags and match an expression (DRAGONS dataselect).",
        "gemred select raw/*.fits --tags BIAS -o biases.lis",
        "gemred select raw/*.fits --tags FLAT --expr 'filter_name==\"i\"' -o flats.lis",
        "gemred select raw/*.fits --xtags CAL \\\n"
        '      --expr \'(observation_class=="science" and filter_name=="i")\'',
        "gemred select @all.lis --expr 'exposure_time==10 and ut_date>=\"2017-06-14\"'",
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="FITS files, or @list files naming them (one path a line, relative to the current folder)",
    )
    parser.add_argument(
        "--tags",
        nargs="+",
        action="extend",
        default=[],
        metavar="TAG",
        help="tags every selected file has, e.g. BIAS or FLAT TWILIGHT (commas also separate)",
    )
    parser.add_argument(
        "--xtags",
        nargs="+",
        action="extend",
        default=[],
        metavar="TAG",
        help="tags no selected file has, e.g. CAL",
    )
    parser.add_argument(
        "--expr",
        default="True",
        metavar="EXPR",
        help=f"descriptor expression, e.g. 'filter_name==\"i\" and exposure_time>5'; descriptors: "
        f"{', '.join(DESCRIPTOR_NAMES)}",
    )
    parser.add_argument("-o", "--output", metavar="LIST", help="also write the selection to this file")
    parser.set_defaults(run=_run_select)


def _run_select(args: argparse.Namespace) -> int:
    files = _expand_inputs(args.files)
    tags = _split_tags(args.tags)
    xtags = _split_tags(args.xtags)
    expression = expr_parser(args.expr)
    selected = select_data(files, tags, xtags, expression)
    if not selected:
        criteria = f"tags: {','.join(tags) or 'none'}; xtags: {','.join(xtags) or 'none'}; expr: {expression}"
        print(f"gemred select: no file matched ({criteria}) among {len(files)} input files", file=sys.stderr)
        return 1
    if args.output:
        _write_lines(Path(args.output), selected)
    print("\n".join(selected))
    return 0


def _split_tags(values: Iterable[str]) -> list[str]:
    return [tag.strip().upper() for value in values for tag in value.split(",") if tag.strip()]


# --- gemred show --------------------------------------------------------------------------


def _add_show_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _subparser(
        subparsers,
        "show",
        "Print a table of descriptor values, one row per file (DRAGONS showd).",
        "gemred show raw/*.fits -d object,exposure_time",
        "gemred show @science.lis -d ut_datetime,telescope_x_offset,telescope_y_offset,tags",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="FITS files, or @list files naming them")
    parser.add_argument(
        "-d",
        "--descriptors",
        default=_DEFAULT_SHOW,
        metavar="NAME[,NAME...]",
        help=f"descriptors to show (default {_DEFAULT_SHOW}); any of {', '.join(DESCRIPTOR_NAMES)}",
    )
    parser.set_defaults(run=_run_show)


def _run_show(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.descriptors.split(",") if name.strip()]
    table = descriptor_table(_expand_inputs(args.files), names)
    print(table.to_string(index=False))
    return 0


# --- gemred simulate ----------------------------------------------------------------------


def _add_simulate_parser(subparsers: argparse._SubParsersAction) -> None:
    from gemred.simulation.presets import PRESETS

    parser = _subparser(
        subparsers,
        "simulate",
        "Write a simulated raw Gemini dataset (the DRAGONS tutorials' files) and its truth.",
        "gemred simulate gmos-starfield --out raw/",
        "gemred simulate gsaoi-offsetsky --out raw_gsaoi/ --size full --seed 7",
    )
    parser.add_argument("preset", choices=sorted(PRESETS), help="which dataset to simulate")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the raw files (truth in DIR/truth)"
    )
    parser.add_argument(
        "--size",
        choices=("small", "full"),
        default="small",
        help="small: every amplifier/array cropped, a few MB (default); full: real dimensions",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.set_defaults(run=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    import time

    from gemred.simulation.presets import simulate

    start = time.perf_counter()
    paths = simulate(args.preset, args.out, size=args.size, seed=args.seed)
    nbytes = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(
        f"wrote {len(paths)} files of {args.preset} ({args.size}) to {args.out} "
        f"in {time.perf_counter() - start:.1f} s, {nbytes / 1e6:.1f} MB with truth/"
    )
    return 0


# --- gemred reduce ------------------------------------------------------------------------


def _add_reduce_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _subparser(
        subparsers,
        "reduce",
        "Reduce raw files with the workflow and write the products here (DRAGONS reduce).",
        "gemred reduce @biases.lis                 # -> N20170613S0180_bias.fits",
        "gemred reduce @flats.lis                  # bias from the calibration database",
        "gemred reduce @science.lis -p stackFrames:reject_method=minmax",
        "gemred reduce @science.lis --user_cal processed_bias:N20170613S0180_bias.fits",
        "gemred reduce @science.lis -r makeProcessedFringe",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="raw FITS files, or @list files naming them")
    parser.add_argument(
        "-p",
        "--param",
        dest="uparms",
        nargs="+",
        action="extend",
        default=[],
        metavar="PRIMITIVE:PARAM=VALUE",
        help="set a primitive's parameter (a block of config/config.yaml), e.g. stackFrames:nlow=1",
    )
    parser.add_argument(
        "--user_cal",
        "--user-cal",
        dest="ucals",
        nargs="+",
        action="extend",
        default=[],
        metavar="TYPE:FILE",
        help="use this calibration for every frame; TYPE is processed_bias, processed_flat, "
        "processed_fringe or bpm",
    )
    parser.add_argument("-r", "--recipe", metavar="NAME", help="recipe, where a kind of file has several")
    parser.add_argument("--cores", type=int, metavar="N", help="cores the workflow may use (default: all)")
    parser.set_defaults(run=_run_reduce)


def _run_reduce(args: argparse.Namespace) -> int:
    from gemred.reduce import Reduce, ReduceError

    reduction = Reduce(cores=args.cores)
    reduction.files.extend(_expand_inputs(args.files))
    reduction.uparms.extend(args.uparms)
    reduction.ucals = list(args.ucals)
    reduction.recipename = args.recipe
    try:
        names = reduction.runr()
    except ReduceError as exc:
        print(f"gemred: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(names))
    return 0


# --- gemred caldb -------------------------------------------------------------------------


def _add_caldb_parser(subparsers: argparse._SubParsersAction) -> None:
    summary = (
        "Manage the calibration database of processed calibrations and BPMs (DRAGONS caldb); "
        "by default $GEMRED_CALDB, else ~/.gemred/cal_manager.db."
    )
    examples = (
        "gemred caldb init",
        "gemred caldb add calibrations/N20170613S0180_bias.fits calibrations/N20170702S0178_flat.fits",
        "gemred caldb add raw/bpm_20170306_gmos-n_Ham_22_full_12amp.fits",
        "gemred caldb list",
        "gemred caldb remove calibrations/N20170613S0180_bias.fits",
        "gemred caldb --db project/cal_manager.db init --wipe",
    )
    parser = _subparser(subparsers, "caldb", summary, *examples)
    db_help = "the database file (default: $GEMRED_CALDB, else ~/.gemred/cal_manager.db)"
    parser.add_argument("--db", metavar="PATH", help=db_help)
    # --db is accepted after the action too; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    for name, text, example in (
        ("init", "Create the database (harmless if it exists); --wipe forgets every entry.", examples[0]),
        ("add", "Record processed calibrations or BPMs; a file already there is updated.", examples[1]),
        ("list", "Print a table of the calibrations recorded.", examples[3]),
        ("remove", "Forget calibrations (the files are not deleted).", examples[4]),
    ):
        action = actions.add_parser(
            name,
            parents=[common],
            help=text,
            description=text,
            epilog=_examples(example),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "init":
            action.add_argument("-w", "--wipe", action="store_true", help="forget every calibration recorded")
        elif name in ("add", "remove"):
            action.add_argument(
                "files", nargs="+", metavar="FILE", help="FITS files, or @list files naming them"
            )
    parser.set_defaults(run=_run_caldb)


def _run_caldb(args: argparse.Namespace) -> int:
    from gemred.caldb import CalibrationDB

    db = CalibrationDB(args.db)
    if args.action == "init":
        existed = db.path.exists()
        db.init(wipe=args.wipe)
        kept = "" if args.wipe or not existed else f" (already there; {len(db.list())} calibration(s) kept)"
        print(f"{'wiped' if args.wipe and existed else 'initialised'} calibration database {db.path}{kept}")
        return 0
    if args.action == "add":
        added = db.add(_expand_inputs(args.files))
        print(f"added {len(added)} file(s) to {db.path}")
        return 0
    if args.action == "remove":
        files = _expand_inputs(args.files)
        removed = {Path(p) for p in db.remove(files)}
        print(f"removed {len(removed)} file(s) from {db.path}")
        missing = [f for f in files if Path(f).expanduser().resolve() not in removed]
        for name in missing:
            print(f"gemred caldb: not in the database: {name}", file=sys.stderr)
        return 1 if missing else 0
    table = db.list()
    if table.empty:
        print(f"no calibrations in {db.path}")
        return 0
    columns = ["kind", "instrument", "binning", "read_mode", "filter_name", "ut_datetime", "path"]
    print(table[columns].to_string(index=False))
    print(f"{len(table)} calibration(s) in {db.path}")
    return 0


#: Sub-command parser builders, in the order ``gemred --help`` lists them.
_SUBCOMMANDS = (
    _add_simulate_parser,
    _add_table_parser,
    _add_select_parser,
    _add_show_parser,
    _add_reduce_parser,
    _add_caldb_parser,
)


# --- helpers shared by the commands -------------------------------------------------------


def _expand_inputs(items: Iterable[str]) -> list[str]:
    """Replace each ``@list`` argument by the paths it names (one a line; blanks, ``#`` skipped)."""
    paths: list[str] = []
    for item in items:
        if not item.startswith("@"):
            paths.append(item)
            continue
        listing = Path(item[1:])
        try:
            lines = listing.read_text().splitlines()
        except OSError as exc:
            msg = f"{listing}: cannot read list file ({exc.strerror or exc})"
            raise GemredInputError(msg) from None
        paths.extend(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return paths


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    """Write ``lines`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_output(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))
