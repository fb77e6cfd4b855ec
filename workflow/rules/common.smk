# Configuration, dataset table and input functions shared by every rule.
# Nothing here runs a job: it reads and checks the inputs so that a bad table stops the
# workflow before the first job, with a message that names the file to fix.

import functools
import os
import re
import threading

import pandas as pd

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from gemred.association import CalibrationRequest, match_bpm, match_calibration
from gemred.caldb import CalibrationDB
from gemred.errors import GemredInputError
from gemred.instruments.gmos import needs_fringe_correction
from gemred.provenance import software_version
from gemred.sky import associate_sky, drift_tracers, separate_sky
from gemred.table import read_table

validate(config, schema="../schemas/config.schema.yaml")

# Every product and log lives under this folder; raw files are only read.
OUTDIR = os.path.normpath(config["output_dir"])

# Rows with these roles belong to no stacking group and produce nothing.
UNGROUPED_ROLES = ("ignore", "bpm")

# A param of every rule: changed library code reruns the jobs it touches (style.md "Rerun trap").
GEMRED_VERSION = software_version()


def load_datasets(path):
    """Read and check the dataset table; stop the workflow with the library's message."""
    try:
        table = read_table(path)
    except GemredInputError as exc:
        raise WorkflowError(
            f"{exc}\n(config: datasets={path}, relative to {os.getcwd()})"
        ) from None
    validate(table, schema="../schemas/datasets.schema.yaml")
    return table


def raw_root(path):
    """File name root of a raw file: N20170614S0201 for .../N20170614S0201.fits."""
    name = os.path.basename(path)
    return name[:-5] if name.endswith(".fits") else os.path.splitext(name)[0]


DATASETS = load_datasets(config["datasets"])

GROUPS = sorted(
    DATASETS.loc[~DATASETS["role"].isin(UNGROUPED_ROLES), "group"].dropna().unique()
)


FRAMES = DATASETS.assign(root=DATASETS["filename"].map(raw_root))


# Instruments reduced by the GMOS rules (GSAOI has its own rules and targets, gsaoi.smk).
REDUCED_INSTRUMENTS = ("GMOS-N", "GMOS-S")

GMOS_SCIENCE = FRAMES[
    (FRAMES["role"] == "science") & FRAMES["instrument"].isin(REDUCED_INSTRUMENTS)
]


def gmos_science_groups():
    """Pattern of the GMOS science groups (the GMOS per-frame and stack rules make nothing else)."""
    return group_pattern(sorted(GMOS_SCIENCE["group"].dropna().unique()))


wildcard_constraints:
    group="|".join(re.escape(group) for group in GROUPS) or "[^/]+",
    frame="|".join(re.escape(root) for root in GMOS_SCIENCE["root"]) or "(?!)",


# Planning calls the input functions once per job, and a night has hundreds of frames that share
# a few groups: the per-group answers (members, first frame, matched calibrations) are cached.
ROWS_BY_GROUP = {
    group: rows.sort_values("ut_datetime", kind="stable")
    for group, rows in FRAMES.groupby("group", sort=False)
}


def members(group, roles=None):
    """Rows of one group (of the given roles), in time order."""
    return _members(group, None if roles is None else tuple(roles))


@functools.cache
def _members(group, roles):
    rows = ROWS_BY_GROUP.get(group, FRAMES.iloc[:0])
    if roles is not None:
        rows = rows[rows["role"].isin(roles)]
    if rows.empty:
        raise WorkflowError(
            f"{config['datasets']}: no frame of group {group!r} with role {list(roles or [])}"
        )
    return rows


def first_row(group, roles=None):
    return dict(_first_row(group, None if roles is None else tuple(roles)))


@functools.cache
def _first_row(group, roles):
    return members(group, roles).iloc[0].to_dict()


# Calibrations the table cannot provide come from this database (config, $GEMRED_CALDB or per user).
CALDB = CalibrationDB(config["calibrations"]["caldb"])

# Kind of processed calibration in the database, per kind of raw calibration in the table.
STORED_KIND = {
    "bias": "processed_bias",
    "twilight_flat": "processed_flat",
    "lamp_flat": "processed_flat",
    "bpm": "bpm",
}


