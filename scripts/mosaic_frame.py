"""Rule mosaic_frame: one science frame calibrated (or taken flat-corrected and defringed),
mosaicked, with its source catalogue."""

from gemred.io import read_frame, write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gmos_science import reduce_to_mosaic


def main(smk) -> None:
    inputs = dict(smk.input.items())
    fringe_options = options(smk.params.fringe)
    fringe_options.pop("do_fringe", None)
    if "frame" in inputs:
        mosaic = reduce_to_mosaic(
            flat_corrected=read_frame(inputs["frame"], memmap=True),
            fringe=read_frame(inputs["fringe"], memmap=True),
            fringe_options=fringe_options,
            interpolant=smk.params.mosaic["interpolant"],
            detect=options(smk.params.detect),
        )
    else:
        mosaic = reduce_to_mosaic(
            raw_path=inputs["raw"],
            bias=read_frame(inputs["bias"], memmap=True),
            flat=read_frame(inputs["flat"], memmap=True),
            bpm_path=inputs["bpm"][0] if inputs["bpm"] else None,
            overscan=options(smk.params.overscan),
            interpolant=smk.params.mosaic["interpolant"],
            detect=options(smk.params.detect),
        )
    write_frame(mosaic, smk.output[0], read_later=False)  # only the stack reads it


run_job(snakemake, main)  # noqa: F821  (Snakemake injects `snakemake`)
