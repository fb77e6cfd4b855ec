"""The execution profiles: every rule has cluster resources, and per-frame jobs are grouped."""

from __future__ import annotations

import re

import yaml
from workflow_runs import REPO, make_table, planned_jobs, snakemake

PROFILES = REPO / "profiles"


def _rules() -> set[str]:
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        rules |= set(re.findall(r"^rule (\w+):", smk.read_text(), re.MULTILINE))
    return rules


def _grouped_rules() -> dict[str, str]:
    grouped = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for rule, group in re.findall(
            r"^rule (\w+):\n(?:    .*\n)*?    group:\n\s+\"(\w+)\"", smk.read_text(), re.M
        ):
            grouped[rule] = group
    return grouped


def test_slurm_profile_sizes_every_rule_and_groups_every_per_frame_rule():
    profile = yaml.safe_load((PROFILES / "slurm" / "config.v9+.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    resources = profile["set-resources"]
    assert set(resources) == _rules()
    for rule, wanted in resources.items():
        assert wanted["mem_mb"] >= 1000 and wanted["runtime"] >= 5, rule
    assert max(r["mem_mb"] for r in resources.values()) <= profile["resources"]["mem_mb"]
    grouped = _grouped_rules()
    assert grouped == {
        "calibrate_frame": "calibrated",
        "mosaic_frame": "mosaics",
        "gsaoi_calibrate": "gsaoi_calibrated",
        "gsaoi_sky_mask": "gsaoi_sky_masks",
        "gsaoi_sky": "gsaoi_skies",
    }
    components = dict(item.split("=") for item in profile["group-components"])
    assert set(components) == set(grouped.values())
    assert all(int(n) >= 10 for n in components.values())


def test_local_profile_runs_on_this_machine():
    profile = yaml.safe_load((PROFILES / "local" / "config.v9+.yaml").read_text())
    assert "executor" not in profile and profile["cores"] == "all"


def test_group_components_bundle_the_frames_of_a_night(gmos_starfield_small, tmp_path):
    table = make_table(gmos_starfield_small, tmp_path / "datasets.tsv")
    proc = snakemake(
        tmp_path, table, "-n", "--profile", str(PROFILES / "local"), "--group-components", "mosaics=2"
    )
    assert planned_jobs(proc.stdout)["mosaic_frame"] == 5
    blocks = proc.stdout.split("Group job mosaics")[1:]
    sizes = sorted(block.split("\n\n[")[0].count("rule mosaic_frame:") for block in blocks)
    assert sizes == [1, 2, 2]  # five frames, two per cluster job
