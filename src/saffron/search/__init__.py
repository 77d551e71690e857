"""Search algorithms: one signature, a registry (:data:`METHODS`).

Importing a method's module registers it: ``greedy``/``sample`` (no defence), ``saffron``
(Saffron-1), ``best-of-n``, ``rejection``, ``beam`` (Rebase-style) and ``mcts`` (DeAL-style).
"""

from saffron.search import basic as _basic  # noqa: F401  (registers greedy, sample)
from saffron.search import beam as _beam  # noqa: F401
from saffron.search import best_of_n as _best_of_n  # noqa: F401
from saffron.search import mcts as _mcts  # noqa: F401
from saffron.search import rejection as _rejection  # noqa: F401
from saffron.search import saffron as _saffron  # noqa: F401
from saffron.search.base import (
    METHODS,
    MethodSpec,
    SearchConfig,
    SearchResult,
    World,
    get_method,
    run_search,
)

__all__ = [
    "METHODS",
    "MethodSpec",
    "SearchConfig",
    "SearchResult",
    "World",
    "get_method",
    "run_search",
]
