"""`app_manifest.yml` stays in step with the code: every Web API method the code calls is covered
by a scope in the manifest, no scope is there that nothing uses, every event handled is
subscribed (and every subscribed one handled), and the command and shortcut ids match."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.slack import app as slack_app

ROOT = Path(__file__).resolve().parents[1]
# Scopes Slack documents for each method and event Dealbot uses (https://api.slack.com/methods,
# https://api.slack.com/events). Methods listed with no scope need none beyond the bot token.
METHOD_SCOPES: dict[str, set[str]] = {
    "auth.test": set(),  # Bolt calls it once to learn the bot's own ids
    "chat.postMessage": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.getPermalink": set(),
    "conversations.members": {"channels:read", "groups:read", "im:read", "mpim:read"},  # one per channel type
    "conversations.list": {"channels:read", "groups:read"},
    "conversations.info": {"channels:read", "groups:read"},
    "conversations.create": {"channels:manage", "groups:write"},  # public and private rooms
    "conversations.invite": {"channels:manage", "groups:write"},
    "conversations.setTopic": {"channels:manage", "groups:write"},
    "conversations.rename": {"channels:manage", "groups:write"},
    "conversations.archive": {"channels:manage", "groups:write"},
    "conversations.unarchive": {"channels:manage", "groups:write"},
    "chat.update": {"chat:write"},
    "pins.add": {"pins:write"},
    "users.lookupByEmail": {"users:read.email"},
    "users.info": {"users:read", "users:read.email"},  # the email is how a Slack user maps to the CRM
    "views.open": set(),
    "conversations.open": {"im:write"},  # a digest's direct message
    # slack-sdk's helper for files.getUploadURLExternal + the upload + files.completeUploadExternal
    "files.upload_v2": {"files:write"},
}
EVENT_SCOPES: dict[str, set[str]] = {
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
    "reaction_added": {"reactions:read"},
    "reaction_removed": {"reactions:read"},
    "member_joined_channel": {"channels:read", "groups:read"},
    "app_uninstalled": set(),
    "tokens_revoked": set(),
}
FEATURE_SCOPES = {"commands"}  # slash commands and shortcuts


def manifest() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "app_manifest.yml").read_text())


def methods_called() -> set[str]:
    """Web API methods called anywhere in bot/: ``client.chat_postMessage(`` -> chat.postMessage."""
    called = {"auth.test"}
    for path in (ROOT / "bot").rglob("*.py"):
        for name in re.findall(r"client\.([a-z]+_[A-Za-z_0-9]+)\(", path.read_text()):
            family, _, method = name.partition("_")
            called.add(f"{family}.{method}")
    return called


def subscribed_events() -> set[str]:
    return set(manifest()["settings"]["event_subscriptions"]["bot_events"])


def test_every_method_called_is_known_and_its_scopes_granted() -> None:
    called = methods_called()
    unknown = called - set(METHOD_SCOPES)
    assert not unknown, f"add the scopes Slack documents for {unknown} to METHOD_SCOPES and the manifest"
    granted = set(manifest()["oauth_config"]["scopes"]["bot"])
    for method in called:
        assert METHOD_SCOPES[method] <= granted, (method, METHOD_SCOPES[method] - granted)


def test_no_scope_is_granted_that_nothing_uses() -> None:
    granted = set(manifest()["oauth_config"]["scopes"]["bot"])
    needed = set(FEATURE_SCOPES)
    for method in methods_called():
        needed |= METHOD_SCOPES[method]
    for event in subscribed_events():
        needed |= EVENT_SCOPES[event]
    assert granted == needed, {"unused": granted - needed, "missing": needed - granted}


def test_events_handled_and_subscribed_match() -> None:
    handled = set(slack_app.EVENTS)
    subscribed = {e.split(".")[0] for e in subscribed_events()}
    assert handled == subscribed
    assert {"message.channels", "message.groups"} <= subscribed_events()  # public and private rooms


def test_command_shortcut_and_urls_match_the_code() -> None:
    m = manifest()
    assert [c["command"] for c in m["features"]["slash_commands"]] == ["/crm"]
    assert [s["callback_id"] for s in m["features"]["shortcuts"]] == [slack_app.SHORTCUT]
    urls = {m["features"]["slash_commands"][0]["url"], m["settings"]["event_subscriptions"]["request_url"],
            m["settings"]["interactivity"]["request_url"], m["settings"]["interactivity"]["message_menu_options_url"]}
    assert {u.rsplit("/", 2)[-2] + "/" + u.rsplit("/", 1)[-1] for u in urls} == {"slack/events"}
    assert m["settings"]["interactivity"]["is_enabled"] and not m["settings"]["socket_mode_enabled"]
