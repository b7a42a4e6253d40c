"""Adaptive Card rendering for Teams: the structure, the buttons, literal user text, and the size limit."""

from __future__ import annotations

import base64
import os
import re
from typing import Any

import pytest

from bot.render_text import render as render_text
from bot.teams.cards import MAX_CARD_BYTES, CardMessage, activity_bytes, attachment, escape, render
from handlers import texts
from handlers.reply import Action, Field, Item, Reply, Section

# -- a structural check against the parts of the Adaptive Card 1.5 schema the renderer uses -------

COMMON = {"type", "id", "spacing", "separator", "isVisible", "requires", "fallback", "height"}
ELEMENTS: dict[str, tuple[set[str], set[str]]] = {  # type: (required, allowed besides COMMON)
    "TextBlock": ({"text"}, {"text", "wrap", "size", "weight", "color", "isSubtle", "maxLines",
                             "fontType", "horizontalAlignment", "style"}),
    "FactSet": ({"facts"}, {"facts"}),
    "Container": ({"items"}, {"items", "style", "selectAction", "verticalContentAlignment", "bleed",
                              "minHeight", "rtl", "backgroundImage"}),
    "ActionSet": ({"actions"}, {"actions"}),
    "Image": ({"url"}, {"url", "altText", "size", "style", "width", "horizontalAlignment",
                        "backgroundColor", "selectAction"}),
    "Input.Text": ({"id"}, {"label", "isMultiline", "isRequired", "errorMessage", "maxLength",
                            "placeholder", "value", "regex", "style", "inlineAction"}),
}
ACTION_COMMON = {"type", "title", "iconUrl", "id", "style", "fallback", "tooltip", "isEnabled", "mode", "requires"}
ACTIONS: dict[str, tuple[set[str], set[str]]] = {
    "Action.Submit": (set(), {"data", "associatedInputs"}),
    "Action.ShowCard": ({"card"}, {"card"}),
}
CARD = {"type", "version", "$schema", "body", "actions", "fallbackText", "speak", "lang", "msteams",
        "minHeight", "selectAction", "verticalContentAlignment", "rtl", "backgroundImage", "refresh",
        "authentication", "metadata"}
ENUMS: dict[str, set[str]] = {
    "size": {"Default", "Small", "Medium", "Large", "ExtraLarge", "Auto", "Stretch"},
    "weight": {"Default", "Lighter", "Bolder"},
    "color": {"Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"},
    "spacing": {"Default", "None", "Small", "Medium", "Large", "ExtraLarge", "Padding"},
}
BOOLEANS = {"wrap", "isSubtle", "separator", "isMultiline", "isRequired", "isVisible"}
ACTION_STYLES = {"default", "positive", "destructive"}


def check_card(card: dict[str, Any], *, root: bool = True) -> None:
    assert card["type"] == "AdaptiveCard" and set(card) <= CARD, set(card) - CARD
    if root:
        assert card["version"] == "1.5" and card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert isinstance(card.get("body", []), list) and isinstance(card.get("actions", []), list)
    for element in card.get("body", []):
        check_element(element)
    for action in card.get("actions", []):
        check_action(action)
    ids = [e["id"] for e in walk(card) if "id" in e and e["type"].startswith("Input.")]
    assert len(ids) == len(set(ids)), "input ids are unique within a card"


def check_element(element: dict[str, Any]) -> None:
    kind = element["type"]
    assert kind in ELEMENTS, f"unknown element type {kind}"
    required, allowed = ELEMENTS[kind]
    assert required <= set(element), f"{kind} lacks {required - set(element)}"
    assert set(element) <= allowed | COMMON, f"{kind} has unknown {set(element) - allowed - COMMON}"
    for name, values in ENUMS.items():
        assert element.get(name, "Default") in values, f"{kind}.{name} = {element[name]!r}"
    assert all(isinstance(element[b], bool) for b in BOOLEANS if b in element)
    if kind == "TextBlock":
        assert isinstance(element["text"], str) and element["text"]
    if kind == "FactSet":
        assert element["facts"] and all(set(f) == {"title", "value"} and isinstance(f["title"], str)
                                        and isinstance(f["value"], str) for f in element["facts"])
    if kind == "Container":
        assert element["items"]
        for child in element["items"]:
            check_element(child)
    if kind == "ActionSet":
        assert element["actions"]
        for action in element["actions"]:
            check_action(action)
    if kind == "Image":
        assert re.match(r"(https://|data:image/png;base64,)", element["url"])
    if kind == "Input.Text":
        assert isinstance(element.get("maxLength", 0), int)


