"""Lookups: `find` (also the default), `deal`, `account`, `contact`, and deal resolution."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from crm_store import Found
from crm_store.deals import account_card, key_contacts, recent_entries
from crm_store.models import Account, Contact, Opportunity, TimelineEntry
from handlers import texts
from handlers.format import clip, day, deal_line, money, person, timeline_line
from handlers.invocation import Context
from handlers.registry import CommandError, commands
from handlers.reply import Action, Field, Item, Reply, Section

T = TypeVar("T")
REF = re.compile(r"^#(\d{1,12})$")
MIN_SCORE = 60
CLEAR_LEAD = 8
MAX_CHOICES = 5


def check_query(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > texts.MAX_QUERY_CHARS:
        raise CommandError(texts.QUERY_TOO_LONG.format(limit=texts.MAX_QUERY_CHARS, length=len(text)))
    return text


def pick(found: Sequence[Found[T]]) -> list[Found[T]]:
    """The one clear match, or the close candidates to choose from (empty: nothing good)."""
    good = [f for f in found if f.match.score >= MIN_SCORE or f.match.tier >= 2]
    if len(good) <= 1:
        return good
    top, second = good[0].match, good[1].match
    if top.tier > second.tier or top.score - second.score >= CLEAR_LEAD:
        return good[:1]
    return [f for f in good if f.match.tier == top.tier and f.match.score >= top.score - 15][:MAX_CHOICES]


def choice_reply(kinds: str, query: str, options: list[Item]) -> Reply:
    return Reply(text=texts.DID_YOU_MEAN.format(kinds=kinds, query=query), kind="choice",
                 sections=[Section(items=options)])


async def resolve(
    ctx: Context, text: str, kind: str, kinds: str, find: Callable[..., Any], by_id: Callable[..., Any],
    option: Callable[[Any], Item],
) -> Any:
    """One row for `text` (a name with typos, or ``#id``), or a CommandError with a choice."""
    query = check_query(text)
    ref = REF.match(query)
    if ref:
        row = await by_id(ctx.actor, int(ref.group(1)))
        if row is None:
            raise CommandError(texts.NOT_VISIBLE_REF.format(kind=kind, ref=query))
        return row
    if not ctx.actor.is_mapped:
        raise CommandError(texts.UNMAPPED_HINT)
    chosen = pick(await find(ctx.actor, query, limit=MAX_CHOICES * 2))
    if not chosen:
        raise CommandError(texts.NO_MATCH.format(kind=kind, query=query))
    if len(chosen) > 1:
        reply = choice_reply(kinds, query, [option(f.row) for f in chosen])
        if kind == "deal":
            reply.reveals = tuple(f.row.id for f in chosen)
        raise CommandError("ambiguous", reply=reply)
    return chosen[0].row


async def resolve_deal(ctx: Context, text: str, then: str = "deal #{id}") -> Opportunity:
    """The deal meant by `text`; a choice's buttons run `then` with the chosen deal's id."""
    return await resolve(
        ctx, text, "deal", "deals", ctx.store.find_opportunities, ctx.store.opportunity,
        lambda o: Item(o.name, deal_line(o), (Action("Choose", then.format(id=o.id), "primary"),)),
    )


def deal_actions(opp: Opportunity) -> list[Action]:
    return [
        Action("Log decision", f"decision #{opp.id}:"),
        Action("Log note", f"log #{opp.id}:"),
        Action("Open timeline", f"timeline #{opp.id}"),
    ]


def decision_line(entry: TimelineEntry, limit: int) -> tuple[str, str]:
    """A standing decision: what was decided, then when, who, and where it was said."""
    said = [day(entry.occurred_at.date()), person(entry.author)] + ([entry.permalink] if entry.permalink else [])
    return clip(entry.text, limit), " · ".join(said)


async def deal_card(ctx: Context, found: Opportunity) -> Reply:
    opp = await ctx.store.opportunity(ctx.actor, found.id)  # with its team loaded
    if opp is None:
        raise CommandError(texts.NOT_VISIBLE_REF.format(kind="deal", ref=f"#{found.id}"))
    contacts, _ = await key_contacts(ctx.store, ctx.actor, opp.account_id)
    entries = await recent_entries(ctx.store, ctx.actor, opp.id, limit=3)
    decisions = await recent_entries(ctx.store, ctx.actor, opp.id, limit=3, decisions=True)
    team = ", ".join(sorted(m.user.name for m in opp.team)) or "—"
    fields = [
        Field("Account", opp.account.name),
        Field("Amount", money(opp.amount, opp.currency)),
        Field("Stage", opp.stage if opp.status == "open" else f"{opp.stage} ({opp.status})"),
        Field("Close date", day(opp.close_date)),
        Field("Owner", person(opp.owner)),
        Field("Team", team),
    ]
    sections = []
    if contacts:
        sections.append(Section("Key contacts", items=[Item(c.name, c.title or "") for c in contacts]))
    if decisions:
        sections.append(Section(texts.CARD_DECISIONS, items=[Item(*decision_line(e, 160)) for e in decisions]))
    if entries:
        sections.append(Section("Latest on the timeline", items=[Item(*timeline_line(e, 160)) for e in entries]))
    return Reply(title=opp.name, fields=fields, sections=sections, actions=deal_actions(opp), reveals=(opp.id,))


@commands.command("deal", usage="deal <name>", summary="Show a deal card: amount, stage, close date, team, latest activity.",
                  example="deal acme renewal", args="required")
async def deal(ctx: Context, args: str) -> Reply:
    return await deal_card(ctx, await resolve_deal(ctx, args))


@commands.command("account", usage="account <name>", summary="Show an account with its open deals and key contacts.",
                  example="account acme corp", args="required")
async def account(ctx: Context, args: str) -> Reply:
    acct: Account = await resolve(
        ctx, args, "account", "accounts", ctx.store.find_accounts, ctx.store.account,
        lambda a: Item(a.name, _account_line(a), (Action("Choose", f"account #{a.id}", "primary"),)),
    )
    card = await account_card(ctx.store, ctx.actor, acct.id)
    assert card is not None
    fields = [Field("Owner", person(acct.owner)), Field("Industry", acct.industry or "—"),
              Field("Domain", acct.domain or "—"), Field("Contacts", f"{card.contact_count:,}")]
    sections = [Section("Open deals", items=[
        Item(o.name, deal_line(o), (Action("Open", f"deal #{o.id}"),)) for o in card.open_deals
    ], text="" if card.open_deals else "No open deals that you can see.")]
    if card.contacts:
        sections.append(Section("Key contacts", items=[Item(c.name, c.title or "") for c in card.contacts]))
    return Reply(title=acct.name, fields=fields, sections=sections, reveals=tuple(o.id for o in card.open_deals))


def _account_line(a: Account) -> str:
    return " · ".join(x for x in (a.industry, a.domain, f"owner {person(a.owner)}" if a.owner else None) if x)


@commands.command("contact", usage="contact <name>", summary="Show a contact: title, account, email and phone.",
                  example="contact maya patel", args="required")
async def contact(ctx: Context, args: str) -> Reply:
    person_: Contact = await resolve(
        ctx, args, "contact", "contacts", ctx.store.find_contacts, ctx.store.contact,
        lambda c: Item(c.name, _contact_line(c), (Action("Choose", f"contact #{c.id}", "primary"),)),
    )
    fields = [Field("Title", person_.title or "—"),
              Field("Account", person_.account.name if person_.account else "—"),
              Field("Email", person_.email or "—"), Field("Phone", person_.phone or "—")]
    actions = [Action("Open account", f"account #{person_.account_id}")] if person_.account_id else []
    return Reply(title=person_.name, fields=fields, actions=actions)


def _contact_line(c: Contact) -> str:
    return " · ".join(x for x in (c.title, c.account.name if c.account else None) if x)


FIND_LIMIT = 5
FIND_SPREAD = 20


@commands.command("find", usage="find <text>", summary="Search accounts, contacts and deals by name; typos are fine.",
                  example="find acme", args="required")
async def find(ctx: Context, args: str) -> Reply:
    query = check_query(args)
    if not ctx.actor.is_mapped:
        return Reply(text=texts.UNMAPPED_HINT, kind="error")
    store, actor = ctx.store, ctx.actor
    kinds = (
        ("Accounts", await store.find_accounts(actor, query, FIND_LIMIT + 1),
         lambda a: Item(a.name, _account_line(a), (Action("Open", f"account #{a.id}"),))),
        ("Deals", await store.find_opportunities(actor, query, FIND_LIMIT + 1),
         lambda o: Item(o.name, deal_line(o), (Action("Open", f"deal #{o.id}"),))),
        ("Contacts", await store.find_contacts(actor, query, FIND_LIMIT + 1),
         lambda c: Item(c.name, _contact_line(c), (Action("Open", f"contact #{c.id}"),))),
    )
    best = max((f.match.score for _, results, _ in kinds for f in results), default=0)
    sections, reveals = [], []
    for heading, results, item in kinds:
        # Keep what is close to the best hit of any kind, so "acme" does not list "Kwame Kim".
        good = [f for f in results if f.match.tier >= 2 or f.match.score >= max(MIN_SCORE, best - FIND_SPREAD)]
        if good:
            shown = good[:FIND_LIMIT]
            footer = texts.MORE_MATCHES if len(good) > FIND_LIMIT else ""
            sections.append(Section(heading, items=[item(f.row) for f in shown], footer=footer))
            if heading == "Deals":
                reveals += [f.row.id for f in shown]
    if not sections:
        raise CommandError(texts.NOTHING_FOUND.format(query=clip(query, 80)))
    return Reply(title=f"Results for “{clip(query, 80)}”", sections=sections, reveals=tuple(reveals))
