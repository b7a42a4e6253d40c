"""Every /crm command, driven platform-neutrally through the shell adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.shell import ShellAdapter
from crm_store import Store
from crm_store.models import AuditLog, DealRoom, TimelineEntry
from handlers import texts
from handlers.registry import commands
from tests.org import Org, utc_today

Shell = Callable[..., Awaitable[ShellAdapter]]


async def test_help_lists_every_command_with_its_example(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm help")
    listed = [(i.title, i.detail) for i in reply.sections[0].items]
    assert len(listed) == len(list(commands))
    for (title, detail), cmd in zip(listed, commands):
        assert title.startswith(f"/crm {cmd.usage}") and detail.endswith(f"Example: /crm {cmd.example}")
    assert [c.name for c in commands][:3] == ["help", "find", "deal"]


async def test_help_for_one_command_and_for_an_unknown_one(shell: Shell) -> None:
    me = await shell()
    one = await me.ask("/crm help pipeline")
    assert one.title == "/crm pipeline [mine|team|@someone]" and "pipeline team" in one.text
    unknown = await me.ask("/crm help frobnicate")
    assert unknown.kind == "error" and "frobnicate" in unknown.text


async def test_bare_crm_shows_help(shell: Shell) -> None:
    assert (await (await shell()).ask("/crm")).title == texts.HELP_TITLE


@pytest.mark.parametrize("cmd", list(commands), ids=lambda c: c.name)
async def test_every_help_example_runs_without_an_internal_error(shell: Shell, cmd) -> None:  # type: ignore[no-untyped-def]
    reply = await (await shell("admin")).ask(f"/crm {cmd.example}")
    assert "went wrong on our side" not in reply.text


async def test_find_searches_every_kind(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm find acme")
    headings = {s.heading: [i.title for i in s.items] for s in reply.sections}
    assert "ACME Corporation, Inc." in headings["Accounts"]
    assert "ACME Renewal 2027" in headings["Deals"]
    assert "ACME Pilot" not in headings["Deals"]  # Ben's deal: Rita may not see it


async def test_words_that_are_no_command_are_searched(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm globex")
    assert any(i.title == "Globex Corporation" for s in reply.sections for i in s.items)


async def test_deal_card(shell: Shell, org: Org) -> None:
    reply = await (await shell()).ask("/crm deal acme renewal")
    assert reply.title == "ACME Renewal 2027"
    fields = {f.label: f.value for f in reply.fields}
    assert fields["Amount"] == "$250,000" and fields["Stage"] == "Negotiation"
    assert fields["Owner"] == "Rita Rep" and fields["Team"] == "Sam Engineer"
    assert any(i.title == "Wile E. Coyote" for s in reply.sections for i in s.items)
    assert [a.label for a in reply.actions] == ["Log decision", "Log note", "Open timeline"]
    assert f"timeline #{org.deals['acme_renewal']}" in [a.command for a in reply.actions]


async def test_deal_with_several_close_matches_asks_which(shell: Shell, org: Org) -> None:
    reply = await (await shell("admin")).ask("/crm deal acme")
    assert reply.kind == "choice"
    commands_offered = {a.command for s in reply.sections for i in s.items for a in i.actions}
    assert commands_offered == {f"deal #{org.deals['acme_renewal']}", f"deal #{org.deals['acme_pilot']}"}
    chosen = await (await shell("admin")).ask(f"/crm deal #{org.deals['acme_pilot']}")
    assert chosen.title == "ACME Pilot"


async def test_deal_that_matches_nothing(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm deal qqqxxzz")
    assert reply.kind == "error" and "No deal matches “qqqxxzz”" in reply.text


async def test_account_card_lists_only_visible_open_deals(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm account acme corp")
    assert reply.title == "ACME Corporation, Inc."
    deals = [i.title for s in reply.sections if s.heading == "Open deals" for i in s.items]
    assert deals == ["ACME Renewal 2027"]
    assert {f.label: f.value for f in reply.fields}["Contacts"] == "1"


async def test_contact_card(shell: Shell, org: Org) -> None:
    reply = await (await shell()).ask("/crm contact wile coyote")
    assert reply.title == "Wile E. Coyote"
    assert {f.label: f.value for f in reply.fields}["Account"] == "ACME Corporation, Inc."
    assert reply.actions[0].command == f"account #{org.accounts['acme']}"


async def test_pipeline_mine(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm pipeline")
    fields = {f.label: f.value for f in reply.fields}
    # Rita: ACME renewal $250k in Negotiation (75 %) and the Société deal €75k in Proposal (50 %).
    assert fields["Open (USD)"] == "1 deals · $250,000" and fields["Weighted (USD)"] == "$187,500"
    assert fields["Open (EUR)"] == "1 deals · €75,000" and fields["Weighted (EUR)"] == "€37,500"
    closing = next(s for s in reply.sections if s.heading.startswith("Closing this month"))
    today = utc_today()
    expected = {name for name, days in (("ACME Renewal 2027", 3), ("Société Eaux Migration", 5))
                if (today + timedelta(days=days)).month == today.month}
    assert {i.title for i in closing.items} == expected


async def test_pipeline_team_and_of_a_person(shell: Shell) -> None:
    mona = await shell("mgr1")
    team = await mona.ask("/crm pipeline team")
    assert {f.label: f.value for f in team.fields}["Open (USD)"] == "2 deals · $290,000"
    for who in ("@rep.b@org.test", "@Ben Rep", "@ben"):
        ben = await mona.ask(f"/crm pipeline {who}")
        assert ben.title == "Pipeline of Ben Rep"
        assert {f.label: f.value for f in ben.fields}["Open (USD)"] == "1 deals · $40,000"


async def test_pipeline_team_without_reports_and_unknown_person(shell: Shell) -> None:
    rita = await shell()
    assert (await rita.ask("/crm pipeline team")).text == texts.PIPELINE_NO_TEAM
    nobody = await rita.ask("/crm pipeline @nobody@nowhere.test")
    assert nobody.kind == "error" and "nobody@nowhere.test" in nobody.text
    wrong = await rita.ask("/crm pipeline everything please")
    assert wrong.text == texts.PIPELINE_USAGE


async def test_log_writes_a_note_and_an_audit_row(shell: Shell, store: Store, org: Org) -> None:
    reply = await (await shell()).ask("/crm log acme renewal: sent the revised quote")
    assert reply.text == "Noted on ACME Renewal 2027."
    async with store.session() as s:
        entry = (await s.execute(select(TimelineEntry))).scalar_one()
        audit = (await s.execute(select(AuditLog))).scalar_one()
    assert (entry.kind, entry.text, entry.author_id) == ("note", "sent the revised quote", org.users["rep_a"])
    assert (audit.action, audit.entity_id) == ("note.create", str(org.deals["acme_renewal"]))


async def test_log_inside_a_deal_room_needs_no_deal(shell: Shell, store: Store, org: Org) -> None:
    async with store.transaction() as s:
        s.add(DealRoom(opportunity_id=org.deals["globex_expansion"], platform="shell", channel_id="room-1"))
    cara = await shell("rep_c", channel_id="room-1")
    assert (await cara.ask("/crm log customer: wants a call")).text == "Noted on Globex Expansion."
    timeline = await cara.ask("/crm timeline")
    assert timeline.sections[0].items[0].detail == "customer: wants a call"


async def test_log_usage_errors(shell: Shell, store: Store) -> None:
    rita = await shell()
    assert (await rita.ask("/crm log acme renewal without colon")).text == texts.LOG_USAGE
    assert "The note is empty" in (await rita.ask("/crm log acme renewal:   ")).text
    too_long = await rita.ask("/crm log acme renewal: " + "x" * 3001)
    assert too_long.kind == "error" and "3,001" in too_long.text
    assert (await store.counts())["timeline_entries"] == 0


async def test_log_on_an_ambiguous_deal_offers_buttons_that_finish_the_job(shell: Shell, org: Org) -> None:
    admin = await shell("admin")
    reply = await admin.ask("/crm log acme: call {the} CFO")
    assert reply.kind == "choice"
    follow_up = next(a.command for s in reply.sections for i in s.items for a in i.actions
                     if a.command.startswith(f"log #{org.deals['acme_pilot']}"))
    assert follow_up == f"log #{org.deals['acme_pilot']}: call {{the}} CFO"
    assert (await admin.ask(f"/crm {follow_up}")).text == "Noted on ACME Pilot."


async def test_timeline_newest_first(shell: Shell) -> None:
    rita = await shell()
    await rita.ask("/crm log acme renewal: first")
    await rita.ask("/crm log acme renewal: second")
    reply = await rita.ask("/crm timeline acme renewal")
    assert [i.detail for i in reply.sections[0].items] == ["second", "first"]
    assert "Note" in reply.sections[0].items[0].title


async def test_timeline_empty_and_without_deal(shell: Shell) -> None:
    rita = await shell()
    empty = await rita.ask("/crm timeline societe eaux")
    assert "Nothing on the timeline" in empty.text
    assert (await rita.ask("/crm timeline")).text == texts.TIMELINE_USAGE


async def test_room_needs_a_platform_with_deal_rooms(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm room acme renewal")
    assert reply.kind == "error" and reply.text == texts.ROOM_NOT_HERE


async def test_decision_is_logged_like_a_note_but_typed_decision(shell: Shell, store: Store, org: Org) -> None:
    rita = await shell()
    reply = await rita.ask("/crm decision acme renewal: 3-year term agreed")
    assert reply.text == "Decision recorded on ACME Renewal 2027." and reply.reveals == (org.deals["acme_renewal"],)
    assert (await rita.ask("/crm decision acme renewal no colon")).text == texts.DECISION_USAGE
    assert "The decision is empty" in (await rita.ask("/crm decision acme renewal:  ")).text
    async with store.session() as s:
        entry = (await s.execute(select(TimelineEntry))).scalar_one()
        audit = (await s.execute(select(AuditLog))).scalar_one()
    assert (entry.kind, entry.text) == ("decision", "3-year term agreed")
    assert audit.action == "decision.create"


async def test_replies_name_the_deals_they_reveal_and_pipelines_are_not_shareable(shell: Shell, org: Org) -> None:
    admin = await shell("admin")
    assert (await admin.ask("/crm deal acme renewal")).reveals == (org.deals["acme_renewal"],)
    found = await admin.ask("/crm find acme")
    assert org.deals["acme_renewal"] in found.reveals and org.deals["acme_pilot"] in found.reveals
    assert set((await admin.ask("/crm account acme corp")).reveals) >= {org.deals["acme_renewal"]}
    assert (await admin.ask("/crm timeline acme renewal")).reveals == (org.deals["acme_renewal"],)
    assert not (await (await shell("rep_a")).ask("/crm pipeline mine")).shareable


async def test_form_submission_checks_every_field_at_once_and_logs_once_per_source(
        shell: Shell, store: Store, org: Org) -> None:
    from crm_store.deals import Source
    from handlers.invocation import Context, Invocation
    from handlers.notes import log_from_form
    from handlers.registry import FormError

    rita = await shell()
    ctx = Context(store, Invocation("", rita.actor, platform="slack"))
    with pytest.raises(FormError) as empty:
        await log_from_form(ctx, "decision", None, "   ")
    assert set(empty.value.problems) == {"text", "deal"}
    with pytest.raises(FormError) as hidden:
        await log_from_form(ctx, "note", org.deals["initech_secret"], "x" * 3001)
    assert "3,001" in hidden.value.problems["text"] and hidden.value.problems["deal"] == texts.FORM_DEAL_NOT_VISIBLE
    source = Source("slack", "C1/1700000000.000100", "https://example.slack.com/archives/C1/p1700000000000100")
    first = await log_from_form(ctx, "decision", org.deals["acme_renewal"], "Go with 3 years", source)
    again = await log_from_form(ctx, "decision", org.deals["acme_renewal"], "Go with 3 years", source)
    assert first.text == "Decision recorded on ACME Renewal 2027."
    assert again.text == texts.FORM_ALREADY_LOGGED.format(deal="ACME Renewal 2027")
    async with store.session() as s:
        [entry] = (await s.execute(select(TimelineEntry))).scalars()
    assert (entry.kind, entry.permalink, entry.source_ref) == ("decision", source.permalink, source.ref)
