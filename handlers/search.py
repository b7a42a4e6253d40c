"""`search <words>`: notes, decisions and deal-room conversations of the deals one may see, best
first, each with the deal, who said it and when, and a link back to where it was said."""

from __future__ import annotations

from crm_store.search import Hit, search as search_text, terms
from handlers import texts
from handlers.format import KIND_LABELS, clip, day
from handlers.invocation import Context
from handlers.lookup import check_query
from handlers.registry import CommandError, commands
from handlers.reply import Action, Item, Reply, Section

SEARCH_LIMIT = 10
SNIPPET_CHARS = 300


def kind_label(kind: str) -> str:
    if kind == "message":
        return texts.SEARCH_MESSAGE
    return KIND_LABELS.get(kind, kind.replace("_", " ").capitalize())


def hit_item(hit: Hit) -> Item:
    """``Decision · ACME Renewal`` over the snippet, who and when, and the permalink; a hit
    without a permalink offers its deal's timeline instead."""
    detail = f"{clip(hit.snippet, SNIPPET_CHARS)}\n{hit.author or '—'} · {day(hit.at)}"
    if hit.permalink:
        return Item(f"{kind_label(hit.kind)} · {hit.opportunity}", f"{detail}\n{hit.permalink}")
    return Item(f"{kind_label(hit.kind)} · {hit.opportunity}", detail,
                (Action(texts.SEARCH_OPEN_TIMELINE, f"timeline #{hit.opportunity_id}"),))


@commands.command("search", usage="search <words>", summary="Search notes, decisions and deal-room conversations.",
                  example="search security review", args="required")
async def search(ctx: Context, args: str) -> Reply:
    query = check_query(args)
    if not ctx.actor.is_mapped:
        return Reply(text=texts.UNMAPPED_HINT, kind="error")
    shown_query = clip(query, 80)
    if not terms(query):
        raise CommandError(texts.SEARCH_NO_WORDS.format(query=shown_query))
    hits = await search_text(ctx.store, ctx.actor, query, limit=SEARCH_LIMIT + 1)
    if not hits:
        raise CommandError(texts.SEARCH_NOTHING.format(query=shown_query))
    shown = hits[:SEARCH_LIMIT]
    footer = texts.SEARCH_MORE.format(limit=SEARCH_LIMIT) if len(hits) > SEARCH_LIMIT else ""
    return Reply(title=texts.SEARCH_TITLE.format(query=shown_query),
                 sections=[Section(items=[hit_item(h) for h in shown], footer=footer)],
                 reveals=tuple(dict.fromkeys(h.opportunity_id for h in shown)))
