"""saffron.progress: bars on stderr only for a terminal, silenced by TQDM_DISABLE."""

from __future__ import annotations

import io

import pytest

from saffron import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", err)
    with progress.progress(2, "work") as bar:
        bar.update(2)
    assert err.getvalue() == ""


def test_a_bar_on_a_terminal_unless_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    err = Terminal()
    monkeypatch.setattr(progress.sys, "stderr", err)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with progress.progress(2, "work") as bar:
        bar.update(2)
    assert "work" in err.getvalue() and "2/2" in err.getvalue()
    quiet = Terminal()
    monkeypatch.setattr(progress.sys, "stderr", quiet)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with progress.progress(2, "work") as bar:
        bar.update(2)
    assert quiet.getvalue() == ""