@functools.cache
def stored_calibration(kind, group, roles, table_refusal=None):
    """Best match in the calibration database for a group; stops the run if none or if changed.

    ``table_refusal`` says why the table had none; it is repeated in the message.
    """
    row = first_row(group, None if roles is None else list(roles))
    try:
        found = CALDB.find(STORED_KIND[kind], row, required=table_refusal is not None)
    except GemredInputError as exc:
        raise WorkflowError(
            f"{table_refusal}\n{exc}" if table_refusal else str(exc)
        ) from None
    return os.fspath(found) if found else None


# match_calibration looks only at the first frame of each role in each group (and at every BPM):
# giving it those rows instead of the whole table gives the same answer, faster.
CALIBRATION_CANDIDATES = pd.concat(
    [
        FRAMES[FRAMES["role"] != "bpm"]
        .sort_values(["group", "ut_datetime"], kind="stable")
        .drop_duplicates(["group", "role"]),
        FRAMES[FRAMES["role"] == "bpm"],
    ]
)


def made_or_stored(kind, group, roles):
    """Processed calibration of ``kind`` for a group: made in this run from the table, else stored."""
    return _made_or_stored(kind, group, tuple(roles))


@functools.cache
def _made_or_stored(kind, group, roles):
    try:
        source = match_calibration(
            CALIBRATION_CANDIDATES,
            CalibrationRequest(kind, group, first_row(group, roles)),
        )
    except GemredInputError as exc:
        return stored_calibration(kind, group, roles, str(exc))
    return processed("flat" if kind.endswith("_flat") else kind, source)


def bpm_file(group, roles=None):
    """The static BPM for a group: the config's, else the table's best match, else the database's."""
    if config["calibrations"]["bpm"]:
        return [config["calibrations"]["bpm"]]
    found = _matched_bpm(group, None if roles is None else tuple(roles))
    return [found] if found else []


@functools.cache
def _matched_bpm(group, roles):
    try:
        found = match_bpm(CALIBRATION_CANDIDATES, group, first_row(group, roles))
    except GemredInputError as exc:
        return stored_calibration("bpm", group, roles, str(exc))
    return found if found is not None else stored_calibration("bpm", group, roles)


def processed(kind, group):
    """Path of a processed calibration made by this workflow."""
    return f"{OUTDIR}/calibrations/{group}_{kind}.fits"


def bias_inputs(wildcards):
    group = wildcards.group
    return {
        "frames": list(members(group, ["bias"])["filename"]),
        "bpm": bpm_file(group, ["bias"]),
    }


def bias_for(group, roles):
    explicit = config["calibrations"]["processed_bias"]
    return explicit or made_or_stored("bias", group, roles)


def flat_for(group):
    explicit = config["calibrations"]["processed_flat"]
    return explicit or made_or_stored("twilight_flat", group, ["science"])


def flat_inputs(wildcards):
    group = wildcards.group
    return {
        "frames": list(members(group, ["twilight_flat"])["filename"]),
        "bias": bias_for(group, ["twilight_flat"]),
        "bpm": bpm_file(group, ["twilight_flat"]),
    }


SCIENCE_ROWS = {
    row["root"]: row
    for row in FRAMES[FRAMES["role"] == "science"].to_dict("records")[::-1]
}


def science_row(frame):
    if frame not in SCIENCE_ROWS:
        raise WorkflowError(f"{config['datasets']}: no science frame {frame!r}")
    return dict(SCIENCE_ROWS[frame])


@functools.cache
def wants_fringe(group):
    """Fringe correction for a science group: the config's choice, else DRAGONS' default."""
    choice = config["fringeCorrect"]["do_fringe"]
    if choice is not None:
        return bool(choice)
    row = first_row(group, ["science"])
    return needs_fringe_correction(row["detector_name"], row["filter_name"])


def fringe_for(group):
    return config["calibrations"]["processed_fringe"] or processed("fringe", group)


def calibrate_inputs(wildcards):
    row = science_row(wildcards.frame)
    return {
        "raw": row["filename"],
        "bias": bias_for(row["group"], ["science"]),
        "flat": flat_for(row["group"]),
        "bpm": bpm_file(row["group"], ["science"]),
    }


