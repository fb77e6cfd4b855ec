# gemred: reduce Gemini GMOS and GSAOI imaging the DRAGONS way.
# Settings: config/README.md. Rules: workflow/rules/. Science code: src/gemred/.


import os

from snakemake.utils import min_version

min_version("8.20")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/science.smk"
include: "workflow/rules/gsaoi.smk"


rule all:
    default_target: True
    input:
        all_targets(),
