"""Tests of gemred.provenance: the source hash every workflow rule takes as a param, and the
provenance (software, parameters, inputs, primitives) that products written in a job record."""

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from gemred import __version__, provenance
from gemred.frame import Extension, Frame
from gemred.io import write_frame
from gemred.provenance import (
    MD5_XATTR,
    PROVENANCE_COLUMNS,
    _hash_tree,
    current_job,
    file_md5,
    job,
    software_version,
    source_commit,
    source_hash,
    store_md5,
)


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


# --- provenance written into products -------------------------------------------------------


def _frame(value: float) -> Frame:
    header = fits.Header({"BUNIT": "electron"})
    ext = Extension(
        np.full((4, 5), value, np.float32), header, np.ones((4, 5), np.float32), np.zeros((4, 5), np.uint16)
    )
    return Frame(fits.Header({"INSTRUME": "GMOS-N", "OBJECT": "test"}), [ext], "N20170614S0201")


def _raw_inputs(folder: Path) -> list[Path]:
    paths = []
    for i, content in enumerate((b"first raw file", b"second raw file")):
        path = folder / f"N2017061{i}S0001.fits"
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_write_frame_outside_a_job_adds_no_provenance(tmp_path):
    path = write_frame(_frame(1.0), tmp_path / "plain.fits")
    with fits.open(path) as hdul:
        assert "GEMRED" not in hdul[0].header
        assert "PROVENANCE" not in hdul and "PROVHISTORY" not in hdul


def test_product_records_software_params_inputs_and_primitives(tmp_path):
    raws = _raw_inputs(tmp_path)
    params = {"stack": {"reject_method": "minmax", "nlow": 1}, "gemred_version": software_version()}
    frame = _frame(2.0)
    with job("master_bias", inputs=raws, params=params):
        frame.stamp("BIASCORR", "UT time stamp for subtract_bias")
        frame.stamp("STACKFRM", "UT time stamp for stackFrames")
        path = write_frame(frame, tmp_path / "out" / "N20170614S0201_bias.fits")
    assert current_job() is None

    with fits.open(path) as hdul:
        phu = hdul[0].header
        assert phu["GEMRED"] == software_version()
        assert phu["GEMRCOMM"] == source_commit()
        assert phu["GEMRRULE"] == "master_bias"
        assert json.loads(phu["GEMRPARS"]) == params
        prov = Table.read(hdul["PROVENANCE"])
        hist = Table.read(hdul["PROVHISTORY"])
    assert list(prov.colnames) == list(PROVENANCE_COLUMNS)
    assert sorted(prov["filename"]) == sorted(p.name for p in raws)
    for row in prov:
        expected = hashlib.md5((tmp_path / row["filename"]).read_bytes()).hexdigest()
        assert row["md5"] == expected and row["rule"] == "master_bias"
    assert len(hist) == 1
    assert hist[0]["rule"] == "master_bias" and hist[0]["output"] == "N20170614S0201_bias.fits"
    assert hist[0]["primitives"].split(",") == ["subtract_bias", "stackFrames"]
    assert json.loads(hist[0]["args"]) == params
    assert hist[0]["software"] == software_version() and hist[0]["commit"] == source_commit()


def test_provenance_is_inherited_back_to_raw_files(tmp_path):
    raws = _raw_inputs(tmp_path)
    with job("master_bias", inputs=raws, params={}):
        bias = write_frame(_frame(1.0), tmp_path / "bias.fits")
    old = _frame(3.0)
    old.phu["PREPARE"] = ("2001-01-01T00:00:00", "UT time stamp for prepare")  # applied before this job
    with job("stack_science", inputs=[bias], params={"stack": {}}):
        old.stamp("STACKFRM", "UT time stamp for stackFrames")
        stack = write_frame(old, tmp_path / "stack.fits")

    with fits.open(stack) as hdul:
        prov = Table.read(hdul["PROVENANCE"])
        hist = Table.read(hdul["PROVHISTORY"])
    by_rule = {rule: sorted(prov[prov["rule"] == rule]["filename"]) for rule in set(prov["rule"])}
    assert by_rule == {"master_bias": sorted(p.name for p in raws), "stack_science": ["bias.fits"]}
    assert prov[prov["filename"] == "bias.fits"][0]["md5"] == file_md5(bias)
    assert list(hist["rule"]) == ["master_bias", "stack_science"]
    assert hist[1]["primitives"] == "stackFrames"


def test_source_commit_names_the_checkout():
    commit = source_commit()
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        assert commit == "unknown"
    else:
        assert commit.removesuffix("-dirty") == head.stdout.strip()


# --- checksums kept with products ---------------------------------------------------------------


