"""Command declarations: one decorator per command feeds dispatch, `help` and "did you mean".

A command is a small async function ``(ctx, args) -> Reply``; its declaration carries the usage
line, a one-line summary and an example, so the help text can never drift from the grammar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from rapidfuzz import fuzz, process

from handlers.invocation import Context
from handlers.reply import Reply

GRAMMAR_ORDER = ("help", "find", "deal", "account", "contact", "pipeline", "log", "decision", "timeline",
                 "search", "room", "digest")
Handler = Callable[[Context, str], Awaitable[Reply]]


class CommandError(Exception):
    """An expected failure; its message is shown to the user verbatim.

    A failure that is really a question ("which of these deals?") carries the `reply` to show.
    """

    def __init__(self, message: str, *, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply or Reply.error(message)


class FormError(Exception):
    """Expected problems with a submitted form, by field name, each shown next to its field."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str
    summary: str
    example: str
    args: Literal["none", "optional", "required"]
    func: Handler
    hidden: bool = False  # run by buttons only: not in help, never suggested


class CommandTable:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def command(
        self, name: str, *, usage: str, summary: str, example: str,
        args: Literal["none", "optional", "required"] = "optional", hidden: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(func: Handler) -> Handler:
            if name in self._commands:
                raise ValueError(f"command {name!r} declared twice")
            self._commands[name] = Command(name, usage, summary, example, args, func, hidden)
            return func

        return register

    def get(self, name: str) -> Command | None:
        return self._commands.get(name.lower())

    def __iter__(self) -> Iterator[Command]:
        """The commands people type, in the order of the grammar in DESIGN.md, then any others."""
        rank = {name: i for i, name in enumerate(GRAMMAR_ORDER)}
        shown = [c for c in self._commands.values() if not c.hidden]
        return iter(sorted(shown, key=lambda c: rank.get(c.name, len(rank))))

    def closest(self, word: str, cutoff: float = 75) -> str | None:
        """The command name a mistyped `word` most likely meant, if any is close enough."""
        if len(word) < 3:
            return None
        best = process.extractOne(word.lower(), [c.name for c in self], scorer=fuzz.ratio, score_cutoff=cutoff)
        return best[0] if best else None


commands = CommandTable()
