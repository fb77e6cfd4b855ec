# Configuration, dataset table and input functions shared by every rule.
# Nothing here runs a job: it reads and checks the inputs so that a bad table stops the
# workflow before the first job, with a message that names the file to fix.

import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from gemred.io import GemredInputError
from gemred.provenance import software_version
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


DATASETS = load_datasets(config["datasets"])

GROUPS = sorted(
    DATASETS.loc[~DATASETS["role"].isin(UNGROUPED_ROLES), "group"].dropna().unique()
)


wildcard_constraints:
    group="|".join(re.escape(group) for group in GROUPS) or "[^/]+",


def group_frames(wildcards):
    """Raw files of one stacking group, in table order."""
    rows = DATASETS[
        (DATASETS["group"] == wildcards.group) & ~DATASETS["role"].isin(UNGROUPED_ROLES)
    ]
    return list(rows["filename"])


def all_targets():
    """What the default target asks for: one group description per stacking group."""
    return expand(f"{OUTDIR}/groups/{{group}}.tsv", group=GROUPS)