def check_action(action: dict[str, Any]) -> None:
    kind = action["type"]
    assert kind in ACTIONS, f"unknown action type {kind}"
    required, allowed = ACTIONS[kind]
    assert required <= set(action) and set(action) <= allowed | ACTION_COMMON, action.keys()
    assert action.get("style", "default") in ACTION_STYLES
    assert isinstance(action.get("title", ""), str)
    if kind == "Action.ShowCard":
        check_card(action["card"], root=False)


def walk(node: Any) -> list[dict[str, Any]]:
    """Every element, action and nested card, depth first in document order."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "type" in node:
            found.append(node)
        for value in node.values():
            found += walk(value)
    elif isinstance(node, list):
        for value in node:
            found += walk(value)
    return found


def rendered(reply: Reply, **kwargs: Any) -> CardMessage:
    """`render`, with the checks every card must pass."""
    message = render(reply, **kwargs)
    check_card(message.card)
    assert activity_bytes(message) <= MAX_CARD_BYTES
    assert message.text
    return message


def literal(markdown: str) -> str:
    """What a CommonMark renderer shows for escaped text: escapes removed, paragraphs as lines."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\n\n", "\n")


def unescaped_markup(markdown: str) -> list[str]:
    return re.findall(r"[*_\[\]<`~{}]", re.sub(r"\\.", "", markdown))


def texts_of(card: dict[str, Any]) -> list[str]:
    return [e["text"] for e in walk(card) if e["type"] == "TextBlock"]


# -- the replies ----------------------------------------------------------------------------------

def deal_card_reply(kind: Any = "info") -> Reply:
    return Reply(
        title="Acme renewal", text="Negotiation, closing 30 June.",
        fields=[Field("Amount", "$120,000"), Field("Owner", "Maya Lopez")],
        sections=[Section(heading="Open deals", items=[
                      Item("Acme renewal", "Negotiation · $120,000", (Action("Open", "deal #1"),)),
                      Item("Acme expansion", "Proposal · $40,000", (Action("Open", "deal #2", "primary"),)),
                      Item("Acme pilot")]),
                  Section(heading="Totals", fields=[Field("Open", "2")], footer="Amounts in USD.")],
        actions=[Action("Log decision", "decision #1:"), Action("Open timeline", "timeline #1"),
                 Action("Undo", "capture undo 7", "danger")],
        kind=kind)


def test_a_typical_reply_maps_to_title_facts_sections_items_and_buttons() -> None:
    message = rendered(deal_card_reply())
    body = message.card["body"]
    assert body[0] == {"type": "TextBlock", "text": "Acme renewal", "wrap": True, "size": "Large", "weight": "Bolder"}
    assert body[1] == {"type": "TextBlock", "text": "Negotiation, closing 30 June.", "wrap": True}
    assert body[2] == {"type": "FactSet", "facts": [{"title": "Amount", "value": "$120,000"},
                                                    {"title": "Owner", "value": "Maya Lopez"}]}
    heading = body[3]
    assert (heading["text"], heading["weight"], heading["separator"]) == ("Open deals", "Bolder", True)
    first, second, third = body[4:7]
    assert [e["type"] for e in first["items"]] == ["TextBlock", "TextBlock", "ActionSet"]
    title, detail, buttons = first["items"]
    assert (title["text"], title["weight"]) == ("Acme renewal", "Bolder")
    assert (detail["text"], detail["isSubtle"]) == ("Negotiation · $120,000", True)
    assert buttons["actions"] == [{"type": "Action.Submit", "title": "Open",
                                   "data": {"dealbot": "cmd", "command": "deal #1"}}]
    assert second["items"][2]["actions"][0]["style"] == "positive"
    assert [e["type"] for e in third["items"]] == ["TextBlock"]  # no detail, no button
    assert body[7]["text"] == "Totals" and body[7]["separator"] is True
    assert body[8] == {"type": "FactSet", "facts": [{"title": "Open", "value": "2"}]}
    assert body[9] == {"type": "TextBlock", "text": "Amounts in USD.", "wrap": True, "size": "Small", "isSubtle": True}
    assert len(body) == 10, "nothing was cut, so no '… and N more'"
    assert message.text == render_text(deal_card_reply())


def test_top_level_actions_submit_their_command_with_mapped_styles() -> None:
    actions = rendered(deal_card_reply()).card["actions"]
    assert [a["type"] for a in actions] == ["Action.ShowCard", "Action.Submit", "Action.Submit"]
    assert actions[1] == {"type": "Action.Submit", "title": "Open timeline",
                          "data": {"dealbot": "cmd", "command": "timeline #1"}}
    assert actions[2]["style"] == "destructive" and actions[2]["data"]["command"] == "capture undo 7"


