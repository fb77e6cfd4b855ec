"""Rule gsaoi_stack: sky-subtracted GSAOI frames aligned, resampled North up and stacked."""

from pathlib import Path

from gemred.io import write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gsaoi_science import stack_gsaoi


def main(smk) -> None:
    stacked = stack_gsaoi(
        smk.input.frames,
        sequence=smk.input.sequence,
        align=options(smk.params.align),
        resample=options(smk.params.resample),
        stack=options(smk.params.stack),
        detect=options(smk.params.detect),
        magnitude=smk.params.magnitude,
        bad_wcs=smk.params.prepare["bad_wcs"],
        scratch=Path(smk.output[0]).parent,
        refcat=smk.input.refcat[0] if smk.input.refcat else None,
        astrometry=options(smk.params.astrometry),
    )
    write_frame(stacked, smk.output[0], read_later=False)


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
