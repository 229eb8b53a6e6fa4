"""Uploads: hostile names never leave the knowledge folder; type and size limits; atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ui.uploads import UploadRefused, sanitize_filename, save_upload


@pytest.mark.parametrize("name, expected", [
    ("notes.md", "notes.md"),
    ("../../etc/passwd.txt", "passwd.txt"),
    ("/etc/passwd.md", "passwd.md"),
    ("..\\..\\windows\\system.ini.txt", "system.ini.txt"),
    ("C:\\Users\\me\\report.docx", "report.docx"),
    (".hidden.md", "hidden.md"),
    ("a<script>alert(1)</script>.md", "script_.md"),  # "/" separates: only the last part is kept
    ("a<b>\"'&;|$`.md", "a_b_.md"),
    ("na\x00me\n.txt", "name.txt"),
    ("résumé.md", "résumé.md"),
    ("con.txt", "con_.txt"),
])
def test_sanitize_keeps_only_a_safe_last_component(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


@pytest.mark.parametrize("name", ["", "..", ".", "/", "../..", "   ", "\x00\x01"])
def test_sanitize_refuses_names_with_nothing_left(name: str) -> None:
    with pytest.raises(UploadRefused, match="no usable characters"):
        sanitize_filename(name)


def test_long_names_are_cut_but_keep_their_suffix() -> None:
    name = sanitize_filename("é" * 300 + ".md")
    assert name.endswith(".md") and len(name.encode()) <= 200


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_path_traversal_lands_inside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    saved = save_upload(folder, "../../outside.md", b"# hi\n", max_bytes=100)
    assert saved.path == folder / "outside.md" and saved.doc_id == "outside.md"
    assert not (tmp_path / "outside.md").exists()
    saved = save_upload(folder, str(tmp_path / "abs.txt"), b"hello", max_bytes=100)
    assert saved.path.parent == folder
    assert _listing(folder) == ["abs.txt", "outside.md"]


def test_etc_passwd_is_refused_as_an_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(UploadRefused) as err:
        save_upload(tmp_path, "../../etc/passwd", b"root:x:0:0", max_bytes=100)
    assert err.value.status == 415 and "not supported" in str(err.value)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("name", ["virus.exe", "archive.zip", "picture.png", "noext", "editor.md.swp", "x.tmp"])
def test_wrong_types_are_refused_with_415(tmp_path: Path, name: str) -> None:
    with pytest.raises(UploadRefused) as err:
        save_upload(tmp_path, name, b"data", max_bytes=100)
    assert err.value.status == 415
    assert _listing(tmp_path) == []


def test_oversized_upload_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(UploadRefused) as err:
        save_upload(tmp_path, "big.txt", (b"x" * 64 for _ in range(10)), max_bytes=600)
    assert err.value.status == 413 and "server.max_upload_bytes" in str(err.value)
    assert _listing(tmp_path) == []  # neither the file nor its temp file


def test_a_file_of_the_limit_size_is_accepted(tmp_path: Path) -> None:
    saved = save_upload(tmp_path, "exact.txt", b"x" * 600, max_bytes=600)
    assert saved.size == 600 and (tmp_path / "exact.txt").stat().st_size == 600


def test_same_name_replaces_the_old_version_atomically(tmp_path: Path) -> None:
    save_upload(tmp_path, "a.md", b"old", max_bytes=100)
    inode_before = (tmp_path / "a.md").stat().st_ino
    saved = save_upload(tmp_path, "a.md", b"new", max_bytes=100)
    assert saved.replaced and (tmp_path / "a.md").read_bytes() == b"new"
    assert (tmp_path / "a.md").stat().st_ino != inode_before  # renamed into place, never rewritten in place
    assert _listing(tmp_path) == ["a.md"]


def test_a_symlink_of_that_name_is_replaced_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    victim = tmp_path / "victim.md"
    victim.write_text("keep me")
    os.symlink(victim, folder / "link.md")
    save_upload(folder, "link.md", b"uploaded", max_bytes=100)
    assert victim.read_text() == "keep me"
    assert not (folder / "link.md").is_symlink() and (folder / "link.md").read_bytes() == b"uploaded"


def test_a_folder_of_that_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.md").mkdir()
    with pytest.raises(UploadRefused) as err:
        save_upload(tmp_path, "notes.md", b"x", max_bytes=100)
    assert err.value.status == 409
