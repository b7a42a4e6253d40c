"""`pipeline [mine|team|@user]`: open deals by stage, weighted total, what closes this month."""

from __future__ import annotations

import re

from crm_store.models import User
from crm_store.deals import has_reports, pipeline as load_pipeline
from handlers import texts
from handlers.format import deal_line, money
from handlers.invocation import Context
from handlers.lookup import check_query
from handlers.registry import CommandError, commands
from handlers.reply import Action, Field, Item, Reply, Section

# Slack renders a mention as <@U123> or <@U123|name>; people also type @email or @name.
SLACK_MENTION = re.compile(r"^<@([A-Z0-9]+)(?:\|[^>]*)?>$")


@commands.command("pipeline", usage="pipeline [mine|team|@someone]",
                  summary="Open deals by stage with weighted total and what closes this month.",
                  example="pipeline team")
async def pipeline(ctx: Context, args: str) -> Reply:
    if not ctx.actor.is_mapped:
        raise CommandError(texts.UNMAPPED_HINT)
    words = args.split()
    if len(words) > 1 and not words[0].startswith(("@", "<@")):
        raise CommandError(texts.PIPELINE_USAGE)
    target = (args.strip() or "mine").lower()
    assert ctx.actor.user_id is not None
    if target == "mine":
        subject_id, name, scope = ctx.actor.user_id, "Your pipeline", "mine"
    elif target == "team":
        if not await has_reports(ctx.store, ctx.actor.user_id):
            raise CommandError(texts.PIPELINE_NO_TEAM)
        subject_id, name, scope = ctx.actor.user_id, "Your team's pipeline", "team"
    elif target.startswith(("@", "<@")):
        user = await _user(ctx, args.strip())
        subject_id, name, scope = user.id, f"Pipeline of {user.name}", "user"
    else:
        raise CommandError(texts.PIPELINE_USAGE)
    data = await load_pipeline(ctx.store, ctx.actor, subject_id, scope, ctx.today)  # type: ignore[arg-type]
    if not data.lines:
        return Reply(title=name, text=texts.PIPELINE_EMPTY)
    fields, sections = [], []
    for currency, (count, amount, weighted) in data.totals.items():
        fields += [Field(f"Open ({currency})", f"{count} deals · {money(amount, currency)}"),
                   Field(f"Weighted ({currency})", money(weighted, currency))]
        sections.append(Section(f"By stage ({currency})", items=[
            Item(f"{line.stage}: {line.count} deal{'s' if line.count != 1 else ''}",
                 f"{money(line.amount, currency)} · weighted {money(line.weighted, currency)}")
            for line in data.lines if line.currency == currency
        ]))
    closing = Section(f"Closing this month ({data.closing_count})", items=[
        Item(o.name, deal_line(o), (Action("Open", f"deal #{o.id}"),)) for o in data.closing_this_month
    ], text="" if data.closing_count else "Nothing closes this month.")
    if data.closing_count > len(data.closing_this_month):
        closing.footer = f"… and {data.closing_count - len(data.closing_this_month)} more"
    return Reply(title=name, fields=fields, sections=[*sections, closing], shareable=False)


async def _user(ctx: Context, who: str) -> User:
    mention = SLACK_MENTION.match(who)
    needle = mention.group(1) if mention else check_query(who.lstrip("@"))
    users = await ctx.store.find_users(needle)
    if not users:
        raise CommandError(texts.PIPELINE_NO_USER.format(who=who))
    if len(users) > 1:
        raise CommandError("ambiguous", reply=Reply(
            text=texts.PIPELINE_MANY_USERS.format(who=who), kind="choice",
            sections=[Section(items=[Item(u.name, u.email, (Action("Choose", f"pipeline @{u.email}", "primary"),))
                                     for u in users])],
        ))
    return users[0]
