# Processed calibrations: master biases, twilight flats and fringe frames, one per group.


rule master_bias:
    input:
        unpack(bias_inputs),
    output:
        f"{OUTDIR}/calibrations/{{group}}_bias.fits",
    log:
        f"{OUTDIR}/logs/master_bias/{{group}}.log",
    conda:
        "../../environment.yml"
    params:
        overscan=config["overscanCorrect"],
        stack=config["stackBiases"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/master_bias.py"


rule master_flat:
    input:
        unpack(flat_inputs),
    output:
        f"{OUTDIR}/calibrations/{{group}}_flat.fits",
    log:
        f"{OUTDIR}/logs/master_flat/{{group}}.log",
    wildcard_constraints:
        group=gmos_group_pattern(["twilight_flat"]),
    conda:
        "../../environment.yml"
    params:
        overscan=config["overscanCorrect"],
        stack=config["stackFlats"],
        threshold=config["thresholdFlatfield"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/master_flat.py"


rule fringe_frame:
    input:
        unpack(fringe_inputs),
    output:
        f"{OUTDIR}/calibrations/{{group}}_fringe.fits",
    log:
        f"{OUTDIR}/logs/fringe_frame/{{group}}.log",
    conda:
        "../../environment.yml"
    params:
        fringe=config["makeFringeFrame"],
        detect=config["detectSources"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/fringe_frame.py"
