"""Rule preview: a zscale PNG of a science stack."""

from gemred.io import read_frame
from gemred.logutils import run_job
from gemred.preview import write_preview


def main(smk) -> None:
    write_preview(read_frame(smk.input[0]), smk.output[0])


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
