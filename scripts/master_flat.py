"""Rule master_flat: one normalised twilight flat from a group of raw flats."""

from gemred.io import read_frame, write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gmos_calibrations import make_master_flat


def main(smk) -> None:
    flat = make_master_flat(
        smk.input.frames,
        bias=read_frame(smk.input.bias, memmap=True),
        bpm_path=smk.input.bpm[0] if smk.input.bpm else None,
        overscan=options(smk.params.overscan),
        stack=options(smk.params.stack),
        threshold=options(smk.params.threshold),
    )
    write_frame(flat, smk.output[0])


run_job(snakemake, main, calibration=True)  # noqa: F821  (Snakemake injects `snakemake`)
