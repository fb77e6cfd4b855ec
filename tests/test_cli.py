"""The ``gemred`` command line: table, select, show, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gemred.cli import main
from gemred.table import read_table


def _fits(raw: tuple[Path, dict[str, list[Path]]]) -> list[str]:
    return sorted(str(p) for p in raw[0].glob("*.fits"))


def _single_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_table_writes_the_dataset_table(gmos_raw_dir, tmp_path, capsys):
    out = tmp_path / "dataset.tsv"
    assert main(["table", str(gmos_raw_dir[0]), "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert summary == (
        f"wrote {out}: 21 files: 10 bias in 1 group(s), 5 twilight_flat in 1 group(s), "
        "5 science in 1 group(s), 1 bpm in 1 group(s)\n"
    )
    table = read_table(out)
    assert list(table.loc[table["role"] == "bias", "group"].unique()) == ["N20170613S0180"]


def test_select_biases_like_dataselect(gmos_raw_dir, tmp_path, capsys):
    listing = tmp_path / "lists" / "biases.lis"
    assert main(["select", *_fits(gmos_raw_dir), "--tags", "BIAS", "-o", str(listing)]) == 0
    expected = [str(p) for p in gmos_raw_dir[1]["bias"]]
    assert capsys.readouterr().out.splitlines() == expected
    assert listing.read_text().splitlines() == expected


def test_select_science_with_xtags_and_expression(gmos_raw_dir, capsys):
    args = ["select", *_fits(gmos_raw_dir), "--xtags", "CAL", "--expr",
            '(observation_class=="science" and filter_name=="i")']
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == [str(p) for p in gmos_raw_dir[1]["science"]]


def test_select_reads_list_files_and_comma_separated_tags(gmos_raw_dir, tmp_path, capsys):
    listing = tmp_path / "all.lis"
    listing.write_text("# every raw file\n\n" + "\n".join(_fits(gmos_raw_dir)) + "\n")
    assert main(["select", f"@{listing}", "--tags", "flat,twilight", "--expr", "exposure_time<30"]) == 0
    assert [Path(p).name for p in capsys.readouterr().out.splitlines()] == [
        "N20170702S0180.fits", "N20170702S0181.fits", "N20170702S0182.fits",
    ]


def test_empty_selection_exits_1_with_one_line(gmos_raw_dir, tmp_path, capsys):
    listing = tmp_path / "flats.lis"
    args = ["select", *_fits(gmos_raw_dir), "--tags", "FLAT", "--xtags", "CAL", "--expr", 'filter_name=="z"',
            "-o", str(listing)]
    assert main(args) == 1
    line = _single_error_line(capsys)
    assert line == (
        "gemred select: no file matched (tags: FLAT; xtags: CAL; expr: filter_name == 'z') "
        "among 21 input files"
    )
    assert not listing.exists()


def test_show_prints_a_descriptor_table(gsaoi_raw_dir, capsys):
    files = [str(p) for p in gsaoi_raw_dir[1]["lamp_off"]]
    assert main(["show", *files, "-d", "object,exposure_time"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["filename", "object", "exposure_time"]
    assert [line.split()[0] for line in lines[1:]] == files
    assert all(line.split()[1:] == ["Domeflat", "OFF", "5.0"] for line in lines[1:])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["show", "{bias}", "-d", "object,exptime"], "unknown descriptor(s) exptime"),
        (["select", "{bias}", "--expr", 'filter_name="i"'], "use == to compare"),
        (["select", "@{tmp}/missing.lis"], "missing.lis: cannot read list file"),
        (["select", "{tmp}/N20170613S0999.fits"], "N20170613S0999.fits: file not found"),
        (["table", "{tmp}", "-o", "{tmp}/dataset.tsv"], "no FITS files"),
    ],
)
def test_input_errors_are_one_line_with_status_2(gmos_raw_dir, tmp_path, capsys, args, fragment):
    bias = str(gmos_raw_dir[1]["bias"][0])
    filled = [arg.format(bias=bias, tmp=tmp_path) for arg in args]
    assert main(filled) == 2
    line = _single_error_line(capsys)
    assert line.startswith("gemred: error: ")
    assert fragment in line


def test_corrupt_file_error_names_the_file(tmp_path, capsys):
    bad = tmp_path / "N20170613S0181.fits"
    bad.write_bytes(b"not a FITS file at all" * 200)
    assert main(["show", str(bad)]) == 2
    assert _single_error_line(capsys).startswith(f"gemred: error: {bad}: ")


@pytest.mark.parametrize("command", ["table", "select", "show"])
def test_every_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"examples:\n  gemred {command} " in capsys.readouterr().out


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_console_exit_status_and_stderr(tmp_path):
    missing = tmp_path / "nowhere.fits"
    code = "import sys; from gemred.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", code, "select", str(missing)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"gemred: error: {missing}: file not found\n"
    assert proc.stdout == ""