def test_a_command_that_needs_text_unfolds_a_form_with_a_required_text_box() -> None:
    [form] = rendered(Reply(title="Deal", actions=[Action("Log note", "log #3:", "primary")])).card["actions"]
    assert (form["type"], form["title"], form["style"]) == ("Action.ShowCard", "Log note", "positive")
    [box] = form["card"]["body"]
    assert box["type"] == "Input.Text" and box["id"] == "text"
    assert box["isMultiline"] is True and box["isRequired"] is True
    assert box["errorMessage"] == texts.CARD_FORM_REQUIRED and box["maxLength"] == 3000
    [submit] = form["card"]["actions"]
    assert submit["type"] == "Action.Submit" and submit["title"] == texts.CARD_FORM_SUBMIT
    assert submit["data"] == {"dealbot": "form", "command": "log #3:", "input": "text"}


def test_two_forms_in_one_card_get_their_own_text_box() -> None:
    reply = Reply(title="Acme", actions=[Action("Log decision", "decision #3:"), Action("Log note", "log #3:")],
                  sections=[Section(items=[Item("Globex", actions=(Action("Log note", "log #4:"),))])])
    card = rendered(reply).card  # the checker asserts the ids are unique
    boxes = {e["data"]["command"]: e["data"]["input"] for e in walk(card) if e["type"] == "Action.Submit"}
    assert boxes == {"decision #3:": "text", "log #3:": "text-2", "log #4:": "text-3"}


def test_an_item_form_button_and_overlong_commands() -> None:
    reply = Reply(sections=[Section(items=[Item("Acme", actions=(Action("Log note", "log #3:"),)),
                                           Item("Globex", actions=(Action("Open", "deal #4 " + "x" * 2100),))])],
                  actions=[Action("Too long", "log #3: " + "x" * 2100), Action("Open", "deal #3")])
    card = rendered(reply).card
    acme, globex = card["body"]
    assert acme["items"][1]["actions"][0]["type"] == "Action.ShowCard"
    assert len(globex["items"]) == 1, "a command too long to run gets no button"
    assert [a["data"]["command"] for a in card["actions"]] == ["deal #3"]


def test_choice_items_are_numbered_and_the_number_is_not_a_markdown_list() -> None:
    reply = Reply(text="Several deals match “acme”. Which one did you mean?", kind="choice",
                  sections=[Section(items=[Item("Acme renewal", actions=(Action("Choose", "deal #1", "primary"),)),
                                           Item("Acme pilot", actions=(Action("Choose", "deal #2", "primary"),))])])
    body = rendered(reply).card["body"]
    titles = [e["items"][0]["text"] for e in body if e["type"] == "Container"]
    assert titles == ["1\\. Acme renewal", "2\\. Acme pilot"]
    assert [literal(t) for t in titles] == ["1. Acme renewal", "2. Acme pilot"]


NASTY = ["**Acme** [x](http://evil)", "<at>Maya</at>", "_Globex_ ~~old~~ `code`", "# Big\n> quote\n- item\n+ more",
         "1. first\n2) second", "{{DATE(2017-02-14T06:00:00Z, SHORT)}}", "&lt;b&gt; &#42;", "back\\slash\\*"]


@pytest.mark.parametrize("name", NASTY)
def test_user_text_renders_literally_everywhere(name: str) -> None:
    reply = Reply(title=name, text=name, fields=[Field(name, name)],
                  sections=[Section(heading=name, text=name, items=[Item(name, name)],
                                    fields=[Field(name, name)], footer=name)])
    card = rendered(reply).card
    [item] = [e for e in card["body"] if e["type"] == "Container"]
    detail = item["items"].pop(1)["text"]  # the one place where URLs become links
    shown = texts_of(card) + [f[k] for e in walk(card) if e["type"] == "FactSet" for f in e["facts"] for k in f]
    assert len(shown) == 10
    for markdown in shown + [re.sub(r"\[open message\]\(http://evil\)", "http://evil", detail)]:
        assert literal(markdown) == name
        assert not unescaped_markup(markdown), markdown


def test_escaping_leaves_ordinary_punctuation_alone() -> None:
    assert escape("AT&T (EMEA) - 3-year deal, 50% off. Q3!") == "AT&T (EMEA) - 3-year deal, 50% off. Q3!"
    assert escape("**Acme** [x](http://evil)") == "\\*\\*Acme\\*\\* \\[x\\](http://evil)"
    assert escape("<at>Maya</at>") == "\\<at>Maya\\</at>"


