"""`teams_app/manifest.json` follows the Teams v1.17 schema where we use it, stays in step with the
code (command lists, message extension id), and `dealbot teams package` builds a zip Teams takes.

The schema subset (`SCHEMA`) is written out here with a compact validator, because jsonschema is
not a dependency; its rules are those of
https://developer.microsoft.com/json-schemas/teams/v1.17/MicrosoftTeams.schema.json for the parts
we use, and `test_the_validator_catches_what_teams_would_refuse` shows each kind of rule can fail.

Command lists: Teams shows at most 10 commands per scope and the grammar has 12, so each list
leaves two out (`LEFT_OUT`; the reasons are in bot/cli_teams.py's docstring): `contact` everywhere
(`find` finds contacts), `digest` in channels and group chats (a personal direct-message schedule),
`room` in the 1:1 chat (the bot opens rooms by itself; by hand it is rare and done in a channel).
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from bot.cli import app
from bot.teams.ids import LOG_AS_DECISION
from handlers.registry import GRAMMAR_ORDER, commands

importlib.import_module("handlers.dispatch")  # registers every command in `commands`

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "teams_app"
APP_ID = "1b2c3d4e-0000-4a5b-8c9d-112233445566"
LEFT_OUT = {"team": {"contact", "digest"}, "personal": {"contact", "room"}, "groupChat": {"contact", "digest"}}

GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SEMVER = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"
HTTPS_URL = r"^[Hh][Tt][Tt][Pp][Ss]://"
SCOPES = ["team", "personal", "groupChat"]
SCHEMA_URL = "https://developer.microsoft.com/en-us/json-schemas/teams/v1.17/MicrosoftTeams.schema.json"
# Resource-specific consent permissions Microsoft documents for Teams apps
# (https://learn.microsoft.com/microsoftteams/platform/graph-api/rsc/resource-specific-consent).
RSC_NAMES = {
    "Application": {
        "ChannelMessage.Read.Group", "ChannelMessage.Send.Group", "ChannelSettings.Read.Group",
        "ChannelSettings.ReadWrite.Group", "Channel.Create.Group", "Channel.Delete.Group",
        "ChannelMeeting.ReadBasic.Group", "Member.Read.Group", "Owner.Read.Group", "TeamMember.Read.Group",
        "TeamSettings.Read.Group", "TeamSettings.ReadWrite.Group", "TeamsActivity.Send.Group",
        "TeamsAppInstallation.Read.Group", "TeamsTab.Create.Group", "TeamsTab.Delete.Group",
        "TeamsTab.Read.Group", "TeamsTab.ReadWrite.Group",
        "Calls.AccessMedia.Chat", "Calls.JoinGroupCalls.Chat", "Chat.Manage.Chat", "ChatMember.Read.Chat",
        "ChatMessage.Read.Chat", "ChatMessageReadReceipt.Read.Chat", "ChatSettings.Read.Chat",
        "ChatSettings.ReadWrite.Chat", "OnlineMeeting.ReadBasic.Chat", "OnlineMeetingRecording.Read.Chat",
        "OnlineMeetingTranscript.Read.Chat", "TeamsActivity.Send.Chat", "TeamsAppInstallation.Read.Chat",
        "TeamsTab.Create.Chat", "TeamsTab.Delete.Chat", "TeamsTab.Read.Chat", "TeamsTab.ReadWrite.Chat",
    },
    "Delegated": {
        "InAppPurchase.Allow.User", "LiveShareSession.ReadWrite.Chat", "LiveShareSession.ReadWrite.Group",
        "MeetingStage.Write.Chat", "ChannelMeetingStage.Write.Group", "OnlineMeetingParticipant.Read.Chat",
        "OnlineMeetingIncomingAudio.Detect.Chat", "ChannelMeetingParticipant.Read.Group",
        "OnlineMeetingIncomingAudio.Detect.Group",
    },
}
ALL_RSC_NAMES = sorted(RSC_NAMES["Application"] | RSC_NAMES["Delegated"])


def text(max_length: int, pattern: str | None = None) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, **({"pattern": pattern} if pattern else {})}


def array(items: dict[str, Any], max_items: int, min_items: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": items, "maxItems": max_items, "minItems": min_items}


def obj(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


BOOL = {"type": "boolean"}
COMMAND_LIST = obj(["scopes", "commands"], scopes=array({"enum": SCOPES}, 3, 1),
                   commands=array(obj(["title", "description"], title=text(32), description=text(128)), 10, 1))
MESSAGE_COMMAND = obj(
    ["id", "title"], id=text(64), type={"enum": ["query", "action"]}, title=text(32), description=text(128),
    context=array({"enum": ["compose", "commandBox", "message"]}, 3, 1), fetchTask=BOOL,
)
SCHEMA: dict[str, Any] = obj(
    ["$schema", "manifestVersion", "version", "id", "developer", "name", "description", "icons", "accentColor"],
    **{
        "$schema": {"const": SCHEMA_URL},
        "manifestVersion": {"const": "1.17"},
        "version": text(256, SEMVER),
        "id": text(36, GUID),
        "developer": obj(["name", "websiteUrl", "privacyUrl", "termsOfUseUrl"], name=text(32),
                         websiteUrl=text(2048, HTTPS_URL), privacyUrl=text(2048, HTTPS_URL),
                         termsOfUseUrl=text(2048, HTTPS_URL)),
        "name": obj(["short", "full"], short=text(30), full=text(100)),
        "description": obj(["short", "full"], short=text(80), full=text(4000)),
        "icons": obj(["color", "outline"], color=text(2048), outline=text(2048)),
        "accentColor": text(7, r"^#[0-9a-fA-F]{6}$"),
        "bots": array(obj(["botId", "scopes"], botId=text(36, GUID), scopes=array({"enum": SCOPES}, 3, 1),
                          supportsFiles=BOOL, isNotificationOnly=BOOL, commandLists=array(COMMAND_LIST, 3)), 1),
        "composeExtensions": array(obj(["botId", "commands"], botId=text(36, GUID),
                                       commands=array(MESSAGE_COMMAND, 10, 1)), 1),
        "validDomains": array(text(2048), 16),
        "webApplicationInfo": obj(["id"], id=text(36, GUID), resource=text(2048)),
        "authorization": obj(["permissions"], permissions=obj(["resourceSpecific"], resourceSpecific=array(
            obj(["name", "type"], name={"enum": ALL_RSC_NAMES}, type={"enum": ["Application", "Delegated"]}), 16))),
    },
)
TYPES: dict[str, type | tuple[type, ...]] = {"object": dict, "array": list, "string": str, "boolean": bool}


def problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What in `value` breaks `schema` (a JSON-Schema subset), each with its path; [] when it fits.

    Objects take no keys beyond `properties`, as in the Teams schema (additionalProperties: false).
    """
    found: list[str] = []
    if "const" in schema and value != schema["const"]:
        return [f"{where}: expected {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    kind = schema.get("type")
    if kind and not isinstance(value, TYPES[kind]):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if kind == "string":
        if len(value) > schema["maxLength"]:
            found.append(f"{where}: longer than {schema['maxLength']} characters ({len(value)})")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    elif kind == "array":
        if not schema["minItems"] <= len(value) <= schema["maxItems"]:
            found.append(f"{where}: {len(value)} items, allowed {schema['minItems']}-{schema['maxItems']}")
        for i, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{i}]")
    elif kind == "object":
        found += [f"{where}: {key!r} is missing" for key in schema["required"] if key not in value]
        found += [f"{where}: unknown key {key!r}" for key in value if key not in schema["properties"]]
        for key, sub in schema["properties"].items():
            if key in value:
                found += problems(value[key], sub, f"{where}.{key}")
    return found


