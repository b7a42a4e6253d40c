"""The Slack adapter: slack-bolt (async) on the one aiohttp server, or over Socket Mode.

Each listener only translates: payload in -> `Invocation` / chat event / form -> one call into
the core -> `Reply` rendered to Block Kit. Slash commands and buttons are acknowledged first
(Slack's 3-second rule), the answer goes out through `response_url` afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from html import unescape
from dataclasses import replace
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.slack import forms
from bot.slack.events import permalink, translate
from bot.slack.identity import TOKEN_ERRORS, SlackIdentity
from bot.slack.render import CMD, FORM, SHARE, render
from crm_store import Actor, Store
from crm_store.deals import EntryKind, Source, room_deal
from handlers import texts
from crm_store.chat_events import AppRemoved, ChatEvents, ChatMessage, ReactionChanged
from handlers.format import join_names
from handlers.dispatch import Dispatcher
from handlers.invocation import Context, Invocation
from handlers.notes import log_from_form
from handlers.registry import FormError
from handlers.reply import Reply

log = logging.getLogger("dealbot.slack")
REF = re.compile(r"#(\d+)")
MAX_OPTIONS = 20
SHORTCUT = "log_as_decision"  # the message shortcut's callback id in app_manifest.yml
EVENTS = ("message", "reaction_added", "reaction_removed", "member_joined_channel", "app_uninstalled",
          "tokens_revoked")


def web_client(settings: Settings, *, retries: bool = True) -> AsyncWebClient:
    """The Web API client with retries on 429 (honouring Retry-After), connection errors and 5xx.

    Without `retries`, for work done by the outbox: it retries itself, paced and idempotently
    (a channel created by a call whose answer was lost is adopted, not created again), and a
    sleep inside one call would hold up every other row."""
    assert settings.slack_bot_token is not None
    handlers = [AsyncRateLimitErrorRetryHandler(max_retry_count=3), AsyncConnectionErrorRetryHandler(max_retry_count=2),
                AsyncServerErrorRetryHandler(max_retry_count=2)] if retries else []
    return AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                          retry_handlers=handlers)


class SlackAdapter:
    def __init__(self, store: Store, settings: Settings, dispatcher: Dispatcher, events: ChatEvents) -> None:
        assert settings.slack_bot_token is not None
        self.store, self.settings, self.dispatcher, self.events = store, settings, dispatcher, events
        self.client = web_client(settings)
        self.identity = SlackIdentity(self.client, store)
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        self.app = AsyncApp(
            client=self.client, signing_secret=secret, request_verification_enabled=secret is not None,
            process_before_response=True, user_facing_authorize_error_message=texts.NOT_AUTHORIZED,
            logger=logging.getLogger("dealbot.slack.bolt"),
        )
        self._socket: AsyncSocketModeHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._workspace_url: str | None = None  # for message links, from auth.test
        self._register()

    # -- transport ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /slack/events``: commands, events and interactivity, signature checked by Bolt."""
        return await to_aiohttp_response(await self.app.async_dispatch(await to_bolt_request(request)))

    async def start_socket_mode(self) -> None:
        assert self.settings.slack_app_token is not None
        self._socket = AsyncSocketModeHandler(self.app, self.settings.slack_app_token.get_secret_value())
        await self._socket.connect_async()

    async def close(self, timeout_s: float = 20.0) -> None:
        """Stop taking requests, finish the answers still being worked on, then close."""
        if self._socket is not None:
            await self._socket.close_async()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)

    def _later(self, work: Coroutine[Any, Any, None], body: dict[str, Any], respond: AsyncRespond | None) -> None:
        """Run `work` after the acknowledgement has been sent: Bolt processes every request before
        answering (so a failed event is answered 500 and Slack retries it); slow work goes here."""
        async def run() -> None:
            async with self._reporting(body, respond):
                await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @asynccontextmanager
    async def _reporting(self, body: dict[str, Any], respond: AsyncRespond | None) -> AsyncIterator[None]:
        """Our listeners' one error hook: a failure is logged and, where possible, told politely."""
        try:
            yield
        except Exception as error:
            await self._error(error, body, respond)

    # -- listeners ----------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        app.command("/crm")(self._command)
        app.action(re.compile(f"^{CMD}:"))(self._button)
        app.action(re.compile(f"^{FORM}:"))(self._open_form)
        app.action(SHARE)(self._share)
        app.options(forms.DEAL_PICKER)(self._deal_options)
        app.view(forms.CALLBACK)(self._submit_form)
        app.shortcut(SHORTCUT)(self._log_message)
        for name in EVENTS:
            app.event(name)(self._event)
        app.error(self._bolt_error)

    async def _run(self, text: str, user_id: str, channel_id: str | None) -> Reply:
        who = await self.identity.user(user_id)
        return await self.dispatcher.dispatch(Invocation(text=text, actor=who.actor, platform="slack",
                                                         channel_id=channel_id, time_zone=who.time_zone))

    async def _command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        self._later(self._answer(command, respond), command, respond)

    async def _answer(self, command: dict[str, Any], respond: AsyncRespond) -> None:
        text = unescape(command.get("text") or "")  # Slack escapes &, < and >
        reply = await self._run(text, command["user_id"], command.get("channel_id"))
        message = render(reply, share_command=text or None)
        await respond(text=message.text, blocks=message.blocks, response_type="ephemeral")

    async def _button(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        self._later(self._press(body, action, respond), body, respond)

    async def _press(self, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        command = action.get("value") or ""
        reply = await self._run(command, body["user"]["id"], (body.get("channel") or {}).get("id"))
        message = render(reply, share_command=command)
        await respond(text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False)

    async def _share(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        """Post a reply into the channel for everyone, only if everyone there may see it."""
        await ack()
        self._later(self._share_now(body, action, respond), body, respond)

    async def _share_now(self, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        command, user_id = action.get("value") or "", body["user"]["id"]
        channel_id = (body.get("channel") or {}).get("id")
        reply = await self._run(command, user_id, channel_id)
        refusal = texts.SHARE_PERSONAL if not reply.shareable else await self._share_refusal(reply, channel_id)
        if refusal:
            await respond(text=refusal, response_type="ephemeral", replace_original=False)
            return
        message = render(reply)
        await respond(text=message.text, blocks=message.blocks, response_type="in_channel", replace_original=False)

    async def _share_refusal(self, reply: Reply, channel_id: str | None) -> str | None:
        if not reply.reveals:
            return None
        if channel_id is None:
            return texts.SHARE_NO_CHANNEL
        try:
            members: list[str] = []
            cursor = None
            while True:
                page = await self.client.conversations_members(channel=channel_id, cursor=cursor, limit=200)
                members += page["members"]
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        except SlackApiError as error:
            log.info("cannot list channel members", extra={"error": error.response.get("error")})
            return texts.SHARE_CANNOT_SEE_MEMBERS
        outsiders: list[str] = []
        readers: list[Actor] = []
        for member in members:
            who = await self.identity.user(member)
            if who.is_bot:
                continue
            if who.actor.is_mapped:
                readers.append(who.actor)
            else:
                outsiders.append(who.actor.name)
        outsiders += [a.name for a in await self.store.who_cannot_see(reply.reveals, readers)]
        if outsiders:
            return texts.SHARE_REFUSED.format(people=join_names(outsiders))
        return None

    async def _open_form(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Opens the modal before answering: the trigger id is only good for 3 seconds."""
        await ack()
        async with self._reporting(body, None):
            command = action.get("value") or ""
            kind: EntryKind = "decision" if command.startswith("decision") else "note"
            actor = await self.identity.actor(body["user"]["id"])
            deal = None
            if (ref := REF.search(command)) and (opp := await self.store.opportunity(actor, int(ref.group(1)))):
                deal = (opp.id, opp.name)
            form = forms.FormContext(kind=kind, channel_id=(body.get("channel") or {}).get("id"))
            await self.client.views_open(trigger_id=body["trigger_id"], view=forms.log_view(form, deal=deal))

    async def _log_message(self, ack: AsyncAck, body: dict[str, Any], shortcut: dict[str, Any]) -> None:
        """The "Log as decision" message shortcut: the modal, prefilled with the message."""
        await ack()
        async with self._reporting(body, None):
            message, channel_id = shortcut.get("message") or {}, (shortcut.get("channel") or {}).get("id")
            actor = await self.identity.actor(shortcut["user"]["id"])
            opp = await room_deal(self.store, actor, "slack", channel_id) if channel_id else None
            form = forms.FormContext(kind="decision", channel_id=channel_id, message_ts=message.get("ts"))
            view = forms.log_view(form, deal=(opp.id, opp.name) if opp else None, text=message.get("text") or "")
            await self.client.views_open(trigger_id=shortcut["trigger_id"], view=view)

    async def _deal_options(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        async with self._reporting(body, None):
            actor = await self.identity.actor(body["user"]["id"])
            query = (body.get("value") or "").strip()[:200]
            found = await self.store.find_opportunities(actor, query, limit=MAX_OPTIONS) if query else []
            await ack(options=[forms.option(f.row.id, f.row.name) for f in found])

    async def _submit_form(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Validated before answering, so problems show next to their fields."""
        user_id = body["user"]["id"]
        form = forms.FormContext.load(view.get("private_metadata") or "")
        try:
            deal_id, text = forms.submitted(view)
            actor = await self.identity.actor(user_id)
            source = await self._source(form)
            ctx = Context(self.store, Invocation(text="", actor=actor, platform="slack", channel_id=form.channel_id))
            reply = await log_from_form(ctx, form.kind, deal_id, text, source)
        except FormError as problems:
            await ack(response_action="errors", errors=problems.problems)
            return
        except Exception as error:  # keep the modal open and say so, rather than a silent failure
            ref = await self._error(error, body)
            await ack(response_action="errors", errors={"text": texts.INTERNAL_ERROR.format(ref=ref)})
            return
        await ack()
        self._later(self._tell(user_id, form.channel_id, reply), body, None)

    async def _source(self, form: forms.FormContext) -> Source | None:
        if not (form.message_ts and form.channel_id):
            return None
        try:
            link = (await self.client.chat_getPermalink(channel=form.channel_id, message_ts=form.message_ts))["permalink"]
        except SlackApiError:
            link = None  # the entry is still tied to the message; only the link is missing
        return Source("slack", f"{form.channel_id}/{form.message_ts}", link)

    async def _tell(self, user_id: str, channel_id: str | None, reply: Reply) -> None:
        """A private confirmation: ephemeral where the user is, else a direct message."""
        message = render(reply)
        try:
            if channel_id:
                await self.client.chat_postEphemeral(channel=channel_id, user=user_id, text=message.text,
                                                     blocks=message.blocks)
                return
        except SlackApiError:
            pass  # not a member there: fall back to a direct message
        await self.client.chat_postMessage(channel=user_id, text=message.text, blocks=message.blocks)

    async def _event(self, body: dict[str, Any]) -> None:
        """Processed before answering: if it fails, Slack hears 500 and retries (deduped by id)."""
        event = translate(body, capture_bots=self.settings.capture_bot_messages)
        if event is None:
            return
        if isinstance(event, (ChatMessage, ReactionChanged)):
            event = await self._who_and_where(event)
        if await self.events.receive(event) and isinstance(event, AppRemoved):
            log.warning("Slack app uninstalled or its tokens revoked; Slack calls will fail until reinstalled")
            self.identity.forget()

    async def _who_and_where(self, event: ChatMessage | ReactionChanged) -> ChatMessage | ReactionChanged:
        """The CRM user behind the event (cached lookups) and, for a message, its link."""
        try:
            actor = await self.identity.actor(event.user_id)
        except SlackApiError:  # the profile could not be read now: captured without an author
            actor = Actor.unmapped(event.user_id)
        if isinstance(event, ChatMessage):
            if self._workspace_url is None:
                self._workspace_url = str((await self.client.auth_test()).get("url") or "")
            link = permalink(self._workspace_url, event.channel_id, event.message_id, event.thread_id) \
                if self._workspace_url else None
            return replace(event, actor_id=actor.user_id, permalink=link)
        return replace(event, actor_id=actor.user_id)

    async def _bolt_error(self, error: Exception, body: dict[str, Any], respond: AsyncRespond | None = None) -> None:
        await self._error(error, body, respond)

    async def _error(self, error: Exception, body: dict[str, Any], respond: AsyncRespond | None = None) -> str:
        """The one error hook (also Bolt's): log with a reference, tell the user politely when
        there is a way; returns the reference."""
        ref = secrets.token_hex(4)
        slack_error = error.response.get("error") if isinstance(error, SlackApiError) else None
        log.error("slack listener failed (ref %s, %s)", ref, slack_error or type(error).__name__, exc_info=error)
        if respond is not None and (body.get("response_url") or body.get("command")):
            text = texts.TOKEN_INVALID if slack_error in TOKEN_ERRORS else texts.INTERNAL_ERROR.format(ref=ref)
            try:
                await respond(text=text, response_type="ephemeral", replace_original=False)
            except Exception:  # the response_url itself failed; the log has it
                log.warning("could not tell the user about the failure", extra={"ref": ref})
        return ref
