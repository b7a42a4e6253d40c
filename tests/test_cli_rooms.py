"""`dealbot rooms sync` and `dealbot rooms list`, run as real processes against the Slack
stand-in, on the test's database."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update

from crm_store import Store
from crm_store.models import Opportunity, utcnow
from tests.org import Org
from tests.slack_world import SECRET, TOKEN, seed_people, slack_id
from tests.stand_ins.slack import SlackStandIn

DEALBOT = [sys.executable, "-c", "from bot.cli import app; app()"]
QUALIFYING = {"deal-acme-renewal-2027", "deal-globex-expansion", "deal-initech-secret-project"}


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(bot_token=TOKEN) as stand_in:
        seed_people(stand_in)
        yield stand_in


async def dealbot(db_url: str, slack: SlackStandIn, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SLACK_", "DEAL_ROOM_"))}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), DATABASE_URL=db_url, SLACK_BOT_TOKEN=TOKEN,
               SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url, SLACK_TIER2_PER_MINUTE="600")
    proc = await asyncio.create_subprocess_exec(*DEALBOT, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def room_names(slack: SlackStandIn) -> set[str]:
    return {c.name for c in slack.channels.values() if c.creator == slack.bot_user_id and not c.is_im}


async def test_dry_run_shows_the_plan_and_changes_nothing(db_url: str, org: Org, slack: SlackStandIn) -> None:
    code, out, err = await dealbot(db_url, slack, "rooms", "sync", "--dry-run")
    assert code == 0, err
    assert "Would create 3 rooms" in out and "#deal-acme-renewal-2027  ACME Renewal 2027" in out
    assert "Nothing was changed (dry run)." in out
    assert room_names(slack) == set() and slack.called("conversations.create") == []


async def test_sync_creates_staffs_and_pins_then_repairs_and_closes_and_list_shows_it(
        db_url: str, store: Store, org: Org, slack: SlackStandIn) -> None:
    code, out, err = await dealbot(db_url, slack, "rooms", "sync")
    assert code == 0, err
    assert room_names(slack) == QUALIFYING
    assert out.startswith("Created 3 rooms: #") and "Invited 4 people into 3 rooms." in out
    renewal = next(c for c in slack.channels.values() if c.name == "deal-acme-renewal-2027")
    assert {slack_id("rep_a"), slack_id("se")} <= renewal.members
    assert all(any(m.pinned for m in slack.messages[c.id]) for c in slack.channels.values() if c.name in QUALIFYING)

    renewal.members.discard(slack_id("se"))  # someone removed Sam by hand
    async with store.transaction() as s:  # and Globex was won in the CRM
        await s.execute(update(Opportunity).where(Opportunity.id == org.deals["globex_expansion"])
                        .values(status="won", stage="Closed Won", closed_at=utcnow()))
    code, out, err = await dealbot(db_url, slack, "rooms", "sync")
    assert code == 0, err
    assert "Invited 1 person into 1 room." in out and "Posted the closing summary in 1 room" in out
    assert slack_id("se") in renewal.members and room_names(slack) == QUALIFYING

    code, out, err = await dealbot(db_url, slack, "rooms", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["Channel", "State", "Platform", "Deal", "Account", "Amount", "Stage", "Owner"]
    assert any(line.startswith("#deal-globex-expansion") and " closed " in line for line in lines)
    assert any(line.startswith("#deal-acme-renewal-2027") and " active " in line and "$250,000" in line
               for line in lines)
    assert lines[-1] == "3 rooms."
    code, out, _ = await dealbot(db_url, slack, "rooms", "list", "--status", "archived")
    assert out.startswith("No deal rooms in state 'archived' yet.")


async def test_a_failure_is_reported_and_the_next_sync_gives_it_another_chance(
        db_url: str, org: Org, slack: SlackStandIn) -> None:
    slack.fail_next("conversations.create", "restricted_action")  # an admin has to allow it first
    code, out, err = await dealbot(db_url, slack, "rooms", "sync")
    assert code == 1, err
    assert "Failed: room.create" in out and "restricted_action" in out and len(room_names(slack)) == 2
    code, out, err = await dealbot(db_url, slack, "rooms", "sync")  # allowed now
    assert code == 0, err
    assert out.startswith("Created 1 room: #") and room_names(slack) == QUALIFYING


async def test_sync_without_slack_says_what_to_set(db_url: str, slack: SlackStandIn) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SLACK_"))}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), DATABASE_URL=db_url)
    proc = await asyncio.create_subprocess_exec(*DEALBOT, "rooms", "sync", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2 and "set SLACK_BOT_TOKEN" in err.decode()
