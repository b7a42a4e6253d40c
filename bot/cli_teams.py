"""`dealbot teams package`: the zip a Teams admin uploads to install Dealbot in Microsoft Teams.

The manifest (teams_app/manifest.json) is shipped with placeholder ids; this command fills in the
bot's Microsoft App ID (MICROSOFT_APP_ID, a GUID) as the app id, the bot id, the message extension's
bot id and the RSC id, sets the version and the valid domains, and zips it with the two icons.

Command lists. Teams shows at most 10 commands per scope and the grammar has 12, so two are left
out of each list; they still work when typed, and `help` lists them all. `contact` is left out
everywhere: `find` already finds contacts by name. In channels (`team`) and group chats `digest`
is left out: it sets up a personal direct-message schedule, which belongs in the 1:1 chat rather
than in front of a channel. In the 1:1 chat (`personal`) `room` is left out: deal rooms are opened
by the bot itself for every qualifying deal, and opening one by hand is rare and happens where
the deal team talks.

Permissions. Only `ChannelMessage.Read.Group` (resource-specific consent, granted by the team's
owner when the app is added): without it a bot in a channel sees only messages that @mention it,
and capture needs every message of a deal room, which is a channel. `TeamSettings.Read.Group` is
not asked for: nothing in Dealbot reads a team's settings. `ChatMessage.Read.Chat` is not asked
for: deal rooms are channels, never group chats, and in group chats Dealbot answers only when @mentioned
("Log as decision" works there without it: Teams sends the message with the action).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from importlib import metadata
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import typer

from bot.cli_support import settings_or_exit

teams_app = typer.Typer(help="Microsoft Teams: build the app package to upload.", no_args_is_help=True)
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")  # what Teams accepts as an app version
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
HOST = re.compile(rf"^(\*\.)?{LABEL}(?:\.{LABEL})+(:\d{{1,5}})?$")  # a validDomains entry: host, *.host, host:port
ICONS = ("color.png", "outline.png")


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(2)


def _app_files() -> Traversable:
    """The shipped teams_app folder; imported late so that the rest of the CLI works without it."""
    from importlib.resources import files

    try:
        return files("teams_app")
    except ModuleNotFoundError:
        raise _fail("The Teams app files (the teams_app package) are missing from this installation; "
                    "reinstall Dealbot (pip install -e . in a checkout).") from None


def _default_version() -> str:
    try:
        return metadata.version("dealbot")
    except metadata.PackageNotFoundError:
        raise _fail("Dealbot is not installed as a package, so its version is unknown; "
                    "pass --version X.Y.Z.") from None


def _app_id() -> str:
    app_id = (settings_or_exit().microsoft_app_id or "").strip()
    if not app_id:
        raise _fail("MICROSOFT_APP_ID is not set: set it (and MICROSOFT_APP_PASSWORD) to the Microsoft App ID "
                    "of Dealbot's Azure Bot registration, in the environment or in .env, then run this again.")
    if not GUID.match(app_id) or app_id == PLACEHOLDER_ID:
        raise _fail(f"MICROSOFT_APP_ID must be the GUID of Dealbot's Azure Bot registration, such as "
                    f"1b2c3d4e-0000-4a5b-8c9d-112233445566; got {app_id!r}.")
    return app_id


def build_manifest(template: dict[str, Any], app_id: str, version: str, domain: str | None) -> dict[str, Any]:
    """The shipped manifest with this installation's ids, version and domains filled in."""
    manifest = json.loads(json.dumps(template))  # a deep copy
    manifest["id"] = app_id
    manifest["version"] = version
    for section in ("bots", "composeExtensions"):
        for item in manifest.get(section, []):
            item["botId"] = app_id
    manifest["webApplicationInfo"]["id"] = app_id
    manifest["validDomains"] = [domain] if domain else []
    return manifest


@teams_app.command("package")
def package(
    out: Path | None = typer.Option(None, "--out", help="Where to write the zip.",
                                    show_default="dealbot-teams-VERSION.zip"),
    version: str | None = typer.Option(None, "--version", help="The app version Teams shows, X.Y.Z.",
                                       show_default="Dealbot's version"),
    domain: str | None = typer.Option(None, "--domain", help="A host name to list in validDomains, "
                                                             "e.g. dealbot.example.com."),
) -> None:
    """Write the Teams app package (manifest.json, color.png, outline.png) for a Teams admin to upload."""
    app_id = _app_id()
    version = version or _default_version()
    if not SEMVER.match(version):
        raise _fail(f"--version must be MAJOR.MINOR.PATCH, such as 1.0.3 (Teams needs that form); got {version!r}.")
    if domain is not None and not HOST.match(domain):
        raise _fail(f"--domain must be a host name without scheme or path, such as dealbot.example.com; "
                    f"got {domain!r}.")
    files = _app_files()
    manifest = build_manifest(json.loads(files.joinpath("manifest.json").read_text(encoding="utf-8")),
                              app_id, version, domain)
    target = out or Path(f"dealbot-teams-{version}.zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        for icon in ICONS:
            zf.writestr(icon, files.joinpath(icon).read_bytes())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue())
    except OSError as error:
        raise _fail(f"Cannot write {target}: {error.strerror or error}.") from None
    typer.echo(f"Wrote the Teams app package {target} (app id {app_id}, version {version}).")
    typer.echo("Next: in the Teams admin center, Teams apps > Manage apps > Upload new app, choose this file; "
               "or, for yourself only, in Teams: Apps > Manage your apps > Upload an app > Upload a custom app. "
               "When the app is added to a team, its owner grants it the messages of the team's channels "
               "(deal-room capture).")
