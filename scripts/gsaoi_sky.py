"""Rule gsaoi_sky: the sky frame of one GSAOI object frame, from its associated sky exposures,
and the frame with it subtracted and its sources detected (one job: the sky is not read back)."""

from gemred.io import read_frame, write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gsaoi_science import add_source_catalogs
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
    write_frame(sky, smk.output.sky, read_later=False)
    subtracted = sky_subtracted(read_frame(smk.input.frame, memmap=True), sky, options=settings)
    del sky
    write_frame(add_source_catalogs(subtracted, detect=options(smk.params.detect)), smk.output.subtracted)


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
