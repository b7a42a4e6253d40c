"""The Teams adapter: botbuilder's CloudAdapter on the one aiohttp server (``POST /api/messages``).

Each path only translates: an activity in -> `Invocation` / chat event / form -> one call into the
core -> `Reply` rendered as an Adaptive Card. Commands come as a message @mentioning the bot in a
channel or group chat, or any message in the 1:1 chat; card buttons come back as messages whose
``value`` carries the command. Every other channel message (the app's resource-specific consent
delivers them all) goes to capture, as do edits and deletions. The "Log as decision" message
action arrives as ``composeExtension/fetchTask`` (show the form) and ``…/submitAction`` (log it).

Teams has no ephemeral messages: in a channel, an answer goes into the thread only when everyone
in the channel may see what it shows; otherwise to the asker's 1:1 chat, with a note in the thread.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import replace
from typing import Any

from aiohttp import web
from botbuilder.core import InvokeResponse, TurnContext
from botbuilder.schema import Activity, ActivityTypes
from msrest.exceptions import HttpOperationError

from bot import api
from bot.settings import Settings
from bot.teams import cards, events
from bot.teams.auth import AuthUnavailable, NotAuthenticated
from bot.teams.connector import TeamsCloudAdapter
from bot.teams.direct import PLATFORM, TeamsDirect, message
from bot.teams.identity import TeamsIdentity
from bot.teams.ids import LOG_AS_DECISION
from crm_store import Actor, Store, conversation_refs
from crm_store.chat_events import ChatEvents
from crm_store.deals import EntryKind, Source, room_deal
from handlers import texts
from handlers.dispatch import Dispatcher
from handlers.format import join_names
from handlers.invocation import Context, Invocation
from handlers.notes import log_from_form
from handlers.registry import FormError
from handlers.reply import Reply

log = logging.getLogger("dealbot.teams")
REF = re.compile(r"#(\d+)")
FETCH_TASK, SUBMIT_ACTION = "composeExtension/fetchTask", "composeExtension/submitAction"


class TeamsAdapter:
    def __init__(self, store: Store, settings: Settings, dispatcher: Dispatcher, events: ChatEvents,
                 adapter: TeamsCloudAdapter, direct: TeamsDirect) -> None:
        self.store, self.settings, self.dispatcher, self.events = store, settings, dispatcher, events
        self.adapter, self.direct = adapter, direct
        self.identity = TeamsIdentity(store)
        self._seen: dict[tuple[str, str], str] = {}  # references already stored: (scope, key) -> conversation id

    # -- transport ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /api/messages``: authenticated by botbuilder (every failure a 401), then one turn."""
        if request.content_type != "application/json":
            return api.problem(415, "expected a Bot Framework activity as application/json")
        try:
            body = await request.json()
            activity = Activity().deserialize(body) if isinstance(body, dict) else None
        except ValueError:
            activity = None
        if activity is None or not activity.type:
            return api.problem(400, "expected a Bot Framework activity (JSON with a type)")
        try:
            answer = await self.adapter.process_activity(request.headers.get("Authorization", ""), activity,
                                                         self.on_turn)
        except NotAuthenticated:
            return api.problem(401, "not authenticated: a valid Bot Framework token is required")
        except AuthUnavailable as error:
            log.warning("cannot check an activity's token", extra={"error": str(error)})
            return api.problem(503, "cannot verify tokens right now; retry later")
        if isinstance(answer, InvokeResponse):
            return web.json_response(answer.body, status=answer.status)
        return web.Response(status=201)

    # -- one turn -----------------------------------------------------------------------------

    async def on_turn(self, ctx: TurnContext) -> None:
        activity = ctx.activity
        await self._remember(activity)
        if activity.type == ActivityTypes.message:
            await self._message(ctx)
        elif activity.type in ("messageUpdate", "messageDelete"):
            await self._capture(activity)
        elif activity.type == ActivityTypes.invoke:
            await self._invoke(ctx)

    async def _message(self, ctx: TurnContext) -> None:
        activity = ctx.activity
        value = activity.value if isinstance(activity.value, dict) else None
        kind = activity.conversation.conversation_type if activity.conversation else None
        if value and value.get(cards.KEY) in (cards.CMD, cards.FORM):
            await self._reporting(ctx, self._card_action(ctx, value))
        elif kind == "personal" or self._mentioned(activity):
            text = events.plain(TurnContext.remove_recipient_mention(activity) or "")
            await self._reporting(ctx, self._command(ctx, text))
        elif kind == "channel":
            await self._capture(activity)

    @staticmethod
    def _mentioned(activity: Activity) -> bool:
        bot_id = activity.recipient.id if activity.recipient else None
        return any(((m.additional_properties or {}).get("mentioned") or {}).get("id") == bot_id
                   for m in TurnContext.get_mentions(activity))

    async def _reporting(self, ctx: TurnContext, work: Any) -> None:
        """The one error hook for what a person asked: logged with a reference, answered politely."""
        try:
            await work
        except Exception as error:
            ref = secrets.token_hex(4)
            log.error("teams turn failed (ref %s, %s)", ref, type(error).__name__, exc_info=error)
            said = texts.TEAMS_NOT_AUTHORIZED if isinstance(error, PermissionError) else \
                texts.INTERNAL_ERROR.format(ref=ref)
            try:
                await ctx.send_activity(said)
            except Exception:  # the connector itself failed; the log has it
                log.warning("could not tell the user about the failure", extra={"ref": ref})

    # -- commands and buttons -----------------------------------------------------------------

    async def _who(self, ctx: TurnContext) -> Actor:
        return await self._author(ctx.activity)

    async def _author(self, activity: Activity) -> Actor:
        """Who sent the activity; their connector record is read only the first time."""
        sender = activity.from_property
        if sender is None:
            return Actor.unmapped("a Teams user")

        async def record() -> dict[str, Any] | None:
            return await self.adapter.member(activity.service_url, activity.conversation.id, sender.id)
        return await self.identity.actor(sender.aad_object_id, sender.name or "a Teams user", member=record)

    async def _run(self, ctx: TurnContext, text: str) -> Reply:
        actor = await self._who(ctx)
        activity = ctx.activity
        invocation = Invocation(text=text, actor=actor, platform=PLATFORM,
                                channel_id=events.channel_of(activity) or activity.conversation.id,
                                time_zone=activity.local_timezone)
        return await self.dispatcher.dispatch(invocation)

    async def _command(self, ctx: TurnContext, text: str) -> None:
        await self._answer(ctx, await self._run(ctx, text))

    async def _card_action(self, ctx: TurnContext, value: dict[str, Any]) -> None:
        command = str(value.get("command") or "")
        if value.get(cards.KEY) == cards.FORM:
            await self._answer(ctx, await self._log_form(ctx, command, str(value.get(str(value.get("input")), ""))))
        else:
            await self._answer(ctx, await self._run(ctx, command))

    async def _form(self, ctx: TurnContext) -> Context:
        """The context a form is logged in: who submitted it, in which channel."""
        invocation = Invocation(text="", actor=await self._who(ctx), platform=PLATFORM,
                                channel_id=events.channel_of(ctx.activity))
        return Context(self.store, invocation)

    async def _room_deal_id(self, form: Context) -> int | None:
        channel = form.invocation.channel_id
        opp = await room_deal(self.store, form.actor, PLATFORM, channel) if channel else None
        return opp.id if opp else None

    async def _log_form(self, ctx: TurnContext, command: str, text: str) -> Reply:
        """A note or decision typed into a card's form: checked field by field, as on Slack."""
        form = await self._form(ctx)
        kind: EntryKind = "decision" if command.startswith("decision") else "note"
        deal_id = int(ref.group(1)) if (ref := REF.search(command)) else await self._room_deal_id(form)
        try:
            return await log_from_form(form, kind, deal_id, text)
        except FormError as problems:
            return Reply.error("\n".join(problems.problems.values()))

    async def _answer(self, ctx: TurnContext, reply: Reply) -> None:
        kind = ctx.activity.conversation.conversation_type
        if kind == "personal" or await self._everyone_may_see(ctx, reply):
            await ctx.send_activity(message(cards.render(reply)))
            return
        try:
            chat = await self.direct.open_chat(ctx.activity.from_property.id)
            await self.direct.post_dm(chat, reply, None)
        except Exception:
            log.warning("could not answer in a 1:1 chat", exc_info=True)
            await ctx.send_activity(texts.TEAMS_CANNOT_DM)
            return
        await ctx.send_activity(texts.TEAMS_SENT_PRIVATELY)

    async def _everyone_may_see(self, ctx: TurnContext, reply: Reply) -> bool:
        if not reply.shareable:
            return False
        if not reply.reveals:
            return True
        members = await self.adapter.members(ctx.activity.service_url, ctx.activity.conversation.id)
        readers: list[Actor] = []
        for member in members:
            async def known(member: dict[str, Any] = member) -> dict[str, Any]:
                return member
            actor = await self.identity.actor(member.get("aadObjectId"), member.get("name") or "someone", member=known)
            if not actor.is_mapped:
                return False
            readers.append(actor)
        outsiders = await self.store.who_cannot_see(reply.reveals, readers)
        if outsiders:
            log.info("answer kept private", extra={"outsiders": join_names([a.name for a in outsiders])})
        return not outsiders

    # -- capture --------------------------------------------------------------------------------

    async def _capture(self, activity: Activity) -> None:
        """Processed before answering: if it fails, the channel hears 500 (deduped by event id)."""
        event = events.translate(activity, capture_bots=self.settings.capture_bot_messages)
        if event is None:
            return
        try:
            actor = await self._author(activity)
        except HttpOperationError:  # the member could not be read now: captured without an author
            actor = Actor.unmapped(event.user_id)
        await self.events.receive(replace(event, actor_id=actor.user_id))

    # -- the "Log as decision" message action ---------------------------------------------------

    async def _invoke(self, ctx: TurnContext) -> None:
        activity = ctx.activity
        value = activity.value if isinstance(activity.value, dict) else {}
        if activity.name not in (FETCH_TASK, SUBMIT_ACTION) or value.get("commandId") != LOG_AS_DECISION:
            await self._invoke_answer(ctx, 200, {})
            return
        try:
            body = await (self._log_task(ctx, value) if activity.name == FETCH_TASK else self._log_submit(ctx, value))
        except Exception as error:
            ref = secrets.token_hex(4)
            log.error("message action failed (ref %s)", ref, exc_info=error)
            body = _task_message(texts.INTERNAL_ERROR.format(ref=ref))
        await self._invoke_answer(ctx, 200, body)

    async def _invoke_answer(self, ctx: TurnContext, status: int, body: dict[str, Any]) -> None:
        await ctx.send_activity(Activity(type=ActivityTypes.invoke_response, value=InvokeResponse(status=status, body=body)))

    async def _log_task(self, ctx: TurnContext, value: dict[str, Any], problems: dict[str, str] | None = None,
                        typed: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = value.get("messagePayload") or {}
        deal = (typed or {}).get("deal")
        if deal is None and (deal_id := await self._room_deal_id(await self._form(ctx))):
            deal = f"#{deal_id}"
        text = (typed or {}).get("text") or events.plain((payload.get("body") or {}).get("content"))
        card = cards.log_form(text=text, deal=deal or "", problems=problems or {})
        return {"task": {"type": "continue", "value": {"title": texts.TEAMS_LOG_TITLE, "width": "medium",
                                                      "height": "medium", "card": cards.attachment(card)}}}

    async def _log_submit(self, ctx: TurnContext, value: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = value["data"] if isinstance(value.get("data"), dict) else {}
        payload = value.get("messagePayload") or {}
        form = await self._form(ctx)
        channel = form.invocation.channel_id
        try:
            deal_id = await _deal_from(form, str(data.get("deal") or ""))
            source = None
            if channel and payload.get("id"):
                source = Source(PLATFORM, f"{channel}/{payload['id']}", payload.get("linkToMessage"))
            reply = await log_from_form(form, "decision", deal_id, str(data.get("text") or ""), source)
        except FormError as problems:
            return await self._log_task(ctx, value, problems.problems, data)
        return _task_message(reply.text)

    # -- references for proactive messages ------------------------------------------------------

    async def _remember(self, activity: Activity) -> None:
        """The latest way back to a person's 1:1 chat and to the team, stored when they change."""
        reference = TurnContext.get_conversation_reference(activity)
        kind = activity.conversation.conversation_type if activity.conversation else None
        team = (events.channel_data(activity).get("team") or {})
        tenant = (events.channel_data(activity).get("tenant") or {}).get("id")
        sender = activity.from_property
        wanted: list[tuple[conversation_refs.Scope, str]] = []
        if kind == "personal" and sender and sender.aad_object_id:
            wanted.append(("user", sender.aad_object_id))
        if team.get("aadGroupId") or team.get("id"):
            wanted.append(("team", str(team.get("aadGroupId") or team.get("id"))))
        for scope, key in wanted:
            stamp = f"{activity.service_url}|{activity.conversation.id}"
            if self._seen.get((scope, key)) == stamp:
                continue
            await conversation_refs.remember(self.store, PLATFORM, scope, key,
                                             {**reference.serialize(), "tenantId": tenant})
            self._seen[(scope, key)] = stamp


async def _deal_from(form: Context, typed: str) -> int:
    """The deal typed into the message action's form: ``#12``, or a name only one deal fits."""
    typed = typed.strip()
    if not typed:
        raise FormError({"deal": texts.TEAMS_LOG_DEAL_MISSING})
    if ref := re.fullmatch(r"#?(\d+)", typed):
        return int(ref.group(1))
    found = await form.store.find_opportunities(form.actor, typed, limit=4)
    if not found:
        raise FormError({"deal": texts.TEAMS_LOG_DEAL_NONE.format(query=typed)})
    exact = [f for f in found if f.row.name.lower() == typed.lower()]
    if len(found) == 1 or len(exact) == 1:
        return (exact or found)[0].row.id
    deals = ", ".join(f"#{f.row.id} {f.row.name}" for f in found)
    raise FormError({"deal": texts.TEAMS_LOG_DEAL_SEVERAL.format(query=typed, deals=deals)})


def _task_message(text: str) -> dict[str, Any]:
    return {"task": {"type": "message", "value": text}}
