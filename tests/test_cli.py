"""The `dealbot` command line, run as a real process the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from crm_store.migrate import head_revision

DEALBOT = [sys.executable, "-c", "from bot.cli import app; app()"]


def run(args: list[str], stdin: str = "", env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SLACK_", "MICROSOFT_"))}
    full_env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    full_env.update(env or {})
    return subprocess.run(DEALBOT + args, input=stdin, capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=120)


def test_demo_shell_answers_piped_commands_as_a_manager(tmp_path: Path) -> None:
    result = run(["shell", "--demo", "--as", "daniel.kim@example.com"],
                 "/crm find acme\n/crm pipeline team\n/crm deal acme pilot\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "You are Daniel Kim <daniel.kim@example.com>, a manager." in out
    assert "» /crm find acme" in out and "ACME Corporation, Inc." in out
    assert "Your team's pipeline" in out and "Weighted (USD)" in out and "Closing this month" in out
    assert "ACME Pilot 2027" in out and "Owner" in out
    assert "went wrong" not in out and result.stderr == ""
    assert list(tmp_path.iterdir()) == []  # the demo file lives in a temporary directory


def test_demo_shell_introduces_people_and_switches_user(tmp_path: Path) -> None:
    result = run(["shell", "--demo"], "/whoami\n/as alex.rivera@example.com\n/as nobody@x.test\nhello\n/quit\n/crm help\n",
                 cwd=tmp_path)
    out = result.stdout
    assert "You are Maya Patel <maya.patel@example.com>, a rep." in out
    assert "daniel.kim@example.com (her manager)" in out and "alex.rivera@example.com (admin)" in out
    assert "You are now Alex Rivera <alex.rivera@example.com>, an admin." in out
    assert "No CRM user has the email 'nobody@x.test'" in out
    assert "That is not a command" in out
    assert "» /crm help" not in out  # stopped at /quit


def test_unknown_as_user_fails_clearly(tmp_path: Path) -> None:
    result = run(["shell", "--demo", "--as", "ghost@example.com"], "", cwd=tmp_path)
    assert result.returncode == 2 and "No CRM user has the email 'ghost@example.com'" in result.stderr


def test_db_upgrade_creates_and_then_keeps_the_schema(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    first = run(["db", "upgrade"], env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"Database at revision {head_revision()} (was empty)" in first.stdout
    again = run(["db", "upgrade"], env=env, cwd=tmp_path)
    assert again.stdout.strip() == f"Database at revision {head_revision()}"


def test_shell_on_the_configured_database_migrates_it_on_first_start(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"}
    result = run(["shell"], "/crm find acme\n", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not linked to a user in the CRM" in result.stdout
    assert (tmp_path / "fresh.db").exists()


def test_bad_configuration_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result = run(["shell"], env={"DATABASE_URL": "postgresql://u:p@db/crm", "CAPTURE_MODE": "sometimes"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "DATABASE_URL: use an async driver: write postgresql+asyncpg://u:p@db/crm" in result.stderr
    assert "CAPTURE_MODE" in result.stderr and "Traceback" not in result.stderr
