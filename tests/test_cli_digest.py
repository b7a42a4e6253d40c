"""`dealbot digest`, run as a process on a real SQLite file holding the test organisation."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

import pytest

from crm_store import Store, digests
from tests.org import build_org
from tests.test_cli import run


@pytest.fixture
def db(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'org.db'}"

    async def seed() -> None:
        store = await Store.open(url)
        try:
            org = await build_org(store, date.today() - timedelta(days=1))
            await digests.save(store, {org.users["mgr1"]: digests.Settings("daily", "08:00", None, None, "slack", None)})
        finally:
            await store.close()

    asyncio.run(seed())
    return {"DATABASE_URL": url}


def test_preview_prints_the_digest_and_writes_the_chart(db: dict[str, str], tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"
    result = run(["digest", "--preview", "VP@org.test", "--chart", str(chart)], env=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Pipeline digest for Victor Vance" in result.stdout
    assert "Open pipeline" in result.stdout and "ACME Renewal 2027" in result.stdout  # closing in 2 days
    assert "Initech" not in result.stdout  # Lou's deal: not in the VP's tree
    assert chart.read_bytes().startswith(b"\x89PNG") and chart.stat().st_size > 2000


def test_send_now_says_what_is_missing(db: dict[str, str], tmp_path: Path) -> None:
    unknown = run(["digest", "--preview", "ghost@org.test"], env=db, cwd=tmp_path)
    assert unknown.returncode == 1 and "No CRM user has the email ghost@org.test" in unknown.stderr
    unsubscribed = run(["digest", "--send-now", "vp@org.test"], env=db, cwd=tmp_path)
    assert unsubscribed.returncode == 1 and "has no digest subscription" in unsubscribed.stderr
    no_slack = run(["digest", "--send-now", "mgr1@org.test"], env=db, cwd=tmp_path)
    assert no_slack.returncode == 2 and "gets digests on slack, which is not configured here" in no_slack.stderr
