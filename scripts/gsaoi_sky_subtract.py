"""Rule gsaoi_sky_subtract: a flat-corrected GSAOI frame minus its sky frame."""

from gemred.io import read_frame, write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gsaoi_sky import sky_subtracted


def main(smk) -> None:
    frame = sky_subtracted(
        read_frame(smk.input.frame), read_frame(smk.input.sky), options=options(smk.params.sky)
    )
    write_frame(frame, smk.output[0])


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
