"""Files written whole or not at all, JSON-lines appends, and sha256 — the lowest layer.

Every file Saffron makes goes through here, so one rule holds everywhere: a reader sees either
the old content or the new one, never half of it. A file is written to a temporary sibling in
the same directory (same filesystem), then renamed over its final name with ``os.replace``,
which is atomic on POSIX. A folder is built beside its final name and swapped in the same way.
A JSON-lines log is appended one whole batch of lines per ``write`` call under an exclusive
``flock`` and synced, so a kill leaves at most one cut-off last line, which readers drop.

This module imports nothing of Saffron but :mod:`saffron.errors`; every layer may use it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from saffron.errors import SaffronError

_CHUNK = 1 << 20


# --- sha256 -----------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks (memory stays flat)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: Iterable[Path]) -> str:
    """Hex sha256 over ``paths`` in the given order, each file's name then its bytes (a
    fingerprint of a set of weight files that changes when any is renamed or edited)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


# --- whole files ------------------------------------------------------------------------------


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh temporary sibling of ``path``, then rename it to ``path``.

    For writers that take a path (``safetensors.save_file``). The parent folder is created; on
    any failure the temporary file is removed and ``path`` keeps its old content (or stays
    absent). ``write`` may replace the file at ``tmp`` but must leave a file there. The file
    gets the mode ``open`` would give it (0666 less the umask), unlike ``mkstemp``'s 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    write_with(path, write)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def dump_json(obj: Any, *, sort_keys: bool = False, ensure_ascii: bool = True) -> str:
    """``obj`` as indented JSON (2 spaces) ending in a newline: the layout of every JSON file
    Saffron writes (``meta.json``, ``config.json``, ``metrics.json``, …)."""
    return json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n"


def write_json(path: Path, obj: Any, *, sort_keys: bool = False) -> None:
    """Write ``obj`` to ``path`` atomically as :func:`dump_json` lays it out."""
    write_text(path, dump_json(obj, sort_keys=sort_keys))


def read_format(path: Path, fmt: str, *, unreadable: str, kind: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``format`` is ``fmt`` (a folder's ``meta.json``).

    Raises SaffronError ``"<unreadable>: <reason>"`` when the file cannot be read or parsed
    (``unreadable`` may name ``{path}``), and ``"<path> is not a <fmt> <kind>"`` when it holds
    something else.
    """
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SaffronError(f"{unreadable.format(path=path)}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise SaffronError(f"{path} is not a {fmt} {kind}")
    return meta


# --- folders ----------------------------------------------------------------------------------


def write_folder(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh folder beside ``out_dir``, then swap it into place.

    A failed or killed writer never leaves half a folder under ``out_dir``, and the old folder
    stays until the new one is complete: it is moved aside, the new one renamed in, and only
    then is the old one deleted. The new folder gets mode 0755 (``mkdtemp`` makes 0700).
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}-old-{os.getpid()}"
            os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old, out_dir)  # put the old folder back
            raise
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --- JSON lines -------------------------------------------------------------------------------


def append_jsonl(
    path: Path,
    rows: Iterable[Any],
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> None:
    """Append ``rows`` to the JSON-lines file ``path``, one object per line, in ONE write under
    an exclusive ``flock`` (released on close), flushed and synced before returning.

    Several processes may append to one file (``--shard``); a kill mid-write cuts at most the
    last line, which :func:`complete_lines` drops. The parent folder is created.
    """
    data = "".join(
        json.dumps(row, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n" for row in rows
    ).encode("utf-8")
    if not data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def complete_lines(path: Path) -> bytes:
    """The bytes of ``path`` up to its last newline; a trailing partial line (a write cut
    short by a kill) is truncated away, under the same lock :func:`append_jsonl` takes, so it
    never cuts a line another process is appending."""
    with open(path, "r+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        raw = fh.read()
        keep = raw[: raw.rfind(b"\n") + 1]
        if len(keep) != len(raw):
            fh.truncate(len(keep))
    return keep


def unit_hash(data: bytes, nbytes: int = 4) -> float:
    """A number in [0, 1) fixed by ``data``: the first ``nbytes`` bytes of its sha256 read as a
    big-endian integer over 256**nbytes. The same on every run, machine and Python version, so
    a split by it (held-out prompts, held-out rows) is stable."""
    digest = hashlib.sha256(data).digest()
    return int.from_bytes(digest[:nbytes], "big") / 256**nbytes
