"""saffron.files: whole-or-nothing writes of files and folders, JSON-lines appends, sha256."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from saffron import files
from saffron.errors import SaffronError


def test_write_bytes_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.bin"
    files.write_bytes(target, b"one")
    files.write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_a_written_file_gets_the_mode_open_gives(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "f.json"
    files.write_json(target, {})
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    files.write_text(target, "old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        files.write_with(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_write_json_layout(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    files.write_json(path, {"b": 1, "a": "é"}, sort_keys=True)
    assert path.read_text(encoding="utf-8") == json.dumps({"a": "é", "b": 1}, indent=2) + "\n"


def test_read_format_checks_the_format(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    path.write_text('{"format": "x/1", "n": 2}')
    assert files.read_format(path, "x/1", unreadable="{path} is bad", kind="file")["n"] == 2
    with pytest.raises(SaffronError, match=r"is not a y/1 dataset$"):
        files.read_format(path, "y/1", unreadable="{path} is bad", kind="dataset")
    path.write_text("{")
    with pytest.raises(SaffronError, match=f"^{path} is bad: "):
        files.read_format(path, "x/1", unreadable="{path} is bad", kind="file")


def test_write_folder_swaps_whole_and_keeps_the_old_one_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files.write_folder(out, lambda d: (d / "x").write_text("1"))
    files.write_folder(out, lambda d: (d / "y").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == ["y"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)

    def broken(d: Path) -> None:
        (d / "z").write_text("3")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        files.write_folder(out, broken)
    assert sorted(p.name for p in out.iterdir()) == ["y"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_folder_puts_the_old_folder_back_when_the_swap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    files.write_folder(out, lambda d: (d / "old").write_text("1"))
    real = os.replace

    def replace(src: object, dst: object) -> None:
        if Path(str(dst)) == out and ".out-old-" not in str(src):
            raise OSError("disk gone")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(OSError):
        files.write_folder(out, lambda d: (d / "new").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == ["old"]


def test_append_jsonl_and_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "log" / "r.jsonl"
    files.append_jsonl(path, [{"b": 1, "a": "é"}], sort_keys=True)
    files.append_jsonl(path, [])
    files.append_jsonl(path, [{"c": 2}], ensure_ascii=True)
    assert path.read_text(encoding="utf-8") == '{"a": "é", "b": 1}\n{"c": 2}\n'
    with open(path, "ab") as fh:
        fh.write(b'{"cut": ')
    keep = files.complete_lines(path)
    assert keep == path.read_bytes() == '{"a": "é", "b": 1}\n{"c": 2}\n'.encode()


def test_hashes() -> None:
    data = b"saffron"
    assert files.sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    hexed = hashlib.sha256(data).hexdigest()
    assert files.unit_hash(data) == int(hexed[:8], 16) / 16**8
    assert (
        files.unit_hash(data, nbytes=8) == int.from_bytes(bytes.fromhex(hexed)[:8], "big") / 2**64
    )


def test_sha256_of_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * (3 << 20))
    b.write_bytes(b"y")
    assert files.sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    h = hashlib.sha256(b"a" + a.read_bytes() + b"b" + b"y").hexdigest()
    assert files.sha256_files([a, b]) == h
