"""Block Kit rendering stays inside Slack's limits by cutting, never by failing."""

from __future__ import annotations

from bot.slack.render import MAX_BLOCKS, render
from handlers.reply import Action, Field, Item, Reply, Section


def test_a_huge_reply_is_cut_with_and_n_more_within_every_limit() -> None:
    reply = Reply(
        title="T" * 400, text="x" * 5000,
        fields=[Field(f"F{i}", "v" * 3000) for i in range(25)],
        sections=[Section(heading="Deals", items=[
            Item(f"Deal {i}", "detail", (Action("Open" * 30, f"deal #{i}"),)) for i in range(120)])],
        actions=[Action(f"A{i}", f"deal #{i}") for i in range(40)],
    )
    message = render(reply, share_command="find everything")
    blocks = message.blocks
    assert len(blocks) <= MAX_BLOCKS
    assert len(blocks[0]["text"]["text"]) <= 150 and blocks[0]["type"] == "header"
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section" and "text" in b)
    field_blocks = [b for b in blocks if "fields" in b]
    assert len(field_blocks) == 3 and all(len(b["fields"]) <= 10 for b in field_blocks)
    assert all(len(f["text"]) <= 2000 for b in field_blocks for f in b["fields"])
    more = [b for b in blocks if b["type"] == "context" and b["elements"][0]["text"].startswith("… and ")]
    assert more, "the cut is announced"
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert len(actions["elements"]) <= 25 and actions["elements"][-1]["text"]["text"] == "Share in channel"
    labels = [b["accessory"]["text"]["text"] for b in blocks if "accessory" in b]
    assert labels and all(len(label) <= 75 for label in labels)
    assert message.text and len(message.text) <= 3000  # plain-text fallback always set


def test_buttons_that_need_text_open_a_form_and_overlong_commands_get_no_button() -> None:
    reply = Reply(title="Deal", actions=[Action("Log note", "log #3:"), Action("Open", "deal #3"),
                                         Action("Too long", "log #3: " + "x" * 2100)])
    [actions] = [b for b in render(reply).blocks if b["type"] == "actions"]
    assert [(e["action_id"].split(":")[1], e["value"]) for e in actions["elements"]] == [
        ("form", "log #3:"), ("cmd", "deal #3")]


def test_errors_and_personal_replies_get_no_share_button() -> None:
    assert render(Reply.error("nope"), share_command="deal x").blocks[-1]["type"] != "actions"
    personal = Reply(title="Your pipeline", shareable=False)
    assert all(b["type"] != "actions" for b in render(personal, share_command="pipeline").blocks)
