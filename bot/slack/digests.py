"""Digests on Slack: a direct message with Block Kit, then the chart through Slack's file upload
flow (files.getUploadURLExternal, the upload, files.completeUploadExternal into the DM)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.digests import Chart
from bot.slack.render import render
from bot.slack.rooms import translated, user_for_email
from crm_store.models import User
from handlers.reply import Reply

CHART_FILE = "pipeline.png"


class SlackDirect:
    platform = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def open_dm(self, user: User) -> str | None:
        slack_id = user.slack_user_id or await user_for_email(self.client, user.email)
        if slack_id is None:
            return None
        async with translated():
            answer = await self.client.conversations_open(users=slack_id)
        return str(answer["channel"]["id"])

    async def post_dm(self, conversation: str, message: Reply, chart: Chart | None) -> str:
        rendered = render(message)
        async with translated():
            answer = await self.client.chat_postMessage(channel=conversation, text=rendered.text,
                                                        blocks=rendered.blocks, unfurl_links=False)
        return str(answer["ts"])

    async def attach_chart(self, conversation: str, chart: Chart) -> str | None:
        async with translated():
            answer = await self.client.files_upload_v2(content=chart.png, filename=CHART_FILE, title=chart.title,
                                                       alt_txt=chart.alt, channel=conversation)
        return str(answer["files"][0]["id"])
