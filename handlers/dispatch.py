"""The one entry point adapters call: words after ``/crm`` in, a `Reply` out.

Expected failures (`CommandError`) become their message; anything else goes to the error hook,
which logs it with a reference and answers politely, so no stack trace ever reaches a user.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from crm_store import Store
from deal_rooms.rooms import DealRooms
import handlers.capture
import handlers.digest
import handlers.help
import handlers.notes
import handlers.pipeline
import handlers.rooms
import handlers.search  # noqa: F401  (importing the modules declares their commands)
from handlers import lookup, texts
from handlers.digest_schedule import DigestSettings
from handlers.invocation import Context, Invocation
from handlers.registry import CommandError, CommandTable, commands
from handlers.reply import Action, Reply

log = logging.getLogger("dealbot.commands")
ErrorHook = Callable[[BaseException, Invocation], Reply]


def log_and_apologise(error: BaseException, invocation: Invocation) -> Reply:
    ref = secrets.token_hex(4)
    log.error("command failed (ref %s, platform %s, actor %s)", ref, invocation.platform,
              invocation.actor.user_id, exc_info=error)
    return Reply.error(texts.INTERNAL_ERROR.format(ref=ref))


def split_command(text: str) -> tuple[str, str]:
    """``"/crm deal  acme"`` -> ``("deal", "acme")``; the rest keeps its inner line breaks."""
    text = text.strip()
    if text.lower().startswith("/crm") and (len(text) == 4 or text[4].isspace()):
        text = text[4:]
    parts = text.strip().split(None, 1)
    return (parts[0], parts[1].strip()) if len(parts) == 2 else (parts[0] if parts else "", "")


class Dispatcher:
    def __init__(self, store: Store, *, table: CommandTable = commands, on_error: ErrorHook = log_and_apologise,
                 rooms: Mapping[str, DealRooms] | None = None, digests: DigestSettings | None = None) -> None:
        self.store = store
        self.table = table
        self.on_error = on_error
        self.rooms = dict(rooms or {})  # platform -> its deal rooms
        self.digests = digests or DigestSettings()

    async def dispatch(self, invocation: Invocation, now: datetime | None = None) -> Reply:
        ctx = Context(self.store, invocation, now or datetime.now(timezone.utc), self.rooms.get(invocation.platform),
                      self.digests)
        try:
            return await self._run(ctx)
        except CommandError as expected:
            return expected.reply
        except Exception as error:  # the error hook: log, never show the trace
            return self.on_error(error, invocation)

    async def _run(self, ctx: Context) -> Reply:
        text = ctx.invocation.text
        if len(text) > texts.MAX_INPUT_CHARS:
            raise CommandError(texts.TOO_LONG.format(length=len(text), limit=texts.MAX_INPUT_CHARS))
        word, rest = split_command(text)
        if not word:
            word = "help"
        cmd = self.table.get(word)
        if cmd is None:
            return await self._not_a_command(ctx, word, rest)
        if cmd.args == "required" and not rest:
            raise CommandError(texts.EMPTY_ARGS.format(name=cmd.name, usage=cmd.usage, example=cmd.example))
        if cmd.args == "none" and rest:
            raise CommandError(texts.NO_ARGS_EXPECTED.format(name=cmd.name, usage=cmd.usage))
        return await cmd.func(ctx, rest)

    async def _not_a_command(self, ctx: Context, word: str, rest: str) -> Reply:
        """Search for the whole text; if the first word looks like a typo'd command, say so too."""
        everything = f"{word} {rest}".strip()
        suggestion = self.table.closest(word)
        if suggestion is None:
            return await lookup.find(ctx, everything)
        corrected = f"{suggestion} {rest}".strip()
        fix = Action(f"Run /crm {corrected}", corrected, "primary")
        try:
            reply = await lookup.find(ctx, everything)
        except CommandError:
            return Reply(text=texts.UNKNOWN_COMMAND.format(word=word, suggestion=corrected), kind="error",
                         actions=[fix])
        reply.text = texts.UNKNOWN_COMMAND_WITH_RESULTS.format(word=word, suggestion=corrected)
        reply.actions.insert(0, fix)
        return reply
