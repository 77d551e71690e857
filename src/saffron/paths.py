"""Where Saffron keeps files it makes or fetches: a user cache dir, never the repository."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SAFFRON_CACHE"


def cache_dir() -> Path:
    """Root of the user cache: ``$SAFFRON_CACHE`` if set, else ``~/.cache/saffron``.

    The directory is created on first use.
    """
    root = Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "saffron").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def artifacts_dir() -> Path:
    """The embedded artifacts shipped with the package (adapters, committed attack answers)."""
    return Path(__file__).resolve().parent / "artifacts"
