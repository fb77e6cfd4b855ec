"""Rule stack_science: the mosaics of one science group aligned and stacked into ``_image``,
with its PNG preview."""

from gemred.io import write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gmos_science import stack_science


def main(smk) -> None:
    stacked = stack_science(
        list(smk.input.frames),  # read one at a time by the recipe, bounding memory
        align=options(smk.params.align),
        resample=options(smk.params.resample),
        cosmic_rays=options(smk.params.cosmic_rays),
        stack=options(smk.params.stack),
        detect=options(smk.params.detect),
        preview=smk.output.preview,
    )
    write_frame(stacked, smk.output.image, read_later=False)


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