def fringe_inputs(wildcards):
    roots = members(wildcards.group, ["science"])["root"]
    return {"frames": [f"{OUTDIR}/frames/{root}_flatCorrected.fits" for root in roots]}


def mosaic_inputs(wildcards):
    """A fringed frame goes through its flat-corrected file and the fringe frame; others in one go."""
    row = science_row(wildcards.frame)
    if wants_fringe(row["group"]):
        return {
            "frame": f"{OUTDIR}/frames/{wildcards.frame}_flatCorrected.fits",
            "fringe": fringe_for(row["group"]),
        }
    return calibrate_inputs(wildcards)


def stack_inputs(wildcards):
    roots = members(wildcards.group, ["science"])["root"]
    return {"frames": [f"{OUTDIR}/frames/{root}_mosaic.fits" for root in roots]}


def all_targets():
    """Every science stack and its preview (so every calibration they need), and the GSAOI stacks."""
    return (
        expand(
            f"{OUTDIR}/science/{{group}}_image.{{ext}}",
            group=sorted(GMOS_SCIENCE["group"].unique()),
            ext=("fits", "png"),
        )
        + gsaoi_targets()
    )


# ---------------------------------------------------------------- GSAOI (rules in gsaoi.smk)
# GSAOI frames of the table that the workflow reduces: science (objects and skies) and standards.
GSAOI_FRAMES = FRAMES[
    (FRAMES["instrument"] == "GSAOI") & FRAMES["role"].isin(["science", "standard"])
]
GSAOI_FLAT_ROLES = ["lamp_on_flat", "lamp_off_flat"]


wildcard_constraints:
    gsaoi_frame="|".join(re.escape(root) for root in GSAOI_FRAMES["root"]) or "[^/]+",


def gsaoi_groups(roles):
    """Groups of GSAOI rows with the given roles."""
    rows = FRAMES[(FRAMES["instrument"] == "GSAOI") & FRAMES["role"].isin(roles)]
    return sorted(rows["group"].dropna().unique())


def group_pattern(groups):
    """Regular expression matching exactly these groups (nothing if none)."""
    return "|".join(re.escape(group) for group in groups) or "(?!)"


def gsaoi_group_pattern(roles):
    """Regular expression matching the GSAOI groups of these roles."""
    return group_pattern(gsaoi_groups(roles))


def gmos_group_pattern(roles):
    """Regular expression matching the GMOS groups of these roles (so that a GSAOI flat is not
    tried as a GMOS one)."""
    rows = FRAMES[
        FRAMES["instrument"].isin(REDUCED_INSTRUMENTS) & FRAMES["role"].isin(roles)
    ]
    return group_pattern(sorted(rows["group"].dropna().unique()))


def gsaoi_params(primitive):
    """A primitive's settings with the GSAOI overrides of ``config['gsaoi']`` on top."""
    return {**config[primitive], **config["gsaoi"].get(primitive, {})}


def gsaoi_row(frame):
    rows = GSAOI_FRAMES[GSAOI_FRAMES["root"] == frame]
    if rows.empty:
        raise WorkflowError(
            f"{config['datasets']}: no GSAOI science or standard frame {frame!r}"
        )
    return rows.iloc[0].to_dict()


def gsaoi_flat_for(group, role):
    explicit = config["calibrations"]["processed_flat"]
    return explicit or made_or_stored("lamp_flat", group, [role])


def gsaoi_flat_inputs(wildcards):
    group = wildcards.group
    return {
        "frames": list(members(group, GSAOI_FLAT_ROLES)["filename"]),
        "bpm": bpm_file(group, GSAOI_FLAT_ROLES),
    }


def gsaoi_calibrate_inputs(wildcards):
    row = gsaoi_row(wildcards.gsaoi_frame)
    return {
        "raw": row["filename"],
        "flat": gsaoi_flat_for(row["group"], row["role"]),
        "bpm": bpm_file(row["group"], [row["role"]]),
    }


