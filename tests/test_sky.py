"""Sky separation and association (gemred.sky) on the simulated GSAOI offset-to-sky sequence."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest

from gemred.io import GemredInputError
from gemred.sky import associate_sky, drift_tracers, frame_positions, group_pointings, separate_sky
from gemred.table import build_table


@pytest.fixture(scope="module")
def science(gsaoi_offsetsky_small) -> pd.DataFrame:
    table = build_table([gsaoi_offsetsky_small])
    return table[table["role"] == "science"].reset_index(drop=True)


@pytest.fixture(scope="module")
def truth_roles(gsaoi_offsetsky_small) -> dict[str, str]:
    truth = pd.read_csv(gsaoi_offsetsky_small / "truth" / "frames.csv")
    return dict(zip(truth["filename"], truth["role"], strict=True))


def _base(names) -> set[str]:
    return {os.path.basename(name) for name in names}


def _seconds(a: str, b: str) -> float:
    return abs((dt.datetime.fromisoformat(a) - dt.datetime.fromisoformat(b)).total_seconds())


def _rows(offsets, *, start="2017-05-05T03:00:00", step=100.0, **extra) -> list[dict]:
    """Hand-made frame descriptors at the given (x, y) offsets, one every ``step`` seconds."""
    t0 = dt.datetime.fromisoformat(start)
    rows = []
    for i, (x, y) in enumerate(offsets):
        row = {
            "filename": f"/raw/f{i:02d}.fits",
            "ut_datetime": (t0 + dt.timedelta(seconds=i * step)).isoformat(),
            "exposure_time": 60.0,
            "filter_name": "Kshort",
            "read_mode": "FOWLER",
            "detector_roi_setting": "Full Frame",
            "coadds": 1,
            "ra": 201.365,
            "dec": -43.019,
            "telescope_x_offset": x,
            "telescope_y_offset": y,
            "sky_candidate": False,
            "observation_id": "GS-2017A-Q-29-13",
        }
        row.update(extra)
        rows.append(row)
    return rows


def test_tutorial_sequence_separated_exactly(science, truth_roles):
    assert len(science) == 16
    objects, skies = separate_sky(science)
    expected_obj = {name for name, role in truth_roles.items() if role == "science_object"}
    expected_sky = {name for name, role in truth_roles.items() if role == "science_sky"}
    assert len(expected_obj) == 9 and len(expected_sky) == 7
    assert _base(objects["filename"]) == expected_obj
    assert _base(skies["filename"]) == expected_sky
    assert isinstance(objects, pd.DataFrame) and list(objects.columns) == list(science.columns)


def test_tutorial_sequence_ignores_guiding_when_not_needed(science, truth_roles):
    # The offsets alone separate the fields: the group nearer the base position is the object.
    objects, skies = separate_sky(science.assign(sky_candidate=False))
    assert _base(objects["filename"]) == {n for n, r in truth_roles.items() if r == "science_object"}
    assert _base(skies["filename"]) == {n for n, r in truth_roles.items() if r == "science_sky"}


def test_tutorial_sequence_association(science, truth_roles):
    objects, skies = separate_sky(science)
    table = associate_sky(objects, skies)
    assert list(table) == list(objects["filename"])
    times = dict(zip(science["filename"], science["ut_datetime"], strict=True))
    for obj, chosen in table.items():
        assert len(chosen) >= 3
        assert obj not in chosen
        assert len(set(chosen)) == len(chosen)
        assert all(truth_roles[os.path.basename(s)] == "science_sky" for s in chosen)
        dts = {s: _seconds(times[s], times[obj]) for s in skies["filename"]}
        ranked = sorted(dts, key=lambda s: (dts[s], s))
        assert chosen == ranked[: len(chosen)]  # nearest in time, in order
        within = [s for s in ranked if dts[s] <= 900.0]
        if len(within) >= 3:
            assert chosen == within  # all within the time limit, and only those
        else:
            assert len(chosen) == 3  # time limit ignored just enough to reach min_skies


def test_tutorial_sequence_drift_tracers(science, truth_roles):
    """The two target frames before the first sky and the one after the last get the target
    frames inside their skies' time span; the six between skies get none."""
    objects, skies = separate_sky(science)
    table = associate_sky(objects, skies)
    tracers = drift_tracers(objects, skies, table)
    assert list(tracers) == list(table)
    times = dict(zip(science["filename"], pd.to_datetime(science["ut_datetime"]), strict=True))
    outside = set()
    for obj, chosen in tracers.items():
        span = [times[s] for s in table[obj]]
        if min(span) <= times[obj] <= max(span):
            assert chosen == []
            continue
        outside.add(os.path.basename(obj))
        expected = [o for o in objects["filename"] if o != obj and min(span) < times[o] < max(span)]
        assert chosen == sorted(expected, key=lambda o: times[o]) and len(chosen) >= 2
        assert all(truth_roles[os.path.basename(o)] == "science_object" for o in chosen)
    assert outside == {"S20170505S0095.fits", "S20170505S0096.fits", "S20170505S0110.fits"}


