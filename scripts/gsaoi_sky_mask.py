"""Rule gsaoi_sky_mask: the source masks of one GSAOI sky frame, found once for every sky it is in."""

from gemred.logutils import options, run_job
from gemred.recipes.gsaoi_sky import sky_mask, write_sky_mask


def main(smk) -> None:
    masks = sky_mask(smk.input.frame, smk.input.others, options=options(smk.params.sky))
    write_sky_mask(masks, smk.output[0], frame=smk.input.frame)


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
