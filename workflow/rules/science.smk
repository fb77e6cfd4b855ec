# Science frames: calibrated and mosaicked one by one, then aligned and stacked per group
# (the stack's PNG preview is drawn by the same job: a job of its own mostly started Python).


rule calibrate_frame:
    input:
        unpack(calibrate_inputs),
    output:
        f"{OUTDIR}/frames/{{frame}}_flatCorrected.fits",
    log:
        f"{OUTDIR}/logs/calibrate_frame/{{frame}}.log",
    group:
        "calibrated"
    conda:
        "../../environment.yml"
    params:
        overscan=config["overscanCorrect"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/calibrate_frame.py"


rule mosaic_frame:
    input:
        unpack(mosaic_inputs),
    output:
        f"{OUTDIR}/frames/{{frame}}_mosaic.fits",
    log:
        f"{OUTDIR}/logs/mosaic_frame/{{frame}}.log",
    group:
        "mosaics"
    conda:
        "../../environment.yml"
    params:
        overscan=config["overscanCorrect"],
        fringe=config["fringeCorrect"],
        mosaic=config["mosaicDetectors"],
        detect=config["detectSources"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/mosaic_frame.py"


rule stack_science:
    input:
        unpack(stack_inputs),
    output:
        image=f"{OUTDIR}/science/{{group}}_image.fits",
        preview=report(
            f"{OUTDIR}/science/{{group}}_image.png",
            caption="../report/preview.rst",
            category="Stacks",
        ),
    log:
        f"{OUTDIR}/logs/stack_science/{{group}}.log",
    wildcard_constraints:
        group=gmos_science_groups(),
    conda:
        "../../environment.yml"
    params:
        align=config["adjustWCSToReference"],
        resample=config["resampleToCommonFrame"],
        cosmic_rays=config["flagCosmicRaysByStacking"],
        stack=config["stackFrames"],
        detect=config["detectSources"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/stack_science.py"
