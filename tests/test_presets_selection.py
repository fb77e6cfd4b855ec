"""Simulated presets get the tags and descriptors DRAGONS gives the tutorial files, and the
tutorials' dataselect calls return exactly the tutorial's files."""

from __future__ import annotations

from pathlib import Path

from gemred import dataselect
from gemred.cli import main
from gemred.descriptors import descriptors
from gemred.table import build_table

GMOS_BIASES = [f"N20170613S{n:04d}.fits" for n in range(180, 185)] + [
    f"N20170615S{n:04d}.fits" for n in range(534, 539)
]
GMOS_FLATS = [f"N20170702S{n:04d}.fits" for n in range(178, 183)]
GMOS_SCIENCE = [f"N20170614S{n:04d}.fits" for n in range(201, 206)]


def _names(paths) -> list[str]:
    return sorted(Path(p).name for p in paths)


def _raw(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.fits"))


def test_gmos_starfield_tags_and_descriptors(gmos_starfield_small: Path) -> None:
    for name in GMOS_BIASES:
        d = descriptors(gmos_starfield_small / name)
        assert {"GMOS", "NORTH", "RAW", "UNPREPARED", "BIAS", "CAL", "AT_ZENITH", "AZEL_TARGET"} <= set(
            d["tags"]
        )
        assert "IMAGE" not in d["tags"]
        assert d["observation_type"] == "BIAS" and d["exposure_time"] == 0.0
    for name in GMOS_FLATS:
        d = descriptors(gmos_starfield_small / name)
        assert {"GMOS", "IMAGE", "FLAT", "TWILIGHT", "CAL", "SIDEREAL"} <= set(d["tags"])
        assert d["observation_type"] == "OBJECT" and d["object"] == "Twilight"
        assert d["filter_name"] == "i"
    exptimes = [descriptors(gmos_starfield_small / n)["exposure_time"] for n in GMOS_FLATS]
    assert exptimes == [40.0, 34.0, 28.0, 22.0, 16.0]
    for name in GMOS_SCIENCE:
        d = descriptors(gmos_starfield_small / name)
        assert {"GMOS", "IMAGE", "RAW", "SIDEREAL"} <= set(d["tags"])
        assert not {"CAL", "FLAT", "BIAS"} & set(d["tags"])
        assert d["observation_class"] == "science" and d["exposure_time"] == 10.0
        assert d["binning"] == "2x2" and d["read_mode"] == "Normal" and d["gain_setting"] == "low"
        assert d["read_speed_setting"] == "slow" and d["detector_roi_setting"] == "Full Frame"
        assert d["detector_name"] == "Hamamatsu-N" and d["instrument"] == "GMOS-N"
        assert d["program_id"] == "GN-2017A-SV-151"
    bpm = descriptors(gmos_starfield_small / "bpm_20170306_gmos-n_Ham_22_full_12amp.fits")
    assert "BPM" in bpm["tags"] and "RAW" not in bpm["tags"]


def test_gmos_tutorial_selections(gmos_starfield_small: Path) -> None:
    all_files = _raw(gmos_starfield_small)
    biases = dataselect.select_data(all_files, ["BIAS"])
    assert _names(biases) == sorted(GMOS_BIASES)
    flats = dataselect.select_data(all_files, ["FLAT"], [], dataselect.expr_parser('filter_name=="i"'))
    assert _names(flats) == sorted(GMOS_FLATS)
    science = dataselect.select_data(
        all_files, [], ["CAL"], dataselect.expr_parser('(observation_class=="science" and filter_name=="i")')
    )
    assert _names(science) == sorted(GMOS_SCIENCE)
    by_object = dataselect.select_data(
        all_files, [], ["CAL"], dataselect.expr_parser('object=="starfield" and exposure_time==10')
    )
    assert _names(by_object) == sorted(GMOS_SCIENCE)
    assert dataselect.select_data(all_files, ["FLAT"], [], dataselect.expr_parser('filter_name=="g"')) == []


def test_gmos_dataset_table_roles_and_groups(gmos_starfield_small: Path) -> None:
    table = build_table([gmos_starfield_small])
    roles = table.set_index(table["filename"].map(lambda p: Path(p).name))["role"]
    assert all(roles[n] == "bias" for n in GMOS_BIASES)
    assert all(roles[n] == "twilight_flat" for n in GMOS_FLATS)
    assert all(roles[n] == "science" for n in GMOS_SCIENCE)
    groups = table.groupby("role")["group"].unique()
    assert list(groups["bias"]) == ["N20170613S0180"]
    assert list(groups["twilight_flat"]) == ["N20170702S0178"]
    assert list(groups["science"]) == ["N20170614S0201"]


def test_cli_select_matches_tutorial(gmos_starfield_small: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "science.lis"
    status = main(
        [
            "select",
            *_raw(gmos_starfield_small),
            "--xtags",
            "CAL",
            "--expr",
            'observation_class=="science" and filter_name=="i"',
            "-o",
            str(out),
        ]
    )
    assert status == 0
    assert _names(out.read_text().split()) == sorted(GMOS_SCIENCE)


def test_fringe_preset_selection(gmos_fringe_small: Path) -> None:
    files = _raw(gmos_fringe_small)
    science = dataselect.select_data(files, [], ["CAL"], dataselect.expr_parser('filter_name=="z"'))
    assert len(science) == 6
    assert all(descriptors(p)["instrument"] == "GMOS-S" for p in science)
    assert all(descriptors(p)["detector_name"] == "Hamamatsu-S" for p in science)


GSAOI_SCIENCE = [f"S20170505S{n:04d}.fits" for n in range(95, 111)]
GSAOI_LAMP_ON = [f"S20170505S{n:04d}.fits" for n in range(30, 45)]
GSAOI_LAMP_OFF = [f"S20170505S{n:04d}.fits" for n in range(60, 75)]
GSAOI_STANDARD = [f"S20170504S{n:04d}.fits" for n in range(114, 118)]


def test_gsaoi_tags_and_descriptors(gsaoi_offsetsky_small: Path) -> None:
    for name in GSAOI_LAMP_ON + GSAOI_LAMP_OFF:
        d = descriptors(gsaoi_offsetsky_small / name)
        lamp = "LAMPON" if name in GSAOI_LAMP_ON else "LAMPOFF"
        assert {"GSAOI", "SOUTH", "IMAGE", "FLAT", "DOMEFLAT", "CAL", lamp} <= set(d["tags"])
        assert d["filter_name"] == "Kshort"
    sky = 0
    for name in GSAOI_SCIENCE:
        d = descriptors(gsaoi_offsetsky_small / name)
        assert {"GSAOI", "IMAGE", "RAW"} <= set(d["tags"]) and "CAL" not in d["tags"]
        assert d["exposure_time"] == 60.0 and d["observation_class"] == "science"
        sky += "SKY" in d["tags"]
        assert d["is_guided"] == ("SKY" not in d["tags"])
    assert sky == 7
    for name in GSAOI_STANDARD:
        d = descriptors(gsaoi_offsetsky_small / name)
        assert d["observation_class"] == "partnerCal" and d["exposure_time"] == 30.0
        assert "STANDARD" not in d["tags"]


def test_gsaoi_tutorial_selections(gsaoi_offsetsky_small: Path) -> None:
    all_files = _raw(gsaoi_offsetsky_small)
    flats = dataselect.select_data(all_files, ["FLAT"], [], dataselect.expr_parser('filter_name=="Kshort"'))
    assert _names(flats) == sorted(GSAOI_LAMP_ON + GSAOI_LAMP_OFF)
    standards = dataselect.select_data(
        all_files, [], [], dataselect.expr_parser('observation_class=="partnerCal"')
    )
    assert _names(standards) == sorted(GSAOI_STANDARD)
    science = dataselect.select_data(
        all_files, [], [], dataselect.expr_parser('(observation_class=="science" and exposure_time==60.)')
    )
    assert _names(science) == sorted(GSAOI_SCIENCE)
    table = build_table([gsaoi_offsetsky_small])
    roles = table.set_index(table["filename"].map(lambda p: Path(p).name))
    assert (roles.loc[GSAOI_LAMP_ON, "role"] == "lamp_on_flat").all()
    assert (roles.loc[GSAOI_LAMP_OFF, "role"] == "lamp_off_flat").all()
    assert (roles.loc[GSAOI_SCIENCE, "role"] == "science").all()
    assert (roles.loc[GSAOI_STANDARD, "role"] == "standard").all()
    assert int(roles.loc[GSAOI_SCIENCE, "sky_candidate"].sum()) == 7
