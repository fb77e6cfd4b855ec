"""Rule fringe_frame: the fringe frame of one science group, from its flat-corrected frames."""

from gemred.io import read_frame, write_frame
from gemred.logutils import options, run_job
from gemred.recipes.gmos_science import make_fringe


def main(smk) -> None:
    frames = [read_frame(path, memmap=True) for path in smk.input.frames]
    fringe = make_fringe(frames, options=options(smk.params.fringe), detect=options(smk.params.detect))
    write_frame(fringe, smk.output[0])


run_job(snakemake, main, calibration=True)  # noqa: F821  (Snakemake injects `snakemake`)
