"""Rule gsaoi_sky: the sky frame of one GSAOI object frame, from its associated sky exposures,
and the frame with it subtracted (one job: the sky is not read back)."""

from gemred.io import read_frame, write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gsaoi_sky import sky_frame, sky_subtracted


def main(smk) -> None:
    settings = options(smk.params.sky)
    sky = sky_frame(
        smk.input.frames,
        mask_paths=list(smk.input.masks) or None,
        options=settings,
        object_path=smk.input.frame,
        tracer_paths=list(smk.input.tracers),
    )
    write_frame(sky, smk.output.sky)
    write_frame(sky_subtracted(read_frame(smk.input.frame), sky, options=settings), smk.output.subtracted)


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
