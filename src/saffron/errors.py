"""User-facing errors.

Every problem caused by the user's input (a name, a file, a number) is raised as a
:class:`SaffronError` whose message is one readable line. The command line prints that line
and exits with status 2; nothing else in the program catches it.
"""

from __future__ import annotations


class SaffronError(Exception):
    """A problem with the user's input, described in one line."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # One line by contract: the CLI prints ``str(err)`` as is.
        super().__init__(" ".join(message.split("\n")))


class RunStopped(SaffronError):
    """A run stopped by a failure outside the user's input (a lost Ray worker), described in
    one line; what it completed is kept, and rerunning the same command resumes it."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; rerun the same command to resume (completed work is kept)")
