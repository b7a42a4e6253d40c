"""Render a `Reply` as an Adaptive Card (1.5) for Microsoft Teams, within Teams' message size limit.

Size. Microsoft documents "approximately 28 KB per post" for a Teams message, counting the text,
image links and @-mentions ("Limits and specifications for Microsoft Teams",
https://learn.microsoft.com/microsoftteams/limits-specifications-teams), and the same ~28 KB for
Adaptive Cards posted through the Teams connector (https://learn.microsoft.com/connectors/teams/);
bots hit a 413 ``MessageSizeTooBig`` there for years (MicrosoftDocs/msteams-docs#6659). The bot page
("Format your bot messages",
https://learn.microsoft.com/microsoftteams/platform/bots/how-to/format-your-bot-messages) has said
40 KB and now says 100 KB, counted as UTF-16 and leaving base64 images out. We keep to the smallest
figure and count everything, inline image included: the activity (fallback text and card,
serialized compactly and ASCII-escaped, as botbuilder sends it) stays under `MAX_CARD_BYTES`,
2 KB below 28 KB to leave room for the envelope (ids, service URL, channel data). A reply that
would not fit loses items from the end of its sections, with "… and N more"; an image that
cannot fit even without them is left out; over-long texts are clipped. Nothing is ever refused.

Text. TextBlocks and facts read a Markdown subset, so every text of the reply is escaped (see
`escape`); URLs in item details become "open message" links, as in the Slack renderer.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from bot.render_text import render as render_text
from crm_store.deals import MAX_NOTE_CHARS
from handlers import texts
from handlers.reply import Action, Field, Item, Reply, Section

SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

TEAMS_MESSAGE_BYTES = 28 * 1024  # the documented ~28 KB
MAX_CARD_BYTES = TEAMS_MESSAGE_BYTES - 2 * 1024  # the rest is for the activity envelope

# Clipping (characters, before escaping): generous for people, small enough that the title, the
# text and the fallback always fit together even when every character is escaped.
MAX_TITLE = 200
MAX_TEXT = 2500
MAX_HEADING = 200
MAX_ITEM_TITLE = 300
MAX_DETAIL = 1000
MAX_FACT_TITLE = 200
MAX_FACT_VALUE = 1000
MAX_LABEL = 75
MAX_COMMAND = 2000
MAX_ALT = 200
MAX_FALLBACK = 1000
MIN_TEXT = 100  # how short the text may get when an emoji-heavy reply still does not fit

KEY = "dealbot"  # every Action.Submit's data: {"dealbot": CMD | FORM, "command": ...}
CMD = "cmd"  # a button that runs its command
FORM = "form"  # the submit of a note/decision form; its data also names the text box ("input")
FORM_INPUT = "text"  # the first form's text box ("text-2", "text-3" … after it: ids are card-unique)

_STYLES = {"primary": "positive", "danger": "destructive"}


@dataclass(frozen=True, slots=True)
class CardMessage:
    text: str  # plain-text fallback: notifications, clients without cards
    card: dict[str, Any]


def attachment(card: dict[str, Any]) -> dict[str, Any]:
    """The Bot Framework attachment that carries `card` in an activity."""
    return {"contentType": CONTENT_TYPE, "content": card}


def activity_bytes(message: CardMessage) -> int:
    """Size of the activity as botbuilder sends it (compact JSON, non-ASCII escaped), envelope excluded."""
    activity = {"type": "message", "text": message.text, "attachments": [attachment(message.card)]}
    return len(json.dumps(activity, separators=(",", ":")))


# -- text ----------------------------------------------------------------------------------------

_ALWAYS = re.compile(r"[\\`*_\[\]{}<~]")
_LINE_START = re.compile(r"^([ \t]*)([#>+=-])", re.MULTILINE)
_LIST_NUMBER = re.compile(r"^([ \t]*\d+)([.)])", re.MULTILINE)
_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]+;)")
URL = re.compile(r"https?://[^\s]+")
_TRAILING = ".,;:!?'\""
_LINK_UNSAFE = {"(": "%28", ")": "%29", "<": "%3C", ">": "%3E", "\\": "%5C", "`": "%60"}
_SLOT = "\x00"


def escape(text: str) -> str:
    """Text shown as typed. TextBlocks and facts read Markdown (bold, italic, links, lists; Teams
    desktop also code, strike-through and headings) and ``{{DATE()}}`` functions, so a deal called
    ``**Acme** [x](http://evil)`` would turn bold and into a link. Teams honours CommonMark's
    backslash escapes, so each character that can open markup gets one. Those that matter only at
    the start of a line (lists, quotes, headings) are escaped only there: older mobile clients
    print the backslashes."""
    text = _ALWAYS.sub(r"\\\g<0>", text)
    text = _ENTITY.sub(r"\\&", text)
    text = _LINE_START.sub(r"\1\\\2", text)
    return _LIST_NUMBER.sub(r"\1\\\2", text)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _breaks(escaped: str) -> str:
    """Teams joins single newlines in a TextBlock; a blank line keeps the break."""
    return re.sub(r"\n+", "\n\n", escaped.strip("\n"))


def _md(text: str, limit: int) -> str:
    """Reply text as TextBlock Markdown: clipped first, so clipping never splits an escape."""
    return _breaks(escape(clip(text.replace("\r\n", "\n").replace("\r", "\n"), limit)))


def _destination(url: str) -> str:
    """A URL that cannot end the Markdown link early or smuggle markup into it."""
    return "".join(_LINK_UNSAFE.get(c, c) for c in url)


def _url_end(url: str) -> int:
    """Where a URL found in prose ends: not at the full stop or the bracket that closes the prose."""
    end = len(url)
    while end and (url[end - 1] in _TRAILING
                   or url[end - 1] == ")" and url.count("(", 0, end) < url.count(")", 0, end)):
        end -= 1
    return end


def linked(text: str, limit: int) -> str:
    """Like `_md`, with each URL made an "open message" link: escaping would break the URL, and
    the label keeps long permalinks out of sight (Slack's renderer does the same)."""
    plain = clip(text.replace(_SLOT, "").replace("\r\n", "\n").replace("\r", "\n"), limit)
    urls: list[str] = []

    def slot(match: re.Match[str]) -> str:
        end = _url_end(match.group(0))
        urls.append(match.group(0)[:end])
        return _SLOT + match.group(0)[end:]

    escaped = escape(URL.sub(slot, plain))
    links = iter(f"[{escape(texts.LINK_LABEL)}]({_destination(url)})" for url in urls)
    return _breaks(re.sub(_SLOT, lambda _: next(links), escaped))


# -- elements ------------------------------------------------------------------------------------

def _text_block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _fact_set(fields: Iterable[Field]) -> dict[str, Any]:
    return {"type": "FactSet", "facts": [{"title": _md(f.label, MAX_FACT_TITLE),
                                          "value": _md(f.value, MAX_FACT_VALUE)} for f in fields]}


def _form(action: Action, number: int) -> dict[str, Any]:
    """The card a form button unfolds: a required text box, and a submit carrying the command and
    the box's id (Teams adds the box's value under that id). Ids must be unique in the whole card,
    and a deal card has two forms (note, decision)."""
    input_id = FORM_INPUT if number == 1 else f"{FORM_INPUT}-{number}"
    box = {"type": "Input.Text", "id": input_id, "label": clip(action.label, MAX_LABEL),
           "isMultiline": True, "isRequired": True, "errorMessage": texts.CARD_FORM_REQUIRED,
           "maxLength": MAX_NOTE_CHARS}
    submit = {"type": "Action.Submit", "title": texts.CARD_FORM_SUBMIT, "style": "positive",
              "data": {KEY: FORM, "command": action.command, "input": input_id}}
    return {"type": "AdaptiveCard", "body": [box], "actions": [submit]}


def button(action: Action, forms: Iterator[int]) -> dict[str, Any] | None:
    """A Submit whose data is the command, or a ShowCard form when the command still needs text
    (`forms` numbers them); None when the command is too long to be a command."""
    if len(action.command) > MAX_COMMAND:
        return None
    title = clip(action.label, MAX_LABEL)
    out: dict[str, Any]
    if action.asks_for_text:
        out = {"type": "Action.ShowCard", "title": title, "card": _form(action, next(forms))}
    else:
        out = {"type": "Action.Submit", "title": title, "data": {KEY: CMD, "command": action.command}}
    if action.style in _STYLES:
        out["style"] = _STYLES[action.style]
    return out


def _item(item: Item, numbering: str, forms: Iterator[int]) -> dict[str, Any]:
    parts = [_text_block(_md(numbering + clip(item.title, MAX_ITEM_TITLE), MAX_ITEM_TITLE + 12),
                         weight="Bolder")]
    if item.detail:
        parts.append(_text_block(linked(item.detail, MAX_DETAIL), isSubtle=True, spacing="None"))
    first = button(item.actions[0], forms) if item.actions else None
    if first:
        parts.append({"type": "ActionSet", "actions": [first]})
    return {"type": "Container", "items": parts}


def _image(png: bytes, alt: str) -> dict[str, Any]:
    image = {"type": "Image", "url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
    if alt:
        image["altText"] = clip(alt, MAX_ALT)
    return image


def _more(count: int) -> dict[str, Any]:
    return _text_block(texts.CARD_MORE.format(count=count), isSubtle=True)


@dataclass(frozen=True, slots=True)
class _Part:
    """One body element of a section, the unit that is cut when a reply does not fit."""

    element: dict[str, Any]
    section: int
    entries: int = 0  # items or facts it shows: what "… and N more" counts when it is cut
    lead: bool = False  # a heading or intro: pointless once what follows it is cut


def _section(section: Section, index: int, numbered: bool, forms: Iterator[int]) -> list[_Part]:
    parts: list[_Part] = []
    if section.heading:
        parts.append(_Part(_text_block(_md(section.heading, MAX_HEADING), weight="Bolder"), index, lead=True))
    if section.text:
        parts.append(_Part(_text_block(_md(section.text, MAX_TEXT)), index, lead=True))
    parts += [_Part(_item(item, f"{n}. " if numbered else "", forms), index, entries=1)
              for n, item in enumerate(section.items, 1)]
    if section.fields:
        parts.append(_Part(_fact_set(section.fields), index, entries=len(section.fields)))
    if section.footer:
        parts.append(_Part(_text_block(_md(section.footer, MAX_TEXT), size="Small", isSubtle=True), index))
    if parts:
        parts[0] = replace(parts[0], element={**parts[0].element, "separator": True, "spacing": "Medium"})
    return parts


# -- layout --------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Layout:
    """What goes on the card; `fits` measures the whole activity."""

    fallback: str
    head: list[dict[str, Any]]
    facts: list[Field]
    picture: dict[str, Any] | None
    parts: list[_Part]
    actions: list[dict[str, Any]]
    left_out: int = 0
    dropped: list[_Part] = field(default_factory=list)

    def card(self) -> dict[str, Any]:
        body = list(self.head)
        if self.facts:
            body.append(_fact_set(self.facts))
        if self.picture:
            body.append(self.picture)
        body += [p.element for p in self.parts]
        missing = self.left_out + sum(p.entries for p in self.dropped)
        if missing:
            body.append(_more(missing))
        card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": VERSION, "body": body}
        if self.actions:
            card["actions"] = self.actions
        return card

    def fits(self) -> bool:
        return activity_bytes(CardMessage(self.fallback, self.card())) <= MAX_CARD_BYTES

    def keep(self, count: int, all_parts: list[_Part]) -> None:
        self.parts, self.dropped = all_parts[:count], all_parts[count:]


def _head(reply: Reply, text_limit: int) -> list[dict[str, Any]]:
    head: list[dict[str, Any]] = []
    if reply.title:
        head.append(_text_block(_md(reply.title, MAX_TITLE), size="Large", weight="Bolder"))
    if reply.text:
        style = {"color": "Attention"} if reply.kind == "error" else {}
        head.append(_text_block(_md(reply.text, text_limit), **style))
    return head


def _fit_fixed(layout: _Layout, reply: Reply) -> None:
    """The parts that are always shown, made to fit on their own (only absurd replies need it):
    facts go from the end (counted as left out), then buttons, then the text gets shorter."""
    while not layout.fits() and layout.facts:
        layout.facts.pop()
        layout.left_out += 1
    while not layout.fits() and layout.actions:
        layout.actions.pop()
    limit = MAX_TEXT
    while not layout.fits() and limit > MIN_TEXT:
        limit //= 2
        layout.head = _head(reply, limit)


def _fit_parts(layout: _Layout, parts: list[_Part]) -> None:
    """Keep the longest run of section parts that fits (sizes grow with it, so bisect)."""
    low, high = 0, len(parts)  # the answer is in [low, high]; parts[:0] fits (the caller made sure)
    while low < high:
        middle = (low + high + 1) // 2
        layout.keep(middle, parts)
        if layout.fits():
            low = middle
        else:
            high = middle - 1
    while 0 < low < len(parts) and parts[low - 1].lead and parts[low - 1].section == parts[low].section:
        low -= 1  # a heading whose items were all cut goes too
    layout.keep(low, parts)


def render(reply: Reply, *, image: bytes | None = None, image_alt: str = "") -> CardMessage:
    """An Adaptive Card for `reply`, with `image` (PNG, e.g. a digest chart) after its top text."""
    forms = itertools.count(1)
    actions = [b for a in reply.actions if (b := button(a, forms))]
    parts = [p for i, s in enumerate(reply.sections) for p in _section(s, i, reply.kind == "choice", forms)]
    layout = _Layout(fallback=clip(render_text(reply), MAX_FALLBACK), head=_head(reply, MAX_TEXT),
                     facts=list(reply.fields), picture=_image(image, image_alt) if image else None,
                     parts=parts, actions=actions)
    if not layout.fits():
        picture, layout.picture = layout.picture, None
        layout.keep(0, parts)
        _fit_fixed(layout, reply)
        if picture is not None:
            layout.picture = picture
            if not layout.fits():
                layout.picture = None
        _fit_parts(layout, parts)
    return CardMessage(text=layout.fallback, card=layout.card())


def log_form(*, text: str, deal: str, problems: dict[str, str]) -> dict[str, Any]:
    """The "Log as decision" form of the message action: the message's words (editable) and the
    deal, with what was wrong last time under its field. Teams adds the inputs' values to the
    submitted ``data`` under their ids."""
    body: list[dict[str, Any]] = [
        {"type": "Input.Text", "id": "text", "label": texts.TEAMS_LOG_TEXT, "isMultiline": True,
         "isRequired": True, "errorMessage": texts.CARD_FORM_REQUIRED, "maxLength": MAX_NOTE_CHARS,
         "value": clip(text, MAX_NOTE_CHARS)},
    ]
    if problems.get("text"):
        body.append(_text_block(escape(problems["text"]), color="attention", size="small"))
    body.append({"type": "Input.Text", "id": "deal", "label": texts.TEAMS_LOG_DEAL,
                 "placeholder": texts.TEAMS_LOG_DEAL_HINT, "isRequired": True,
                 "errorMessage": texts.TEAMS_LOG_DEAL_MISSING, "maxLength": 200, "value": clip(deal, 200)})
    if problems.get("deal"):
        body.append(_text_block(escape(problems["deal"]), color="attention", size="small"))
    return {"type": "AdaptiveCard", "$schema": SCHEMA, "version": VERSION, "body": body,
            "actions": [{"type": "Action.Submit", "title": texts.TEAMS_LOG_SUBMIT, "style": "positive"}]}
