# First stage: split the dataset table into one table per stacking group; the stacking rules
# of later stages take these members as their inputs.


rule describe_dataset:
    input:
        table=config["datasets"],
        frames=group_frames,
    output:
        f"{OUTDIR}/groups/{{group}}.tsv",
    log:
        f"{OUTDIR}/logs/describe_dataset/{{group}}.log",
    conda:
        "../../environment.yml"
    params:
        gemred_version=GEMRED_VERSION,
    script:
        "../../scripts/describe_group.py"
