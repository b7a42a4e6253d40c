"""The platform-neutral answer every handler returns; `bot/` renders it per platform.

Texts here are plain text (no markup): renderers escape them for Block Kit, Adaptive Cards or
the terminal, so a name like ``<!channel>`` can never ping anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Field:
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Action:
    """A button; pressing it runs `command` (a ``/crm`` command line without the ``/crm``)."""

    label: str
    command: str
    style: Literal["default", "primary", "danger"] = "default"

    @property
    def asks_for_text(self) -> bool:
        """``log #12:`` still needs the note: chat platforms open a form for it."""
        return self.command.rstrip().endswith(":")


@dataclass(frozen=True, slots=True)
class Item:
    """One line of a list: a title, an optional detail line, and optional buttons."""

    title: str
    detail: str = ""
    actions: tuple[Action, ...] = ()


@dataclass(slots=True)
class Section:
    heading: str = ""
    text: str = ""
    fields: list[Field] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    footer: str = ""
    compact: bool = False  # items as one block of lines (a digest's many short lists), without buttons


@dataclass(slots=True)
class Reply:
    title: str = ""
    text: str = ""
    fields: list[Field] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    kind: Literal["info", "choice", "error"] = "info"
    ephemeral: bool = True
    reveals: tuple[int, ...] = ()  # opportunity ids shown: a shared copy must be visible to all who read it
    shareable: bool = True  # False: personal (a pipeline's totals cover deals it does not list)

    @classmethod
    def error(cls, text: str) -> Reply:
        return cls(text=text, kind="error")