def _xattrs_supported(folder: Path) -> bool:
    probe = folder / "probe"
    probe.write_bytes(b"x")
    try:
        os.setxattr(probe, "user.gemred.probe", b"1")
    except (OSError, AttributeError):
        return False
    return True


def _forget_md5s(monkeypatch):
    """A fresh process's view: no checksum remembered in memory."""
    monkeypatch.setattr(provenance, "_MD5_SEEN", {})


def test_products_keep_their_checksum_and_inputs_are_read_once(tmp_path, monkeypatch):
    if not _xattrs_supported(tmp_path):
        pytest.skip("no user extended attributes on this file system")
    raws = _raw_inputs(tmp_path)
    with job("master_bias", inputs=raws, params={}):
        bias = write_frame(_frame(1.0), tmp_path / "bias.fits")
    truth = hashlib.md5(bias.read_bytes()).hexdigest()
    stamp, kept = os.getxattr(bias, MD5_XATTR).decode().split()
    assert kept == truth and stamp == f"{bias.stat().st_size}:{bias.stat().st_mtime_ns}"

    # A later job takes the product's checksum from the file, and reads each raw file once
    # however many products it writes.
    _forget_md5s(monkeypatch)
    reads = []
    compute = provenance._compute_md5

    def counted(path):
        reads.append(Path(path).name)
        return compute(path)

    monkeypatch.setattr(provenance, "_compute_md5", counted)
    with job("stack_science", inputs=[bias, *raws], params={}):
        for name in ("one.fits", "two.fits"):
            write_frame(_frame(2.0), tmp_path / name)
    reads = [name for name in reads if name in {p.name for p in [bias, *raws]}]
    assert sorted(reads) == sorted(p.name for p in raws)
    with fits.open(tmp_path / "two.fits") as hdul:
        prov = Table.read(hdul["PROVENANCE"])
    assert prov[prov["filename"] == "bias.fits"][0]["md5"] == truth


def test_a_kept_checksum_is_not_trusted_once_the_file_changes(tmp_path, monkeypatch):
    if not _xattrs_supported(tmp_path):
        pytest.skip("no user extended attributes on this file system")
    path = tmp_path / "product.fits"
    path.write_bytes(b"first content")
    store_md5(path)
    with open(path, "r+b") as fh:  # same size, edited in place: the attribute survives
        fh.write(b"FIRST")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    _forget_md5s(monkeypatch)
    assert file_md5(path) == hashlib.md5(b"FIRST content").hexdigest()


def test_scratch_files_get_no_provenance_and_no_checksum(tmp_path):
    raws = _raw_inputs(tmp_path)
    with job("gsaoi_stack", inputs=raws, params={}):
        path = write_frame(_frame(1.0), tmp_path / "resampled.fits", scratch=True)
    with fits.open(path) as hdul:
        assert "GEMRED" not in hdul[0].header and "PROVENANCE" not in hdul
    if _xattrs_supported(tmp_path):
        assert MD5_XATTR not in os.listxattr(path)


def test_an_end_product_has_provenance_and_no_checksum_and_one_is_computed_when_read(tmp_path, monkeypatch):
    if not _xattrs_supported(tmp_path):
        pytest.skip("no user extended attributes on this file system")
    raws = _raw_inputs(tmp_path)
    with job("stack_science", inputs=raws, params={}):
        path = write_frame(_frame(1.0), tmp_path / "stack.fits", read_later=False)
    with fits.open(path) as hdul:
        assert "PROVENANCE" in hdul
    assert MD5_XATTR not in os.listxattr(path)
    _forget_md5s(monkeypatch)
    assert file_md5(path) == hashlib.md5(path.read_bytes()).hexdigest()


def test_no_checksum_is_computed_where_it_cannot_be_kept(tmp_path, monkeypatch):
    path = tmp_path / "product.fits"
    path.write_bytes(b"content")
    monkeypatch.delattr(os, "setxattr")
    monkeypatch.setattr(provenance, "_compute_md5", lambda path: pytest.fail("checksum computed"))
    store_md5(path)


def test_inputs_without_gemred_provenance_are_not_searched_for_tables(tmp_path, monkeypatch):
    """A raw file's extensions are not read to look for provenance tables it cannot have
    (only files written in a job carry them, with GEMRED in the primary header)."""
    raw = tmp_path / "N20170613S0180.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2), np.float32))]).writeto(raw)
    opened = []
    real_open = fits.open
    monkeypatch.setattr(fits, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    with job("master_bias", inputs=[raw], params={}):
        product = write_frame(_frame(1.0), tmp_path / "bias.fits")
    assert str(raw) not in map(str, opened)
    with fits.open(product) as hdul:
        assert list(Table.read(hdul["PROVENANCE"])["filename"]) == [raw.name]
