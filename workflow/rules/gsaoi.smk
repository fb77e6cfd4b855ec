# GSAOI imaging, DRAGONS' GSAOI recipes: lamp flats, per-frame calibration, sky frames made
# from the associated sky exposures and subtracted (and each frame's sources detected), then
# distortion-corrected alignment, resampling onto one North-up grid and a stack per science
# or standard group. The per-frame rules have priority 1 and the stacks 0: a group's stack
# that is ready waits while other frames have work left, so the stacks, which alone keep two
# cores busy only part of the time, end the run side by side.


ruleorder: gsaoi_flat > master_flat
ruleorder: gsaoi_stack > stack_science


rule gsaoi_flat:
    input:
        unpack(gsaoi_flat_inputs),
    output:
        f"{OUTDIR}/calibrations/{{group}}_flat.fits",
    log:
        f"{OUTDIR}/logs/gsaoi_flat/{{group}}.log",
    wildcard_constraints:
        group=gsaoi_group_pattern(GSAOI_FLAT_ROLES),
    conda:
        "../../environment.yml"
    params:
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/gsaoi_flat.py"


rule gsaoi_calibrate:
    input:
        unpack(gsaoi_calibrate_inputs),
    output:
        f"{OUTDIR}/frames/{{gsaoi_frame}}_flatCorrected.fits",
    log:
        f"{OUTDIR}/logs/gsaoi_calibrate/{{gsaoi_frame}}.log",
    priority: 1
    group:
        "gsaoi_calibrated"
    conda:
        "../../environment.yml"
    params:
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/gsaoi_calibrate.py"


rule gsaoi_sky_mask:
    input:
        unpack(gsaoi_sky_mask_inputs),
    output:
        temp(f"{OUTDIR}/frames/{{gsaoi_frame}}_skyMask.fits"),
    log:
        f"{OUTDIR}/logs/gsaoi_sky_mask/{{gsaoi_frame}}.log",
    priority: 1
    group:
        "gsaoi_sky_masks"
    conda:
        "../../environment.yml"
    params:
        sky=config["skyCorrect"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/gsaoi_sky_mask.py"


rule gsaoi_sky:
    input:
        unpack(gsaoi_sky_inputs),
    output:
        sky=f"{OUTDIR}/frames/{{gsaoi_frame}}_sky.fits",
        subtracted=f"{OUTDIR}/frames/{{gsaoi_frame}}_skySubtracted.fits",
    log:
        f"{OUTDIR}/logs/gsaoi_sky/{{gsaoi_frame}}.log",
    priority: 1
    group:
        "gsaoi_skies"
    conda:
        "../../environment.yml"
    params:
        sky=config["skyCorrect"],
        detect=config["detectSources"],
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/gsaoi_sky.py"


rule gsaoi_stack:
    input:
        unpack(gsaoi_stack_inputs),
    output:
        f"{OUTDIR}/science/{{group}}_image.fits",
    log:
        f"{OUTDIR}/logs/gsaoi_stack/{{group}}.log",
    wildcard_constraints:
        group=gsaoi_group_pattern(["science", "standard"]),
    conda:
        "../../environment.yml"
    params:
        align=gsaoi_params("adjustWCSToReference"),
        resample=gsaoi_params("resampleToCommonFrame"),
        stack=gsaoi_params("stackFrames"),
        detect=config["detectSources"],
        magnitude=gsaoi_magnitude,
        prepare=config["prepare"],
        astrometry=astrometry_params(),
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/gsaoi_stack.py"
