"""Rule calibrate_frame: a raw science frame bias-subtracted, in electrons and flat-fielded."""

from gemred.io import read_frame, write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gmos_calibrations import calibrate_science


def main(smk) -> None:
    frame = calibrate_science(
        smk.input.raw,
        bias=read_frame(smk.input.bias, memmap=True),
        flat=read_frame(smk.input.flat, memmap=True),
        bpm_path=smk.input.bpm[0] if smk.input.bpm else None,
        overscan=options(smk.params.overscan),
    )
    write_frame(frame, smk.output[0])


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