def manifest() -> dict[str, Any]:
    return json.loads((APP_DIR / "manifest.json").read_text(encoding="utf-8"))


def command_lists(m: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """The bot's commands by scope (each list names one scope)."""
    lists = m["bots"][0]["commandLists"]
    assert all(len(entry["scopes"]) == 1 for entry in lists)
    return {entry["scopes"][0]: entry["commands"] for entry in lists}


def check_icons(color: bytes, outline: bytes) -> None:
    with Image.open(io.BytesIO(color)) as image:
        assert image.format == "PNG" and image.size == (192, 192)
        colors = image.convert("RGB").getcolors(192 * 192)
        assert colors is not None and len(colors) > 2  # a picture, not a blank square
    with Image.open(io.BytesIO(outline)) as image:
        assert image.format == "PNG" and image.size == (32, 32) and image.mode == "RGBA"
        pixels = [image.getpixel((x, y)) for x in range(32) for y in range(32)]
    assert {p[:3] for p in pixels if p[3]} == {(255, 255, 255)}  # white where anything is drawn
    assert any(p[3] == 0 for p in pixels)  # transparent around it


# -- the shipped files ---------------------------------------------------------------------------


def test_manifest_fits_the_teams_schema_where_we_use_it() -> None:
    m = manifest()
    assert problems(m, SCHEMA) == []
    assert m["id"] == m["bots"][0]["botId"] == m["composeExtensions"][0]["botId"] == m["webApplicationInfo"]["id"]
    assert set(m["bots"][0]["scopes"]) == set(SCOPES) == set(command_lists(m))
    assert m["bots"][0]["supportsFiles"] is False and m["bots"][0]["isNotificationOnly"] is False
    assert m["webApplicationInfo"]["resource"] == "https://RscPermission"
    assert m["validDomains"] == []
    for icon in m["icons"].values():
        assert (APP_DIR / icon).is_file()


def test_the_validator_catches_what_teams_would_refuse() -> None:
    breakages = {
        "too many commands": lambda m: m["bots"][0]["commandLists"][0]["commands"].extend(
            [{"title": "x", "description": "y"}] * 5),
        "long title": lambda m: m["bots"][0]["commandLists"][0]["commands"][0].update(title="t" * 33),
        "long description": lambda m: m["composeExtensions"][0]["commands"][0].update(description="d" * 129),
        "long short description": lambda m: m["description"].update(short="s" * 81),
        "bad scope": lambda m: m["bots"][0]["scopes"].append("groupchats"),
        "bad context": lambda m: m["composeExtensions"][0]["commands"][0]["context"].append("messages"),
        "bad type": lambda m: m["composeExtensions"][0]["commands"][0].update(type="act"),
        "bad guid": lambda m: m.update(id="dealbot"),
        "bad version": lambda m: m.update(version="1.0"),
        "old schema": lambda m: m.update(manifestVersion="1.16"),
        "unknown permission": lambda m: m["authorization"]["permissions"]["resourceSpecific"].append(
            {"name": "ChannelMessage.ReadAll.Group", "type": "Application"}),
        "missing key": lambda m: m["developer"].pop("privacyUrl"),
        "unknown key": lambda m: m["bots"][0].update(supportFiles=False),
        "wrong type": lambda m: m["bots"][0].update(supportsFiles="no"),
        "http url": lambda m: m["developer"].update(websiteUrl="http://github.com/dealbot/dealbot"),
    }
    for what, breakage in breakages.items():
        broken = copy.deepcopy(manifest())
        breakage(broken)
        assert problems(broken, SCHEMA), what


def test_rsc_asks_only_for_channel_messages() -> None:
    """Capture needs every message of a deal room (a channel); nothing reads team settings or chats."""
    granted = manifest()["authorization"]["permissions"]["resourceSpecific"]
    assert granted == [{"name": "ChannelMessage.Read.Group", "type": "Application"}]
    for permission in granted:
        assert permission["name"] in RSC_NAMES[permission["type"]]


def test_icons_have_the_sizes_and_colours_teams_requires() -> None:
    check_icons((APP_DIR / "color.png").read_bytes(), (APP_DIR / "outline.png").read_bytes())


# -- in step with the code -----------------------------------------------------------------------


def test_command_lists_are_the_visible_grammar_less_what_is_deliberately_left_out() -> None:
    visible = {c.name: c for c in commands}
    assert set(visible) == set(GRAMMAR_ORDER)  # so LEFT_OUT below speaks of every command there is
    for scope, listed in command_lists(manifest()).items():
        titles = [c["title"] for c in listed]
        for title in titles:
            command = commands.get(title)
            assert command is not None and not command.hidden, title
        assert titles == [name for name in GRAMMAR_ORDER if name in titles], f"{scope}: not in grammar order"
        assert set(GRAMMAR_ORDER) - set(titles) == LEFT_OUT[scope], scope
        assert len(titles) == 10
        for entry in listed:
            assert entry["description"] == visible[entry["title"]].summary, entry["title"]


def test_message_extension_command_is_the_one_the_adapter_handles() -> None:
    (extension,) = manifest()["composeExtensions"]
    (command,) = extension["commands"]
    assert command == {"id": LOG_AS_DECISION, "type": "action", "title": "Log as decision",
                       "description": command["description"], "context": ["message"], "fetchTask": True}


# -- dealbot teams package -----------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean configuration: no .env (another directory), no inherited MICROSOFT_*/SLACK_* settings."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "MICROSOFT_APP_ID", "MICROSOFT_APP_PASSWORD", "MICROSOFT_APP_TENANT_ID",
                 "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_package_fills_in_the_app_id_and_zips_the_icons(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID)
    env.setenv("MICROSOFT_APP_PASSWORD", "secret")
    result = CliRunner().invoke(app, ["teams", "package", "--out", "out/dealbot.zip", "--version", "1.2.3",
                                      "--domain", "dealbot.example.com"])
    assert result.exit_code == 0, result.output
    target = tmp_path / "out" / "dealbot.zip"
    assert str(Path("out/dealbot.zip")) in result.output and "Upload a custom app" in result.output
    with zipfile.ZipFile(target) as zf:
        assert sorted(zf.namelist()) == ["color.png", "manifest.json", "outline.png"]
        packaged = json.loads(zf.read("manifest.json"))
        check_icons(zf.read("color.png"), zf.read("outline.png"))
    assert problems(packaged, SCHEMA) == []
    assert packaged["id"] == packaged["bots"][0]["botId"] == packaged["composeExtensions"][0]["botId"] == APP_ID
    assert packaged["webApplicationInfo"] == {"id": APP_ID, "resource": "https://RscPermission"}
    assert packaged["version"] == "1.2.3" and packaged["validDomains"] == ["dealbot.example.com"]
    shipped = manifest()
    for key in ("id", "version", "validDomains"):
        del shipped[key], packaged[key]
    shipped["bots"][0]["botId"] = shipped["composeExtensions"][0]["botId"] = APP_ID
    shipped["webApplicationInfo"]["id"] = APP_ID
    assert packaged == shipped  # nothing else changed


def test_package_defaults_to_dealbots_version_in_the_current_directory(env: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID.upper())
    env.setenv("MICROSOFT_APP_PASSWORD", "secret")
    result = CliRunner().invoke(app, ["teams", "package"])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "dealbot-teams-0.1.0.zip") as zf:
        packaged = json.loads(zf.read("manifest.json"))
    assert packaged["version"] == "0.1.0" and packaged["id"] == APP_ID.upper() and packaged["validDomains"] == []


