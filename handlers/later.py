"""Commands of the grammar whose features land with later releases; they say so plainly."""

from __future__ import annotations

from handlers import texts
from handlers.invocation import Context
from handlers.registry import CommandError, commands
from handlers.reply import Reply

_LATER = [
    ("digest", "digest daily|weekly|off [HH:MM] [weekday]", "Subscribe to a digest of your team's pipeline.",
     "digest weekly 08:30 monday"),
]


def _declare(name: str, usage: str, summary: str, example: str) -> None:
    async def not_yet(ctx: Context, args: str) -> Reply:
        raise CommandError(texts.NOT_YET.format(name=name))

    commands.command(name, usage=usage, summary=summary, example=example, available=False)(not_yet)


for _spec in _LATER:
    _declare(*_spec)