def test_a_link_in_an_item_detail_becomes_an_open_message_link() -> None:
    url = "https://teams.microsoft.com/l/message/19:a_b@thread.tacv2/17?context=(x)"
    reply = Reply(sections=[Section(items=[Item("Decided: *3-year* term", f"12 May · Maya\n{url}"),
                                           Item("Note", f"(see {url}). Or https://example.com/a_b.")])])
    first, second = rendered(reply).card["body"]
    link = "[open message](https://teams.microsoft.com/l/message/19:a_b@thread.tacv2/17?context=%28x%29)"
    assert first["items"][1]["text"] == f"12 May · Maya\n\n{link}"
    assert first["items"][0]["text"] == "Decided: \\*3-year\\* term"
    assert second["items"][1]["text"] == f"(see {link}). Or [open message](https://example.com/a_b)."


def test_an_error_reply_is_shown_in_the_attention_colour() -> None:
    [block] = rendered(Reply.error("`nope` is not a command.")).card["body"]
    assert block["color"] == "Attention" and literal(block["text"]) == "`nope` is not a command."
    assert "color" not in rendered(Reply(text="fine")).card["body"][0]


def test_500_items_are_cut_to_fit_with_an_exact_and_n_more() -> None:
    items = [Item(f"Deal {i}", f"Negotiation · ${i},000 · closes in {i} days",
                  (Action("Open", f"deal #{i}"),)) for i in range(500)]
    reply = Reply(title="Pipeline", fields=[Field("Open deals", "500")],
                  sections=[Section(heading="Open", items=items[:250]),
                            Section(heading="Closing soon", items=items[250:], footer="Sorted by close date.")],
                  actions=[Action("Refresh", "pipeline")])
    message = rendered(reply)
    body = message.card["body"]
    kept = [e["items"][0]["text"] for e in body if e["type"] == "Container"]
    assert 20 < len(kept) < 250
    assert kept == [f"Deal {i}" for i in range(len(kept))], "items are cut from the end, in order"
    assert body[-1] == {"type": "TextBlock", "text": texts.CARD_MORE.format(count=500 - len(kept)),
                        "wrap": True, "isSubtle": True}
    assert all(e.get("text") != "Closing soon" for e in body), "a heading whose items were all cut goes too"
    assert message.card["actions"][0]["data"]["command"] == "pipeline", "the buttons stay"


def test_a_small_image_is_inlined_after_the_top_text_and_a_large_one_is_left_out() -> None:
    small = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    reply = deal_card_reply()
    body = rendered(reply, image=small, image_alt="Pipeline by stage").card["body"]
    assert [e["type"] for e in body[:4]] == ["TextBlock", "TextBlock", "FactSet", "Image"]
    assert body[3] == {"type": "Image", "url": "data:image/png;base64," + base64.b64encode(small).decode(),
                       "altText": "Pipeline by stage"}

    large = b"\x89PNG\r\n\x1a\n" + os.urandom(MAX_CARD_BYTES)
    without = rendered(reply, image=large, image_alt="Pipeline by stage")
    assert all(e["type"] != "Image" for e in walk(without.card))
    assert without.card == rendered(reply).card, "the rest is rendered as if there were no image"


def test_an_image_that_fits_is_kept_and_items_make_room_for_it() -> None:
    chart = b"\x89PNG\r\n\x1a\n" + os.urandom(12_000)
    items = [Item(f"Deal {i}", "Negotiation", (Action("Open", f"deal #{i}"),)) for i in range(200)]
    body = rendered(Reply(title="Weekly digest", sections=[Section(items=items)]), image=chart).card["body"]
    assert body[1]["type"] == "Image"
    assert body[-1]["text"].startswith("… and ")


def test_an_absurd_reply_still_renders_within_the_limit() -> None:
    emoji = "😀" * 5000
    reply = Reply(title=emoji, text=emoji, fields=[Field(f"F{i}" * 50, "v" * 3000) for i in range(40)],
                  sections=[Section(heading=emoji, text=emoji, items=[Item(emoji, emoji)] * 30,
                                    fields=[Field(emoji, emoji)] * 5, footer=emoji)],
                  actions=[Action("A" * 200, f"deal #{i} " + "y" * 1900) for i in range(40)])
    message = rendered(reply, image=os.urandom(5000))
    assert message.card["body"][0]["text"].endswith("…")
    assert len(message.text) <= 1000


def test_the_attachment_carries_the_card() -> None:
    card = rendered(Reply(text="hi")).card
    assert attachment(card) == {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