@pytest.mark.parametrize(("app_id", "message"), [
    (None, "MICROSOFT_APP_ID is not set: set it"),
    ("dealbot-bot", "MICROSOFT_APP_ID must be the GUID of Dealbot's Azure Bot registration"),
    ("00000000-0000-0000-0000-000000000000", "MICROSOFT_APP_ID must be the GUID"),
])
def test_package_refuses_without_a_usable_app_id(env: pytest.MonkeyPatch, tmp_path: Path, app_id: str | None,
                                                 message: str) -> None:
    if app_id:
        env.setenv("MICROSOFT_APP_ID", app_id)
        env.setenv("MICROSOFT_APP_PASSWORD", "secret")
    result = CliRunner().invoke(app, ["teams", "package"])
    assert result.exit_code == 2 and message in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--version", "1.0"], "--version must be MAJOR.MINOR.PATCH"),
    (["--domain", "https://dealbot.example.com/teams"], "--domain must be a host name"),
])
def test_package_refuses_a_bad_version_or_domain(env: pytest.MonkeyPatch, tmp_path: Path, args: list[str],
                                                 message: str) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID)
    env.setenv("MICROSOFT_APP_PASSWORD", "secret")
    result = CliRunner().invoke(app, ["teams", "package", *args])
    assert result.exit_code == 2 and message in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_app_id_without_its_password_is_reported_as_settings_are(env: pytest.MonkeyPatch) -> None:
    env.setenv("MICROSOFT_APP_ID", APP_ID)
    result = CliRunner().invoke(app, ["teams", "package"])
    assert result.exit_code == 2 and "set both MICROSOFT_APP_ID and MICROSOFT_APP_PASSWORD" in result.output
