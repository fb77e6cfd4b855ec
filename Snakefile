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


# Snakemake (9.x) re-arms a one-second scheduling timer, not a daemon thread, after every
# job; left running, it holds the finished command for up to a second. Nothing is left to
# schedule once the workflow has ended, so let the command return as soon as it is done.
onsuccess:
    cancel_scheduler_timers()


onerror:
    cancel_scheduler_timers()
