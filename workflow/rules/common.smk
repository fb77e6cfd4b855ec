# Configuration, dataset table and input functions shared by every rule.
# Nothing here runs a job: it reads and checks the inputs so that a bad table stops the
# workflow before the first job, with a message that names the file to fix.

import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from gemred.association import CalibrationRequest, match_bpm, match_calibration
from gemred.io import GemredInputError
from gemred.instruments.gmos import needs_fringe_correction
from gemred.provenance import software_version
from gemred.sky import associate_sky, separate_sky
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


wildcard_constraints:
    group="|".join(re.escape(group) for group in GROUPS) or "[^/]+",
    frame="|".join(
        re.escape(root) for root in FRAMES.loc[FRAMES["role"] == "science", "root"]
    )
    or "[^/]+",


# Instruments reduced by the GMOS rules (GSAOI has its own rules and targets, gsaoi.smk).
REDUCED_INSTRUMENTS = ("GMOS-N", "GMOS-S")


def members(group, roles=None):
    """Rows of one group (of the given roles), in time order."""
    rows = FRAMES[FRAMES["group"] == group]
    if roles is not None:
        rows = rows[rows["role"].isin(roles)]
    if rows.empty:
        raise WorkflowError(
            f"{config['datasets']}: no frame of group {group!r} with role {roles}"
        )
    return rows.sort_values("ut_datetime")


def first_row(group, roles=None):
    return members(group, roles).iloc[0].to_dict()


def calibration_group(group, kind, roles):
    """Name of the calibration group of ``kind`` that serves ``group`` (stops the run if none)."""
    try:
        return match_calibration(
            FRAMES, CalibrationRequest(kind, group, first_row(group, roles))
        )
    except GemredInputError as exc:
        raise WorkflowError(str(exc)) from None


def bpm_file(group, roles=None):
    """The static BPM for a group: the config's, else the table's best match, else none."""
    if config["calibrations"]["bpm"]:
        return [config["calibrations"]["bpm"]]
    try:
        found = match_bpm(FRAMES, group, first_row(group, roles))
    except GemredInputError as exc:
        raise WorkflowError(str(exc)) from None
    return [found] if found else []


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
    return explicit or processed("bias", calibration_group(group, "bias", roles))


def flat_for(group):
    explicit = config["calibrations"]["processed_flat"]
    return explicit or processed(
        "flat", calibration_group(group, "twilight_flat", ["science"])
    )


def flat_inputs(wildcards):
    group = wildcards.group
    return {
        "frames": list(members(group, ["twilight_flat"])["filename"]),
        "bias": bias_for(group, ["twilight_flat"]),
        "bpm": bpm_file(group, ["twilight_flat"]),
    }


def science_row(frame):
    rows = FRAMES[(FRAMES["root"] == frame) & (FRAMES["role"] == "science")]
    if rows.empty:
        raise WorkflowError(f"{config['datasets']}: no science frame {frame!r}")
    return rows.iloc[0].to_dict()


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
    science = FRAMES[
        (FRAMES["role"] == "science") & FRAMES["instrument"].isin(REDUCED_INSTRUMENTS)
    ]
    return (
        expand(
            f"{OUTDIR}/science/{{group}}_image.{{ext}}",
            group=sorted(science["group"].unique()),
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


def gsaoi_group_pattern(roles):
    """Regular expression matching the GSAOI groups of these roles (nothing if none)."""
    return "|".join(re.escape(group) for group in gsaoi_groups(roles)) or "(?!)"


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
    return explicit or processed("flat", calibration_group(group, "lamp_flat", [role]))


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


def gsaoi_sky_table(group):
    """Object frames of a GSAOI group and the sky frames each one gets (``separateSky``, ``associateSky``)."""
    rows = members(group, ["science", "standard"])
    options = config["separateSky"]
    try:
        objects, skies = separate_sky(
            rows,
            frac_fov=options["frac_FOV"],
            ref_obj=options["ref_obj"] or None,
            ref_sky=options["ref_sky"] or None,
        )
        table = associate_sky(objects, skies, **config["associateSky"])
    except GemredInputError as exc:
        raise WorkflowError(f"{config['datasets']}, group {group}: {exc}") from None
    return {
        raw_root(obj): [raw_root(sky) for sky in skies] for obj, skies in table.items()
    }


def gsaoi_sky_inputs(wildcards):
    row = gsaoi_row(wildcards.gsaoi_frame)
    skies = gsaoi_sky_table(row["group"])[wildcards.gsaoi_frame]
    return {"frames": [f"{OUTDIR}/frames/{root}_flatCorrected.fits" for root in skies]}


def gsaoi_stack_inputs(wildcards):
    """Sky-subtracted object frames, and every frame of the group for the WCS check."""
    objects = gsaoi_sky_table(wildcards.group)
    everyone = members(wildcards.group, ["science", "standard"])["root"]
    return {
        "frames": [f"{OUTDIR}/frames/{root}_skySubtracted.fits" for root in objects],
        "sequence": [f"{OUTDIR}/frames/{root}_flatCorrected.fits" for root in everyone],
    }


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