def gsaoi_sky_table(group, *, of_skies=False, tracers=False):
    """Object frames of a GSAOI group and the sky frames each one gets (``separateSky``, ``associateSky``).

    With ``of_skies``, the sky frames instead, each with the other skies associated with it
    (the first-pass sky against which its sources are found, rule gsaoi_sky_mask). With
    ``tracers``, each object frame's drift tracers instead (:func:`gemred.sky.drift_tracers`).
    """
    rows = members(group, ["science", "standard"])
    options = config["separateSky"]
    try:
        objects, skies = separate_sky(
            rows,
            frac_fov=options["frac_FOV"],
            ref_obj=options["ref_obj"] or None,
            ref_sky=options["ref_sky"] or None,
        )
        table = associate_sky(
            skies if of_skies else objects, skies, **config["associateSky"]
        )
        if tracers:
            table = drift_tracers(objects, skies, table)
    except GemredInputError as exc:
        raise WorkflowError(f"{config['datasets']}, group {group}: {exc}") from None
    return {
        raw_root(obj): [raw_root(sky) for sky in skies] for obj, skies in table.items()
    }


def gsaoi_sky_inputs(wildcards):
    """Skies of one object frame, their masks and, when the sky follows the drift, the object
    frames that carry it beyond the skies' time span."""
    row = gsaoi_row(wildcards.gsaoi_frame)
    skies = gsaoi_sky_table(row["group"])[wildcards.gsaoi_frame]
    masked = config["skyCorrect"]["mask_objects"]
    tracers = []
    if config["skyCorrect"]["follow_drift"]:
        tracers = gsaoi_sky_table(row["group"], tracers=True)[wildcards.gsaoi_frame]
    return {
        "frame": f"{OUTDIR}/frames/{wildcards.gsaoi_frame}_flatCorrected.fits",
        "frames": [f"{OUTDIR}/frames/{root}_flatCorrected.fits" for root in skies],
        "masks": [f"{OUTDIR}/frames/{root}_skyMask.fits" for root in skies if masked],
        "tracers": [f"{OUTDIR}/frames/{root}_flatCorrected.fits" for root in tracers],
    }


def gsaoi_sky_mask_inputs(wildcards):
    row = gsaoi_row(wildcards.gsaoi_frame)
    others = gsaoi_sky_table(row["group"], of_skies=True)[wildcards.gsaoi_frame]
    return {
        "frame": f"{OUTDIR}/frames/{wildcards.gsaoi_frame}_flatCorrected.fits",
        "others": [f"{OUTDIR}/frames/{root}_flatCorrected.fits" for root in others],
    }


def gsaoi_stack_inputs(wildcards):
    """Sky-subtracted object frames, every frame of the group for the WCS check, and the
    reference catalogue if one is set (so that changing it remakes the stack)."""
    objects = gsaoi_sky_table(wildcards.group)
    everyone = members(wildcards.group, ["science", "standard"])["root"]
    refcat = config["determineAstrometricSolution"]["refcat"]
    return {
        "frames": [f"{OUTDIR}/frames/{root}_skySubtracted.fits" for root in objects],
        "sequence": [f"{OUTDIR}/frames/{root}_flatCorrected.fits" for root in everyone],
        "refcat": [refcat] if refcat else [],
    }


def astrometry_params():
    """determineAstrometricSolution settings other than the catalogue (an input)."""
    block = config["determineAstrometricSolution"]
    return {key: value for key, value in block.items() if key != "refcat"}


def gsaoi_magnitude(wildcards):
    """Catalogue magnitude of a standard group's star in its filter, or None (then no zero point)."""
    row = first_row(wildcards.group)
    if row["role"] != "standard":
        return None
    magnitudes = config["standard_magnitudes"].get(str(row["object"]).strip(), {})
    return magnitudes.get(str(row["filter_name"]).strip())


def gsaoi_targets():
    """The stack of every GSAOI science and standard group."""
    return expand(
        f"{OUTDIR}/science/{{group}}_image.fits",
        group=gsaoi_groups(["science", "standard"]),
    )


def cancel_scheduler_timers():
    """Cancel Snakemake's pending scheduler wake-ups (``threading.Timer`` threads running a
    function of Snakemake's), leaving any other timer of the process (the Reduce API runs the
    workflow inside the caller's Python) alone."""
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            owner = getattr(thread.function, "__module__", None) or ""
            if owner.startswith("snakemake."):
                thread.cancel()
