"""Helpers shared by the CLI commands: error reporting and option parsing."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from glioseg.errors import GliosegError

console = Console(stderr=False, highlight=False, soft_wrap=True, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable)

_LABELS = {
    "error": "[bold red]error:[/]",
    "warning": "[yellow]warning:[/]",
    "failed": "[red]failed[/]",
    "unmatched": "[yellow]unmatched[/]",
}


def say(kind: str, text: object) -> None:
    """One line on stderr: a coloured label (``error:``, ``warning:``, ``failed``, ``unmatched``), then
    ``text`` exactly as given: file names and messages are never read as console markup, so square
    brackets (``glioseg[bench]``, ``case[1].nii.gz``) survive."""
    err_console.print(f"{_LABELS[kind]} {escape(str(text))}", soft_wrap=True)


def reports_errors(func: F) -> F:
    """Turn :class:`GliosegError` into a one-line ``error: ...`` on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except GliosegError as exc:
            say("error", exc)
            raise typer.Exit(code=1) from None
        except typer.BadParameter as exc:  # glioseg's own option parsing inside a command: one line too
            say("error", exc.message)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; finished outputs are kept, nothing half-written was left behind")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def exit_if_failures(messages: list[str], outcome: str = "failed") -> None:
    """After a batch: list the cases that did not go through (one line each) and exit with status 1;
    a single one is named on the ``error:`` line itself."""
    if not messages:
        return
    if len(messages) == 1:
        say("error", f"1 case {outcome}: {messages[0]}")
        raise typer.Exit(code=1)
    say("error", f"{len(messages)} case(s) {outcome}:")
    for message in messages:
        err_console.print(f"  {escape(str(message))}", soft_wrap=True)
    raise typer.Exit(code=1)


def parse_triple(text: str | None, name: str, kind: type = int, example: str = "64,64,64") -> tuple | None:
    """Parse ``"64,64,64"`` (or a single ``"64"``) into a 3-tuple; ``None`` stays ``None``.

    ``example`` shows the expected form in the error message.
    """
    if text is None:
        return None
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"{name} must be three numbers like {example}; got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise typer.BadParameter(f"{name} must be three positive numbers like {example}; got {text!r}")
    return values
