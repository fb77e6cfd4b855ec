"""Rule gsaoi_sky: the sky frame of one GSAOI object frame, from its associated sky exposures."""

from gemred.io import write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gsaoi_sky import sky_frame


def main(smk) -> None:
    sky = sky_frame(
        smk.input.frames, mask_paths=list(smk.input.masks) or None, options=options(smk.params.sky)
    )
    write_frame(sky, smk.output[0])


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
