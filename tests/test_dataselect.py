"""DRAGONS-style file selection: tags, expressions, descriptor tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from raw_headers import gmos_bias

from gemred.dataselect import descriptor_table, expr_parser, select_data
from gemred.io import GemredInputError

BPM = "bpm_20170306_gmos-n_Ham_22_full_12amp.fits"


def _all_fits(raw: tuple[Path, dict[str, list[Path]]]) -> list[str]:
    return sorted(str(p) for p in raw[0].glob("*.fits"))


def _names(paths: list[str]) -> list[str]:
    return [Path(p).name for p in paths]


def test_gmos_tutorial_biases_by_tag(gmos_raw_dir):
    assert select_data(_all_fits(gmos_raw_dir), ["BIAS"]) == [str(p) for p in gmos_raw_dir[1]["bias"]]


def test_gmos_tutorial_flats_by_tag_and_filter(gmos_raw_dir):
    expr = expr_parser('filter_name=="i"')
    selected = select_data(_all_fits(gmos_raw_dir), ["FLAT"], [], expr)
    assert selected == [str(p) for p in gmos_raw_dir[1]["twilight"]]


def test_gmos_tutorial_science_by_xtags_and_expression(gmos_raw_dir):
    expr = expr_parser('(observation_class=="science" and filter_name=="i")')
    selected = select_data(_all_fits(gmos_raw_dir), [], ["CAL"], expr)
    assert selected == [str(p) for p in gmos_raw_dir[1]["science"]]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("exposure_time==10", [f"N20170614S{n:04d}.fits" for n in range(201, 206)]),
        ('exposure_time=="10"', [f"N20170614S{n:04d}.fits" for n in range(201, 206)]),
        ("exposure_time==40.0000001", ["N20170702S0178.fits"]),
        ("16 < exposure_time < 34", ["N20170702S0180.fits", "N20170702S0181.fits"]),
        ('ut_date=="2017-06-15"', [f"N20170615S{n:04d}.fits" for n in range(534, 539)]),
        ('ut_date>"2017-06-14" and ut_date<"2017-7-1"', [f"N20170615S{n:04d}.fits" for n in range(534, 539)]),
        ('ut_date=="2017-06-13" and ut_time<"16:30:30"', ["N20170613S0180.fits", "N20170613S0181.fits"]),
        ('ut_datetime<="2017-06-13T16:30:04.1"', ["N20170613S0180.fits", BPM]),
        ('telescope_x_offset>5 or telescope_x_offset<-5', ["N20170614S0202.fits", "N20170614S0204.fits"]),
        ("is_guided and not telescope_y_offset!=0", ["N20170614S0201.fits", "N20170614S0202.fits",
                                                    "N20170614S0204.fits"]),
        ('object=="Bias" and data_label=="GN-CAL20170615-3-538"', ["N20170615S0538.fits"]),
        ('observation_type=="BPM"', [BPM]),
        ('filter_name=="z"', []),
    ],
)
def test_expressions_on_gmos_tutorial(gmos_raw_dir, expression, expected):
    assert _names(select_data(_all_fits(gmos_raw_dir), expression=expression)) == expected


def test_gsaoi_tutorial_selections(gsaoi_raw_dir):
    files = _all_fits(gsaoi_raw_dir)
    kinds = gsaoi_raw_dir[1]
    assert select_data(files, ["LAMPON"]) == [str(p) for p in kinds["lamp_on"]]
    assert select_data(files, ["FLAT", "LAMPOFF"]) == [str(p) for p in kinds["lamp_off"]]
    science = select_data(files, [], ["CAL"], 'observation_class=="science"')
    assert science == [str(p) for p in kinds["science"] + kinds["sky"]]
    assert select_data(files, ["sky"]) == [str(p) for p in kinds["sky"]]
    assert select_data(files, [], ["CAL", "SKY"], "not is_guided") == []
    standards = select_data(files, [], ["CAL"], 'observation_class=="partnerCal" and object=="9132"')
    assert standards == [str(p) for p in kinds["standard"]]


def test_selection_keeps_input_order_and_path_form(gmos_raw_dir, monkeypatch):
    monkeypatch.chdir(gmos_raw_dir[0])
    files = ["N20170615S0534.fits", Path("N20170613S0180.fits"), "N20170614S0201.fits"]
    assert select_data(files, ["bias"]) == ["N20170615S0534.fits", "N20170613S0180.fits"]


def test_a_single_tag_string_is_one_tag(gmos_raw_dir):
    assert select_data(_all_fits(gmos_raw_dir), "bias") == [str(p) for p in gmos_raw_dir[1]["bias"]]


def test_empty_selection_is_an_empty_list(gmos_raw_dir):
    assert select_data(_all_fits(gmos_raw_dir), ["BIAS"], ["CAL"]) == []


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('filter_name=="i" and exposure_time==10', "filter_name == 'i' and exposure_time == 10.0"),
        ('(observation_class=="science" and filter_name=="i")',
         "observation_class == 'science' and filter_name == 'i'"),
        ('not (object=="Twilight" or coadds>1)', "not (object == 'Twilight' or coadds > 1)"),
        ("10 < exposure_time <= 40", "10.0 < exposure_time <= 40.0"),
        ("dec < -30", "dec < -30.0"),
        ('ut_date>="2017-06-14"', "ut_date >= '2017-06-14'"),
        ("", "True"),
    ],
)
def test_expr_parser_normalises_and_is_idempotent(text, canonical):
    assert expr_parser(text) == canonical
    assert expr_parser(canonical) == canonical


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('filter_name="i"', "use == to compare"),
        ('filtername=="i"', "'filtername' is not a descriptor"),
        ("filter_name==i", "compare a descriptor with a value"),
        ("filter_name==1", "cannot compare filter_name with 1"),
        ('exposure_time=="long"', "cannot compare exposure_time"),
        ('ut_date=="14/06/2017"', "cannot compare ut_date"),
        ('ut_time=="25:00:00"', "cannot compare ut_time"),
        ("is_guided==1", "cannot compare is_guided"),
        ('tags=="BIAS"', "select tags with tags="),
        ("exposure_time", "exposure_time is not true/false"),
        ('filter_name in ["i", "z"]', "only ==, !=, <, <=, >, >="),
        ('filter_name.upper()=="I"', "compare a descriptor with a value"),
        ("exposure_time==exposure_time", "compare a descriptor with a value"),
        ('__import__("os").system("true")', "is not allowed"),
        ("exposure_time + 1 > 2", "compare a descriptor with a value"),
        ("exposure_time > 1 + 1", "is not a literal value"),
        ('filter_name == ["i"]', "is not a literal value"),
    ],
)
def test_expr_parser_rejects_bad_expressions(text, fragment):
    with pytest.raises(ValueError) as info:
        expr_parser(text)
    assert isinstance(info.value, GemredInputError)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_expressions_are_never_executed(gmos_raw_dir, tmp_path):
    marker = tmp_path / "executed"
    code = f'__import__("pathlib").Path("{marker}").touch() or filter_name=="i"'
    with pytest.raises(GemredInputError):
        select_data(_all_fits(gmos_raw_dir), expression=code)
    assert not marker.exists()


def test_select_data_names_an_unreadable_input(gmos_raw_dir, tmp_path):
    broken = tmp_path / "N20170613S0999.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    with pytest.raises(GemredInputError, match="N20170613S0999.fits"):
        select_data([*_all_fits(gmos_raw_dir), str(broken)], ["BIAS"])


def test_missing_descriptor_values_never_match_except_not_equal(tmp_path):
    path = gmos_bias(tmp_path / "N20170613S0180.fits", dt.datetime(2017, 6, 13, 16), EXPTIME=None)
    assert select_data([path], expression="exposure_time<1") == []
    assert select_data([path], expression="exposure_time==0") == []
    assert select_data([path], expression="exposure_time!=0") == [str(path)]


def test_descriptor_table(gsaoi_raw_dir):
    files = [str(p) for p in gsaoi_raw_dir[1]["sky"]]
    table = descriptor_table(files, ["object", "exposure_time", "tags", "filename", "object"])
    assert list(table.columns) == ["filename", "object", "exposure_time", "tags"]
    assert list(table["filename"]) == files
    assert list(table["object"]) == ["NGC5128", "NGC5128"]
    assert list(table["exposure_time"]) == [60.0, 60.0]
    assert table["tags"].iat[0] == "GEMINI,GSAOI,IMAGE,RAW,SIDEREAL,SKY,SOUTH,UNPREPARED"


def test_descriptor_table_rejects_unknown_names(gsaoi_raw_dir):
    with pytest.raises(GemredInputError, match="unknown descriptor.*exptime"):
        descriptor_table(gsaoi_raw_dir[1]["sky"], ["object", "exptime"])
