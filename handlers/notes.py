"""`log` (a note on a deal's timeline) and `timeline` (its latest entries)."""

from __future__ import annotations

from crm_store.deals import MAX_NOTE_CHARS, add_note, recent_entries, room_deal
from crm_store.models import Opportunity
from handlers import texts
from handlers.format import timeline_line
from handlers.invocation import Context
from handlers.lookup import deal_actions, resolve_deal
from handlers.registry import CommandError, commands
from handlers.reply import Item, Reply, Section

TIMELINE_LIMIT = 10


async def _room_deal(ctx: Context) -> Opportunity | None:
    channel = ctx.invocation.channel_id
    if channel is None:
        return None
    return await room_deal(ctx.store, ctx.actor, ctx.invocation.platform, channel)


@commands.command("log", usage="log <deal>: <note>",
                  summary="Add a note to a deal's timeline (in a deal room: `log <note>`).",
                  example="log acme renewal: sent the revised quote", args="required")
async def log(ctx: Context, args: str) -> Reply:
    if not ctx.actor.is_mapped:
        raise CommandError(texts.LOG_UNMAPPED)
    opp = await _room_deal(ctx)
    note = args
    if opp is None:
        deal_text, sep, note = args.partition(":")
        if not sep or not deal_text.strip():
            raise CommandError(texts.LOG_USAGE)
        note = note.strip()
        if not note:
            raise CommandError(texts.LOG_EMPTY_NOTE.format(deal=deal_text.strip()))
        if len(note) > MAX_NOTE_CHARS:
            raise CommandError(texts.NOTE_TOO_LONG.format(limit=MAX_NOTE_CHARS, length=len(note)))
        opp = await resolve_deal(ctx, deal_text, then="log #{id}: " + note.replace("{", "{{").replace("}", "}}"))
    note = note.strip()
    if len(note) > MAX_NOTE_CHARS:
        raise CommandError(texts.NOTE_TOO_LONG.format(limit=MAX_NOTE_CHARS, length=len(note)))
    await add_note(ctx.store, ctx.actor, opp.id, note, via=ctx.invocation.platform, occurred_at=ctx.now)
    return Reply(text=texts.LOG_DONE.format(deal=opp.name), actions=deal_actions(opp)[2:])


@commands.command("timeline", usage="timeline [deal]",
                  summary="The latest entries on a deal's timeline: notes, decisions, stage changes.",
                  example="timeline acme renewal")
async def timeline(ctx: Context, args: str) -> Reply:
    opp: Opportunity | None
    if args.strip():
        opp = await resolve_deal(ctx, args, then="timeline #{id}")
    else:
        opp = await _room_deal(ctx)
        if opp is None:
            raise CommandError(texts.TIMELINE_USAGE)
    entries = await recent_entries(ctx.store, ctx.actor, opp.id, limit=TIMELINE_LIMIT)
    if not entries:
        return Reply(title=f"Timeline · {opp.name}", text=texts.TIMELINE_EMPTY.format(deal=opp.name, ref=opp.id))
    return Reply(title=f"Timeline · {opp.name}",
                 sections=[Section(items=[Item(*timeline_line(e)) for e in entries])],
                 actions=deal_actions(opp)[:2])
