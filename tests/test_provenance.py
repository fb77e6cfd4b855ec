"""Tests of gemred.provenance: the source hash every workflow rule takes as a param."""

import re

from gemred import __version__
from gemred.provenance import _hash_tree, software_version, source_hash


def test_source_hash_is_stable_hex():
    assert re.fullmatch(r"[0-9a-f]{64}", source_hash())
    assert source_hash() == source_hash()


def test_software_version_carries_version_and_hash():
    assert software_version() == f"{__version__.split('+')[0]}+src.{source_hash()[:12]}"


def test_hash_follows_code_not_file_times(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not code\n")
    first = _hash_tree(tmp_path)

    (tmp_path / "a.py").touch()
    (tmp_path / "notes.txt").write_text("changed\n")
    pycache = tmp_path / "__pycache__"
    pycache.mkdir()
    (pycache / "a.py").write_text("cached\n")
    assert _hash_tree(tmp_path) == first

    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert _hash_tree(tmp_path) != first
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    assert _hash_tree(tmp_path) == first
    (tmp_path / "sub" / "b.py").rename(tmp_path / "sub" / "c.py")
    assert _hash_tree(tmp_path) != first
