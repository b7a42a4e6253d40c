"""What decision capture says to the author, and what its buttons do.

`CaptureTexts` implements `transcripts.capture.CaptureMessages`. The buttons run the hidden
``capture`` command (``capture log 12 decision``, ``capture dismiss 12``, ``capture undo 12``;
the number is the kept message), so every platform that renders buttons gets them.
"""

from __future__ import annotations

from crm_store.deals import EntryKind
from handlers import texts
from handlers.format import clip
from handlers.invocation import Context
from handlers.registry import CommandError, commands
from handlers.reply import Action, Reply
from transcripts import capture

EXCERPT_CHARS = 140


class CaptureTexts:
    def suggestion(self, kind: EntryKind, deal: str, excerpt: str, message_id: int) -> Reply:
        return Reply(text=texts.CAPTURE_SUGGEST.format(a_kind=texts.CAPTURE_KINDS[kind], deal=deal,
                                                       excerpt=clip(excerpt, EXCERPT_CHARS)),
                     actions=[Action(texts.CAPTURE_LOG, f"capture log {message_id} {kind}", "primary"),
                              Action(texts.CAPTURE_DISMISS, f"capture dismiss {message_id}")], shareable=False)

    def logged(self, kind: EntryKind, deal: str, excerpt: str, message_id: int) -> Reply:
        return Reply(text=texts.CAPTURE_LOGGED_AUTO.format(a_kind=texts.CAPTURE_KINDS[kind], deal=deal,
                                                           excerpt=clip(excerpt, EXCERPT_CHARS)),
                     actions=[Action(texts.CAPTURE_UNDO, f"capture undo {message_id}", "danger")], shareable=False)


@commands.command("capture", usage="capture log|dismiss|undo <message> [kind]", summary="What capture's buttons do.",
                  example="capture log 12 decision", args="required", hidden=True)
async def capture_button(ctx: Context, args: str) -> Reply:
    words = args.split()
    if len(words) < 2 or words[0] not in ("log", "dismiss", "undo") or not words[1].isdigit():
        raise CommandError(texts.CAPTURE_GONE)
    if not ctx.actor.is_mapped:
        raise CommandError(texts.CAPTURE_UNMAPPED)
    action, message_id = words[0], int(words[1])
    if action == "dismiss":
        return Reply(text=texts.CAPTURE_DISMISSED, shareable=False)
    if action == "undo":
        undone = await capture.undo(ctx.store, ctx.actor, message_id)
        if undone is None:
            raise CommandError(texts.CAPTURE_GONE)
        said = texts.CAPTURE_UNDONE if undone.done else texts.CAPTURE_NOTHING_TO_UNDO
        return Reply(text=said.format(kind=undone.kind.replace("_", " "), deal=undone.deal), shareable=False)
    kind: EntryKind = "action_item" if words[2:] == ["action_item"] else "decision"
    logged = await capture.log_message(ctx.store, ctx.actor, message_id, kind)
    if logged is None:
        raise CommandError(texts.CAPTURE_GONE)
    said = texts.CAPTURE_DONE if logged.done else texts.CAPTURE_ALREADY
    return Reply(text=said.format(a_kind=texts.CAPTURE_KINDS[kind], deal=logged.deal), shareable=False)
