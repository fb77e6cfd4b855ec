"""Rule master_bias: one master bias from a group of raw biases."""

from gemred.io import write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gmos_calibrations import make_master_bias


def main(smk) -> None:
    bias = make_master_bias(
        smk.input.frames,
        bpm_path=smk.input.bpm[0] if smk.input.bpm else None,
        overscan=options(smk.params.overscan),
        stack=options(smk.params.stack),
    )
    write_frame(bias, smk.output[0])


run_job(snakemake, main, calibration=True)  # noqa: F821  (Snakemake injects `snakemake`)
