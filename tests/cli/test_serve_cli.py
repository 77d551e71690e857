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
    ],
)
def test_serve_bad_settings(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saffron: error: ") and message in err and err.count("\n") == 1