def test_drift_tracers_keep_the_configuration():
    rows = _rows([(0, 0), (60, 0), (0, 0), (60, 0), (0, 0), (60, 0)])
    rows[2]["filter_name"] = "H"  # inside the span, but another filter
    objects, skies = [rows[i] for i in (0, 2, 4)], [rows[i] for i in (1, 3, 5)]
    table = {"/raw/f00.fits": ["/raw/f01.fits", "/raw/f03.fits", "/raw/f05.fits"]}
    assert drift_tracers(objects, skies, table) == {"/raw/f00.fits": ["/raw/f04.fits"]}
    rows[2]["filter_name"] = "Kshort"
    assert drift_tracers(objects, skies, table) == {"/raw/f00.fits": ["/raw/f02.fits", "/raw/f04.fits"]}
    assert drift_tracers(objects, skies, {"/raw/f00.fits": []}) == {"/raw/f00.fits": []}
    with pytest.raises(
        GemredInputError, match=r"/raw/f00.fits: associated sky frame\(s\) \['/raw/f09.fits'\]"
    ):
        drift_tracers(objects, skies, {"/raw/f00.fits": ["/raw/f09.fits"]})


def test_time_limit_and_caps(science):
    objects, skies = separate_sky(science)
    short = associate_sky(objects, skies, time=60.0)
    assert all(len(v) == 3 for v in short.values())
    capped = associate_sky(objects, skies, max_skies=4)
    assert all(3 <= len(v) <= 4 for v in capped.values())
    many = associate_sky(objects, skies, time=1e6, min_skies=1)
    assert all(len(v) == 7 for v in many.values())
    with pytest.raises(ValueError, match="min_skies"):
        associate_sky(objects, skies, min_skies=0)
    with pytest.raises(ValueError, match="max_skies"):
        associate_sky(objects, skies, min_skies=3, max_skies=2)


def test_dither_only_every_frame_both(science):
    dither = science[~science["sky_candidate"]].reset_index(drop=True)
    assert len(dither) == 9
    objects, skies = separate_sky(dither)
    assert list(objects["filename"]) == list(dither["filename"])
    assert list(skies["filename"]) == list(dither["filename"])
    table = associate_sky(objects, skies)
    pos = frame_positions(dither)
    index = {name: i for i, name in enumerate(dither["filename"])}
    for obj, chosen in table.items():
        assert len(chosen) >= 3 and obj not in chosen
        near = {n for n, i in index.items() if np.hypot(*(pos[i] - pos[index[obj]])) <= 1.0}
        assert obj in near and len(near) > 1  # the 1" dither puts neighbours exactly 1" away
        assert not near & set(chosen)


def test_distance_rule_excludes_same_pointing():
    rows = _rows([(0, 0), (5, 0), (0, 0), (0, 5), (5, 5), (0, 0.5)])
    objects, skies = separate_sky(rows)
    assert len(objects) == len(skies) == len(rows)  # one field: every frame both
    assert isinstance(objects, list)
    table = associate_sky(objects, skies)
    same = {"/raw/f00.fits", "/raw/f02.fits", "/raw/f05.fits"}
    for obj in same:
        assert not same & set(table[obj])
        assert set(table[obj]) == {"/raw/f01.fits", "/raw/f03.fits", "/raw/f04.fits"}


