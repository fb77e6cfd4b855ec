"""Rule gsaoi_flat: one normalised GSAOI flat from lamp-on and lamp-off dome flats."""

from gemred.io import write_frame
from gemred.logutils import run_job
from gemred.recipes.gsaoi_calibrations import make_lamp_flat


def main(smk) -> None:
    flat = make_lamp_flat(smk.input.frames, bpm_path=smk.input.bpm[0] if smk.input.bpm else None)
    write_frame(flat, smk.output[0])


run_job(snakemake, main, calibration=True)  # noqa: F821  (Snakemake injects `snakemake`)
