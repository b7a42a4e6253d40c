"""`/crm search` and the timeline's links and retractions, driven through the shell adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy import update

from bot.render_text import render
from bot.shell import ShellAdapter
from crm_store import Store
from crm_store.models import TimelineEntry
from handlers import texts
from handlers.registry import commands
from tests.org import Org
from tests.store.test_search import T0, entry, message

Shell = Callable[..., Awaitable[ShellAdapter]]
LINK = "https://example.slack.com/archives/C1/p1700000000000100"


async def test_results_show_kind_deal_snippet_who_when_and_a_link(shell: Shell, store: Store, org: Org) -> None:
    await message(store, org, "acme_renewal", "Security review is booked for Thursday", who="se",
                  at=T0 + timedelta(hours=2))
    await entry(store, org, "acme_renewal", "Security review passed", kind="decision", permalink=LINK)
    await entry(store, org, "acme_renewal", "Asked for the security review report", kind="note")
    reply = await (await shell()).ask("/crm search security review")
    assert reply.kind == "info" and reply.title == "Search results for “security review”"
    (section,) = reply.sections
    decision, note, chatter = section.items
    assert decision.title == "Decision · ACME Renewal 2027"
    assert decision.detail == f"*Security* *review* passed\nRita Rep · 2026-11-02 09:00 UTC\n{LINK}"
    assert decision.actions == ()  # the link goes to the message itself
    assert note.title == "Note · ACME Renewal 2027" and "*security* *review*" in note.detail
    assert [(a.label, a.command) for a in note.actions] == [("Open timeline", f"timeline #{org.deals['acme_renewal']}")]
    assert chatter.title == "Message · ACME Renewal 2027"
    assert chatter.detail.startswith("*Security* *review* is booked for Thursday\nSam Engineer · 2026-11-02 11:00 UTC\n")
    assert chatter.detail.split("\n")[2].startswith("https://example.slack.com/archives/C-acme_renewal/p")
    assert reply.reveals == (org.deals["acme_renewal"],) and not section.footer
    assert "Decision · ACME Renewal 2027" in render(reply)


async def test_more_results_than_shown_say_so(shell: Shell, store: Store, org: Org) -> None:
    for i in range(12):
        await message(store, org, "acme_renewal", f"onboarding call {i}", at=T0 + timedelta(minutes=i))
    reply = await (await shell()).ask("/crm search onboarding")
    assert len(reply.sections[0].items) == 10
    assert reply.sections[0].footer == texts.SEARCH_MORE.format(limit=10)


async def test_usage_no_words_no_results_and_too_long(shell: Shell, store: Store, org: Org) -> None:
    me = await shell()
    usage = await me.ask("/crm search")
    cmd = commands.get("search")
    assert cmd is not None
    assert usage.kind == "error" and usage.text == texts.EMPTY_ARGS.format(name="search", usage=cmd.usage,
                                                                           example=cmd.example)
    stop = await me.ask("/crm search the and of")
    assert stop.kind == "error" and stop.text == texts.SEARCH_NO_WORDS.format(query="the and of")
    punctuation = await me.ask('/crm search "*" -- OR')
    assert punctuation.kind == "error" and "nothing to search for" in punctuation.text
    nothing = await me.ask("/crm search zeppelin")
    assert nothing.kind == "error" and nothing.text == texts.SEARCH_NOTHING.format(query="zeppelin")
    long = await me.ask("/crm search " + "word " * 60)
    assert long.kind == "error" and long.text.startswith("Search text can be at most 200 characters")


async def test_nobody_finds_text_of_a_deal_they_may_not_see(shell: Shell, store: Store, org: Org) -> None:
    await message(store, org, "acme_renewal", "the champion left the company")
    await entry(store, org, "initech_secret", "champion confirmed budget", kind="decision")
    rita = await (await shell("rep_a")).ask("/crm search champion")
    assert [i.title for i in rita.sections[0].items] == ["Message · ACME Renewal 2027"]
    ben = await (await shell("rep_b")).ask("/crm search champion")
    assert ben.kind == "error" and ben.text == texts.SEARCH_NOTHING.format(query="champion")
    ada = await (await shell("admin")).ask("/crm search champion")
    assert {i.title for i in ada.sections[0].items} == {"Message · ACME Renewal 2027",
                                                        "Decision · Initech Secret Project"}
    assert set(ada.reveals) == {org.deals["acme_renewal"], org.deals["initech_secret"]}


async def test_an_unmapped_person_is_told_why(store: Store, org: Org) -> None:
    from crm_store import Actor

    await message(store, org, "acme_renewal", "the champion left the company")
    reply = await ShellAdapter(store, Actor.unmapped()).ask("/crm search champion")
    assert reply.kind == "error" and reply.text == texts.UNMAPPED_HINT


async def test_the_timeline_links_captured_entries_and_marks_retracted_ones(
        shell: Shell, store: Store, org: Org) -> None:
    captured = await entry(store, org, "acme_renewal", "go with the 3-year term", kind="decision", permalink=LINK,
                           at=T0 + timedelta(hours=1))
    await entry(store, org, "acme_renewal", "typed by hand", kind="note")
    async with store.transaction() as s:
        await s.execute(update(TimelineEntry).where(TimelineEntry.id == captured).values(retracted_at=T0))
    reply = await (await shell()).ask("/crm timeline acme renewal")
    retracted, note = reply.sections[0].items
    assert retracted.title.startswith("Decision (retracted) · ") and retracted.detail == f"go with the 3-year term\n{LINK}"
    assert note.title.startswith("Note · ") and note.detail == "typed by hand"
    assert (await (await shell()).ask("/crm search 3-year term")).kind == "error"  # retracted: not found
