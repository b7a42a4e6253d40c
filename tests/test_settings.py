"""Settings: one typed object, validated at start-up with messages that say what to do."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.settings import DEFAULT_DATABASE_URL, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "MICROSOFT_APP_ID",
                 "MICROSOFT_APP_PASSWORD", "DEAL_ROOM_STAGES", "DIGEST_DEFAULT_TZ", "CAPTURE_MODE"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///./dealbot.db"
    assert s.deal_room_min_amount == Decimal(100_000) and s.deal_room_private is True
    assert s.deal_room_stages == [] and s.capture_mode == "suggest" and s.digest_stale_days == 14
    assert not s.slack_enabled and not s.teams_enabled and s.transcript_retention_days is None


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("DIGEST_DEFAULT_TZ=Europe/Berlin\n")
    monkeypatch.setenv("DEAL_ROOM_STAGES", "Proposal, Negotiation ,Commit")
    s = load_settings()
    assert s.deal_room_stages == ["Proposal", "Negotiation", "Commit"]
    assert s.digest_default_tz == "Europe/Berlin"


@pytest.mark.parametrize(("env", "message"), [
    ({"DATABASE_URL": "postgres://h/db"}, "write postgresql+asyncpg://h/db"),
    ({"DATABASE_URL": "mysql://h/db"}, "expected sqlite+aiosqlite:///path.db"),
    ({"DIGEST_DEFAULT_TZ": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"SLACK_BOT_TOKEN": "xoxb-1"}, "also set SLACK_SIGNING_SECRET"),
    ({"MICROSOFT_APP_ID": "abc"}, "set both MICROSOFT_APP_ID and MICROSOFT_APP_PASSWORD"),
    ({"DEAL_ROOM_MIN_AMOUNT": "lots"}, "DEAL_ROOM_MIN_AMOUNT"),
])
def test_invalid_settings_say_what_to_change(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert message in str(error.value)


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "shh")
    assert "xoxb-very-secret" not in repr(load_settings())


@pytest.mark.parametrize("settings, says", [
    ({"microsoft_app_id": "a", "microsoft_app_password": "p", "microsoft_app_type": "SingleTenant"},
     "MICROSOFT_APP_TENANT_ID"),
    ({"microsoft_app_id": "a", "microsoft_app_password": "p", "teams_team_id": "t"}, "MICROSOFT_APP_TENANT_ID"),
    ({"microsoft_app_id": "a", "microsoft_app_password": "p", "microsoft_app_type": "Both"}, "MICROSOFT_APP_TYPE"),
])
def test_teams_settings_that_cannot_work_are_refused_with_the_fix(settings: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings(**settings)
