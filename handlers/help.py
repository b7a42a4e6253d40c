"""`help [command]`, generated from the command declarations."""

from __future__ import annotations

from handlers import texts
from handlers.invocation import Context
from handlers.registry import CommandError, commands
from handlers.reply import Item, Reply, Section


@commands.command("help", usage="help [command]", summary="This list, or the details of one command.",
                  example="help pipeline")
async def help_(ctx: Context, args: str) -> Reply:
    word = args.strip().lower().removeprefix("/crm").strip()
    if word:
        cmd = commands.get(word)
        if cmd is None or cmd.hidden:
            raise CommandError(texts.UNKNOWN_HELP_TOPIC.format(word=word))
        return Reply(title=f"/crm {cmd.usage}", text=f"{cmd.summary}\nExample: /crm {cmd.example}")
    items = [
        Item(f"/crm {c.usage}", f"{c.summary} Example: /crm {c.example}")
        for c in commands
    ]
    return Reply(title=texts.HELP_TITLE, text=texts.HELP_INTRO, sections=[Section(items=items)])
