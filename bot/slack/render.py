"""Render a `Reply` as Block Kit (slack-sdk's block models) within Slack's limits.

Limits (https://api.slack.com/reference/block-kit): 50 blocks per message, 3,000 characters per
section text, 10 fields per section of 2,000 each, 25 elements per actions block, 75 characters
per button label, 2,000 per button value, 150 per header. A reply that would exceed them is cut
with "… and N more", never refused. A plain-text fallback is always set (notifications, screen
readers, clients without blocks).
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.render_text import render as render_text
from handlers import texts
from handlers.reply import Action, Field, Item, Reply

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD = 2000
MAX_ELEMENTS = 25
MAX_LABEL = 75
MAX_VALUE = 2000
MAX_HEADER = 150
MAX_FALLBACK = 3000

CMD = "dealbot:cmd"  # a button that runs a command
FORM = "dealbot:form"  # a button that opens the note/decision form
SHARE = "dealbot:share"  # "Share in channel"


@dataclass(frozen=True, slots=True)
class Message:
    text: str
    blocks: list[dict[str, Any]]


def escape(text: str) -> str:
    """Slack's three control characters; names like ``<!channel>`` then show, and ping nobody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


URL = re.compile(r"https?://[^\s]+")


def linked(escaped: str) -> str:
    """Links in text already escaped, made clickable (`verbatim` turns Slack's own detection off)."""
    return URL.sub(lambda m: f"<{m.group(0)}|{texts.LINK_LABEL}>", escaped)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text, MAX_TEXT), verbatim=True)


def button(action: Action, number: int) -> ButtonElement | None:
    """A button whose value is the command it completes; None when the command cannot fit."""
    if len(action.command) > MAX_VALUE:
        return None
    kind = FORM if action.asks_for_text else CMD
    style = None if action.style == "default" else action.style
    return ButtonElement(text=PlainTextObject(text=clip(action.label, MAX_LABEL), emoji=False),
                         action_id=f"{kind}:{number}", value=action.command, style=style)


def _fields(fields: list[Field]) -> list[Block]:
    blocks: list[Block] = []
    for start in range(0, len(fields), MAX_FIELDS):
        chunk = fields[start : start + MAX_FIELDS]
        blocks.append(SectionBlock(fields=[_field(f) for f in chunk]))
    return blocks


def _field(f: Field) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(f"*{escape(f.label)}*\n{escape(f.value)}", MAX_FIELD), verbatim=True)


def _item(item: Item, numbering: str, counter: list[int]) -> Block:
    text = f"{numbering}*{escape(item.title)}*" + (f"\n{linked(escape(item.detail))}" if item.detail else "")
    accessory = None
    if item.actions:
        counter[0] += 1
        accessory = button(item.actions[0], counter[0])
    return SectionBlock(text=_mrkdwn(text), accessory=accessory)


def _line(item: Item) -> str:
    """An item of a compact list: a bullet, the title in bold, the detail indented below."""
    detail = "".join(f"\n      {linked(escape(line))}" for line in item.detail.splitlines())
    return f"• *{escape(item.title)}*{detail}"


def render(reply: Reply, *, share_command: str | None = None) -> Message:
    """Blocks for `reply`; with `share_command`, a "Share in channel" button that re-runs it."""
    head: list[Block] = []
    if reply.title:
        head.append(HeaderBlock(text=PlainTextObject(text=clip(reply.title, MAX_HEADER), emoji=False)))
    if reply.text:
        prefix = ":warning: " if reply.kind == "error" else ""
        head.append(SectionBlock(text=_mrkdwn(prefix + escape(reply.text))))
    head += _fields(reply.fields)

    counter = [0]
    tail: list[Block] = []
    buttons = [b for i, a in enumerate(reply.actions[:MAX_ELEMENTS - 1]) if (b := button(a, 100 + i))]
    if share_command and reply.shareable and reply.kind != "error" and len(share_command) <= MAX_VALUE:
        buttons.append(ButtonElement(text=PlainTextObject(text="Share in channel"), action_id=SHARE,
                                     value=share_command))
    if buttons:
        tail.append(ActionsBlock(elements=buttons))

    body: list[Block] = []
    budget = MAX_BLOCKS - len(head) - len(tail) - 1  # one spare for "… and N more"
    left_out = 0
    for section in reply.sections:
        blocks: list[Block] = []
        if section.heading or section.text:
            text = "\n".join(x for x in (f"*{escape(section.heading)}*" if section.heading else "",
                                         escape(section.text)) if x)
            blocks.append(SectionBlock(text=_mrkdwn(text)))
        if section.compact and section.items:
            blocks.append(SectionBlock(text=_mrkdwn("\n".join(_line(item) for item in section.items))))
        else:
            blocks += [_item(item, f"{n}. " if reply.kind == "choice" else "", counter)
                       for n, item in enumerate(section.items, 1)]
        blocks += _fields(section.fields)
        if section.footer:
            blocks.append(ContextBlock(elements=[_mrkdwn(escape(section.footer))]))
        room = budget - len(body)
        if len(blocks) > room:
            left_out += len(blocks) - max(room, 0)
            blocks = blocks[: max(room, 0)]
        body += blocks
    if left_out:
        body.append(ContextBlock(elements=[_mrkdwn(f"… and {left_out} more")]))
    blocks_out = [b.to_dict() for b in head + body + tail]
    return Message(text=clip(render_text(reply), MAX_FALLBACK), blocks=blocks_out)
