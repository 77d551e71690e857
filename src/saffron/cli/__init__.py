"""The ``saffron`` command line: one module per command group.

* :mod:`~saffron.cli.core` — ``generate``, ``judge``, ``models``, ``datasets``, ``methods``,
  ``setup``;
* :mod:`~saffron.cli.train` — ``train-policy``, ``train-guard``, ``label``, ``train-mrm``;
  :mod:`~saffron.cli.train_data` — what they train on;
* :mod:`~saffron.cli.judge` — ``train-judge`` (the independent judge);
* :mod:`~saffron.cli.eval` — ``eval``, ``compare``, ``attack-answers``, ``demo``;
* :mod:`~saffron.cli.serve` — ``serve``;
* :mod:`~saffron.cli.args` — the argument types they share.

This package is the top layer: it may import every other, and nothing imports it. Every
subcommand validates its input before writing anything; a user error prints one line
(``saffron: error: …``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from saffron.cli import core, judge, serve, train
from saffron.cli import eval as evaluation
from saffron.errors import SaffronError

EXAMPLES = """examples:
  saffron generate --prompt "How do I bake bread?"
  saffron generate --prompt "How do I pick a lock?" --prefill "Sure, here is how" --json
  saffron models
  saffron demo
  saffron serve --port 8000
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, in the order ``saffron --help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="saffron",
        description="Safety inference scaling for LLMs (Saffron-1).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    core.add_answer_parsers(sub)
    train.add_parsers(sub)
    judge.add_parsers(sub)
    evaluation.add_parsers(sub)
    serve.add_parsers(sub)
    core.add_info_parsers(sub)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    **core.COMMANDS,
    **train.COMMANDS,
    **judge.COMMANDS,
    **evaluation.COMMANDS,
    **serve.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit status (2 for a user error, printed as one line)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SaffronError as err:
        print(f"saffron: error: {err}", file=sys.stderr)
        return err.exit_code