def test_overlap_rule_groups():
    # 0.9 x 85" = 76.5": 70" apart is one field, 80" apart is not; chains link (single linkage).
    assert group_pointings(_rows([(0, 0), (70, 0)])) == [[0, 1]]
    assert group_pointings(_rows([(0, 0), (80, 0)])) == [[0], [1]]
    assert group_pointings(_rows([(0, 0), (0, 80), (60, 0), (60, 70)])) == [[0, 1, 2, 3]]
    assert group_pointings(_rows([(0, 0), (80, 0)]), frac_fov=1.0) == [[0, 1]]
    # RA/Dec differences count as well as offsets: 100" north in Dec is another field.
    rows = _rows([(0, 0), (0, 0)])
    rows[1]["dec"] += 100.0 / 3600.0
    assert group_pointings(rows) == [[0], [1]]
    with pytest.raises(ValueError, match="frac_fov"):
        group_pointings(rows, frac_fov=0.0)


def test_three_groups_nearest_until_half():
    # Target field (2 frames), a near field (3 frames) and a far field (3 frames), all guided.
    rows = _rows([(0, 0), (1, 1), (200, 0), (201, 0), (200, 1), (500, 0), (501, 0), (500, 1)])
    objects, skies = separate_sky(rows)
    assert [r["filename"] for r in objects] == [f"/raw/f{i:02d}.fits" for i in range(5)]
    assert [r["filename"] for r in skies] == [f"/raw/f{i:02d}.fits" for i in range(5, 8)]


def test_overrides(science, truth_roles):
    sky_roots = sorted(n[:-5] for n, r in truth_roles.items() if r == "science_sky")
    obj_names = sorted(n for n, r in truth_roles.items() if r == "science_object")
    # ref_sky alone: named frames are skies, every other frame an object (roots accepted).
    objects, skies = separate_sky(science, ref_sky=sky_roots[:2])
    assert _base(skies["filename"]) == {f"{r}.fits" for r in sky_roots[:2]}
    assert len(objects) == 14
    # ref_obj alone (base names accepted).
    objects, skies = separate_sky(science, ref_obj=obj_names[:3])
    assert _base(objects["filename"]) == set(obj_names[:3])
    assert len(skies) == 13
    # Both: named frames as told (one in both lists is both), the others automatic.
    full = [str(science["filename"].iloc[0])]
    objects, skies = separate_sky(science, ref_obj=full + [sky_roots[0]], ref_sky=full)
    assert set(objects["filename"]) >= set(full) and set(skies["filename"]) >= set(full)
    assert f"{sky_roots[0]}.fits" in _base(objects["filename"])
    assert f"{sky_roots[0]}.fits" not in _base(skies["filename"])
    assert len(objects) == 10 and len(skies) == 7
    with pytest.raises(GemredInputError, match="ref_sky: S20990101S0001"):
        separate_sky(science, ref_sky=["S20990101S0001"])


def test_no_candidate_names_the_frame(science):
    objects, skies = separate_sky(science)
    other_filter = skies.assign(filter_name="J")
    with pytest.raises(GemredInputError) as info:
        associate_sky(objects, other_filter)
    message = str(info.value)
    assert message.startswith(str(objects["filename"].iloc[0]))
    assert "filter_name='Kshort'" in message and "ref_sky" in message
    # An object frame offered only itself has no candidate either.
    one = objects.iloc[:1]
    with pytest.raises(GemredInputError, match="no sky frame"):
        associate_sky(one, one)
    # Configuration keys other than the filter are checked too.
    with pytest.raises(GemredInputError, match="exposure_time=30.0"):
        associate_sky(objects.assign(exposure_time=30.0), skies)


def test_empty_and_bad_input():
    with pytest.raises(GemredInputError, match="no frames"):
        separate_sky([])
    rows = _rows([(0, 0), (100, 0)])
    rows[1]["ut_datetime"] = ""
    with pytest.raises(GemredInputError, match="f01.fits: no valid ut_datetime"):
        associate_sky(rows[:1], rows[1:])
