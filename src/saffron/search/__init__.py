"""Search algorithms: one signature, a registry (:data:`METHODS`)."""

from saffron.search import basic as _basic  # noqa: F401  (registers greedy, sample)
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
