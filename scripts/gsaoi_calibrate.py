"""Rule gsaoi_calibrate: one raw GSAOI frame to flat-corrected electrons with VAR and DQ."""

from gemred.io import read_frame, write_frame
from gemred.logutils import run_job
from gemred.recipes.gsaoi_calibrations import calibrate_gsaoi


def main(smk) -> None:
    frame = calibrate_gsaoi(
        smk.input.raw,
        flat=read_frame(smk.input.flat, memmap=True),
        bpm_path=smk.input.bpm[0] if smk.input.bpm else None,
    )
    write_frame(frame, smk.output[0])


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
