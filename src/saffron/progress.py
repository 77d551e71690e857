"""Progress bars for slow one-off work (the GGUF conversion, ``saffron setup``).

A bar goes to stderr, so stdout stays what a command prints. It is shown only when stderr is
a terminal (tqdm's ``disable=None``), so logs and pipes get no bar; ``TQDM_DISABLE=1``
silences it on a terminal too.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def quiet() -> bool | None:
    """tqdm's ``disable``: True when ``TQDM_DISABLE`` is set to 1/true/yes, else None (a bar
    only on a terminal)."""
    return True if os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes") else None


def progress(total: int, desc: str, unit: str = "step") -> tqdm:
    """A bar of ``total`` steps on stderr (see the module doc for when it shows). Use it as a
    context manager; ``bar.set_postfix_str(stage)`` names the step under way."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet())
