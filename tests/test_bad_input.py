"""Bad input gets a short, specific answer, and never changes the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bot.render_text import render
from bot.shell import ShellAdapter
from crm_store import Store
from crm_store.models import Account, Opportunity
from handlers import texts
from tests.org import Org, snapshot

Shell = Callable[..., Awaitable[ShellAdapter]]

MARKUP_NAME = "<!channel> *Bold* & <@U123ABC> `code` Ltd"
ODD_NAMES = [MARKUP_NAME, "株式会社 東京 Trading", "🚀 Rocket Labs", "Robert'); DROP TABLE accounts;-- Inc"]


@pytest.fixture
async def odd_accounts(store: Store, org: Org) -> None:
    async with store.transaction() as s:
        for i, name in enumerate(ODD_NAMES):
            account = Account(external_id=f"odd{i}", name=name)
            s.add(account)
            await s.flush()
            s.add(Opportunity(external_id=f"oddopp{i}", name=f"{name} Deal", account_id=account.id,
                              owner_id=org.users["rep_a"], stage="Proposal", currency="USD"))


BAD_INPUTS = [
    # (line, what the reply must say)
    ("/crm pipelin team", "`pipelin` is not a command"),
    ("/crm dael acme renewal", "Did you mean `/crm deal acme renewal`?"),
    ("/crm frobnicate the widgets", "Nothing matches"),
    ("/crm deal", "`/crm deal` needs more: type `/crm deal <name>`"),
    ("/crm account   ", "`/crm account` needs more"),
    ("/crm contact", "`/crm contact` needs more"),
    ("/crm find", "`/crm find` needs more"),
    ("/crm log", "`/crm log` needs more"),
    ("/crm log : nothing", texts.LOG_USAGE),
    ("/crm find " + "a" * 10_240, "That is too long: 10,250 characters"),
    ("/crm " + "é" * 10_240, "That is too long"),
    ("/crm find " + "acme " * 60, "Search text can be at most 200 characters"),
    ("/crm deal '; DROP TABLE opportunities; --", "No deal matches"),
    ("/crm find \" OR 1=1 --", "Nothing matches"),
    ("/crm account %_%", "No account matches"),
    ("/crm pipeline @%' OR '1'='1", "No CRM user matches"),
    ("/crm deal #99999999", "No deal #99999999 that you can see"),
    ("/crm deal #1' OR 1=1", "No deal matches"),
    ("/crm find 🚀🚀🚀", "Nothing matches"),
    ("/crm timeline \x00\x01\x02", "No deal matches"),
]


@pytest.mark.parametrize(("line", "expected"), BAD_INPUTS, ids=[repr(b[0][:30]) for b in BAD_INPUTS])
async def test_bad_input_gets_a_clear_reply_and_changes_nothing(
    shell: Shell, store: Store, line: str, expected: str
) -> None:
    before = await snapshot(store)
    reply = await (await shell()).ask(line)
    shown = render(reply)
    assert " ".join(expected.split()) in " ".join(shown.split())
    assert "Traceback" not in shown and "went wrong on our side" not in shown
    assert len(shown) < 2000  # a short answer, not an echo of 10 KB
    assert await snapshot(store) == before


async def test_a_typo_of_a_command_offers_the_corrected_command(shell: Shell) -> None:
    reply = await (await shell()).ask("/crm pipelin team")
    assert reply.actions[0].command == "pipeline team"


@pytest.mark.parametrize("name", ODD_NAMES)
async def test_unicode_markup_and_sql_in_names_are_found_and_shown_verbatim(
    shell: Shell, store: Store, odd_accounts: None, name: str
) -> None:
    words = {MARKUP_NAME: "bold code", "株式会社 東京 Trading": "東京 trading",
             "🚀 Rocket Labs": "rocket labs", ODD_NAMES[3]: "robert drop table"}[name]
    before = await snapshot(store)
    rita = await shell()
    account = await rita.ask(f"/crm account {words}")
    assert account.title == name
    deal = await rita.ask(f"/crm deal {words} deal")
    assert deal.title == f"{name} Deal"
    assert await snapshot(store) == before


async def test_a_note_with_markup_and_sql_is_stored_literally(shell: Shell, store: Store) -> None:
    note = "'); DELETE FROM opportunities; -- <!here> *really*"
    reply = await (await shell()).ask(f"/crm log acme renewal: {note}")
    assert reply.kind == "info"
    timeline = await (await shell()).ask("/crm timeline acme renewal")
    assert timeline.sections[0].items[0].detail == note
    assert (await store.counts())["opportunities"] == 6


async def test_an_unexpected_failure_is_logged_not_shown(
    shell: Shell, store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database exploded: secret detail")

    monkeypatch.setattr(store, "find_opportunities", broken)
    reply = await (await shell()).ask("/crm deal acme")
    assert reply.kind == "error" and "went wrong on our side" in reply.text
    assert "secret detail" not in reply.text and "Traceback" not in reply.text
    assert "database exploded" in caplog.text


async def test_unmapped_users_are_told_why_they_see_nothing(store: Store, org: Org) -> None:
    from crm_store import Actor

    stranger = ShellAdapter(store, Actor.unmapped("stranger"))
    for line in ("/crm find acme", "/crm deal acme", "/crm pipeline", "/crm log acme: hi"):
        reply = await stranger.ask(line)
        assert reply.kind == "error"
        assert "not linked" in reply.text or "Only users known to the CRM" in reply.text
