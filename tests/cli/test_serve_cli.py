"""``saffron serve`` refuses bad settings with one line and status 2, before loading models."""

from __future__ import annotations

import pytest

from saffron.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key-env", "SAFFRON_SURELY_UNSET_VAR"], "SAFFRON_SURELY_UNSET_VAR is unset"),
        (["--methods", "greedy,nope"], "unknown method 'nope'"),
        (["--budget", "0"], "default budget must be between 1"),
        (["--world-factory", "no_colon"], "expects MODULE:FUNCTION"),
        (["--world-factory", "no_such_module_x:f"], "no_such_module_x"),
        (["--queue", "0", "--world-factory", "x:y"], "--queue and --max-concurrency"),
        (["--gate", "nan"], "gate must be a finite number (or unset), got nan"),
        (["--no-repeat-ngram", "0"], "no_repeat_ngram must be an integer ≥ 1 (or unset), got 0"),
    ],
)
def test_serve_bad_settings(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saffron: error: ") and message in err and err.count("\n") == 1


def test_serve_takes_the_command_line_rule() -> None:
    """The server answers under the rule `eval` and `generate` use: the CLI defaults, or the
    options given (``none``: off)."""
    from saffron.cli import build_parser
    from saffron.cli.serve import _settings
    from saffron.search.base import CLI_GATE, CLI_GATE_STEPS, CLI_LOGP_FLOOR, CLI_NO_REPEAT_NGRAM

    rule = dict(_settings(build_parser().parse_args(["serve"])).rule)
    assert rule["logp_floor"] == CLI_LOGP_FLOOR and rule["no_repeat_ngram"] == CLI_NO_REPEAT_NGRAM
    assert (rule["gate"], rule["gate_steps"]) == (CLI_GATE, CLI_GATE_STEPS)
    args = build_parser().parse_args(["serve", "--gate", "none", "--logp-floor", "none"])
    rule = dict(_settings(args).rule)
    assert (rule["gate"], rule["logp_floor"], rule["gate_steps"]) == (None, None, 1)
