"""`log` and `decision` (a note or decision on a deal's timeline, by command or form) and
`timeline` (its latest entries)."""

from __future__ import annotations

from dataclasses import dataclass

from crm_store.deals import MAX_NOTE_CHARS, EntryKind, Source, add_entry, recent_entries, room_deal
from crm_store.models import Opportunity, TimelineEntry
from handlers import texts
from handlers.format import timeline_line
from handlers.invocation import Context
from handlers.lookup import deal_actions, resolve_deal
from handlers.registry import CommandError, FormError, commands
from handlers.reply import Item, Reply, Section

TIMELINE_LIMIT = 10


async def _room_deal(ctx: Context) -> Opportunity | None:
    channel = ctx.invocation.channel_id
    if channel is None:
        return None
    return await room_deal(ctx.store, ctx.actor, ctx.invocation.platform, channel)


@dataclass(frozen=True, slots=True)
class _Words:
    """What `log` and `decision` say to the user; the two commands differ only in these."""

    noun: str
    usage: str
    empty: str
    done: str


_WORDS: dict[EntryKind, _Words] = {
    "note": _Words("note", texts.LOG_USAGE, texts.LOG_EMPTY_NOTE, texts.LOG_DONE),
    "decision": _Words("decision", texts.DECISION_USAGE, texts.DECISION_EMPTY, texts.DECISION_DONE),
}


async def _log(ctx: Context, args: str, kind: EntryKind, command: str) -> Reply:
    """`<deal>: <text>` anywhere, or just `<text>` in a deal room."""
    words = _WORDS[kind]
    if not ctx.actor.is_mapped:
        raise CommandError(texts.LOG_UNMAPPED.format(noun=words.noun))
    opp = await _room_deal(ctx)
    text = args
    if opp is None:
        deal_text, sep, text = args.partition(":")
        if not sep or not deal_text.strip():
            raise CommandError(words.usage)
        text = text.strip()
        if not text:
            raise CommandError(words.empty.format(deal=deal_text.strip()))
        _check_length(text, words)
        opp = await resolve_deal(ctx, deal_text, then=f"{command} #{{id}}: " + text.replace("{", "{{").replace("}", "}}"))
    text = text.strip()
    _check_length(text, words)
    await add_entry(ctx.store, ctx.actor, opp.id, kind, text, via=ctx.invocation.platform, occurred_at=ctx.now)
    return Reply(text=words.done.format(deal=opp.name), actions=deal_actions(opp)[2:], reveals=(opp.id,))


def _check_length(text: str, words: _Words) -> None:
    if len(text) > MAX_NOTE_CHARS:
        raise CommandError(texts.NOTE_TOO_LONG.format(noun=words.noun, limit=MAX_NOTE_CHARS, length=len(text)))


@commands.command("log", usage="log <deal>: <note>",
                  summary="Add a note to a deal's timeline (in a deal room: `log <note>`).",
                  example="log acme renewal: sent the revised quote", args="required")
async def log(ctx: Context, args: str) -> Reply:
    return await _log(ctx, args, "note", "log")


@commands.command("decision", usage="decision <deal>: <text>",
                  summary="Record a decision on a deal's timeline (in a deal room: `decision <text>`).",
                  example="decision acme renewal: 3-year term agreed", args="required")
async def decision(ctx: Context, args: str) -> Reply:
    return await _log(ctx, args, "decision", "decision")


async def log_from_form(ctx: Context, kind: EntryKind, opportunity_id: int | None, text: str,
                        source: Source | None = None) -> Reply:
    """A note or decision submitted through a form (Slack modal, Teams card): every problem is
    raised at once as a `FormError` naming the field, for the form to show inline."""
    words = _WORDS[kind]
    problems: dict[str, str] = {}
    text = text.strip()
    if not text:
        problems["text"] = texts.FORM_EMPTY.format(noun=words.noun)
    elif len(text) > MAX_NOTE_CHARS:
        problems["text"] = texts.NOTE_TOO_LONG.format(noun=words.noun, limit=MAX_NOTE_CHARS, length=len(text))
    opp = await ctx.store.opportunity(ctx.actor, opportunity_id) if opportunity_id is not None else None
    if not ctx.actor.is_mapped:
        problems["deal"] = texts.LOG_UNMAPPED.format(noun=words.noun)
    elif opp is None:
        problems["deal"] = texts.FORM_NO_DEAL if opportunity_id is None else texts.FORM_DEAL_NOT_VISIBLE
    if problems:
        raise FormError(problems)
    assert opp is not None
    logged = await add_entry(ctx.store, ctx.actor, opp.id, kind, text, via=ctx.invocation.platform,
                             occurred_at=ctx.now, source=source)
    done = words.done if logged.created else texts.FORM_ALREADY_LOGGED
    return Reply(text=done.format(deal=opp.name, noun=words.noun), actions=deal_actions(opp)[2:], reveals=(opp.id,))


def _timeline_item(entry: TimelineEntry) -> Item:
    """A timeline line; an entry captured from a chat message links back to it."""
    title, detail = timeline_line(entry)
    return Item(title, f"{detail}\n{entry.permalink}" if entry.permalink else detail)


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
        return Reply(title=f"Timeline · {opp.name}", text=texts.TIMELINE_EMPTY.format(deal=opp.name, ref=opp.id),
                     reveals=(opp.id,))
    return Reply(title=f"Timeline · {opp.name}",
                 sections=[Section(items=[_timeline_item(e) for e in entries])],
                 actions=deal_actions(opp)[:2], reveals=(opp.id,))
