"""The "Log note" / "Log decision" modal: a deal picker fed by the fuzzy lookup as the user
types (external select) and a text box. The same modal serves the buttons on deal cards and the
"Log as decision" message shortcut, which prefills the message and remembers where it was said."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from crm_store.deals import EntryKind
from bot.slack.render import clip

CALLBACK = "dealbot:log"
DEAL_PICKER = "dealbot:deal_picker"
MAX_TEXT = 3000
MAX_OPTION_TEXT = 75
TITLES: dict[str, str] = {"note": "Log note", "decision": "Log decision"}


@dataclass(frozen=True, slots=True)
class FormContext:
    """What the modal carries through `private_metadata` to its submission."""

    kind: EntryKind
    channel_id: str | None = None
    message_ts: str | None = None  # set when logging a message (the shortcut)

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, raw: str) -> FormContext:
        data = json.loads(raw or "{}")
        kind: EntryKind = "decision" if data.get("kind") == "decision" else "note"
        return cls(kind=kind, channel_id=data.get("channel_id"), message_ts=data.get("message_ts"))


def option(deal_id: int, name: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": clip(name, MAX_OPTION_TEXT)}, "value": str(deal_id)}


def log_view(form: FormContext, *, deal: tuple[int, str] | None = None, text: str = "") -> dict[str, Any]:
    picker: dict[str, Any] = {"type": "external_select", "action_id": DEAL_PICKER, "min_query_length": 1,
                              "placeholder": {"type": "plain_text", "text": "Start typing a deal name"}}
    if deal is not None:
        picker["initial_option"] = option(*deal)
    box: dict[str, Any] = {"type": "plain_text_input", "action_id": "text", "multiline": True,
                           "max_length": MAX_TEXT}
    if text:
        box["initial_value"] = clip(text, MAX_TEXT)
    blocks: list[dict[str, Any]] = [
        {"type": "input", "block_id": "deal", "label": {"type": "plain_text", "text": "Deal"}, "element": picker},
        {"type": "input", "block_id": "text", "element": box,
         "label": {"type": "plain_text", "text": "Decision" if form.kind == "decision" else "Note"}},
    ]
    if form.message_ts:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": "The entry will link back to the message."}]})
    return {"type": "modal", "callback_id": CALLBACK, "private_metadata": form.dump(),
            "title": {"type": "plain_text", "text": TITLES[form.kind]},
            "submit": {"type": "plain_text", "text": "Save"}, "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": blocks}


def submitted(view: dict[str, Any]) -> tuple[int | None, str]:
    """The chosen deal id (None if none or garbled) and the text of a submitted modal."""
    values = (view.get("state") or {}).get("values") or {}
    selected = ((values.get("deal") or {}).get(DEAL_PICKER) or {}).get("selected_option") or {}
    text = ((values.get("text") or {}).get("text") or {}).get("value") or ""
    raw = str(selected.get("value") or "")
    return (int(raw) if raw.isdigit() else None), text
