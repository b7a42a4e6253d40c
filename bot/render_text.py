"""Render a `Reply` as readable plain text, for the local shell and `dealbot digest --preview`."""

from __future__ import annotations

import textwrap

from handlers.reply import Action, Reply

WIDTH = 100


def _wrap(text: str, indent: str = "") -> list[str]:
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        lines += textwrap.wrap(para, WIDTH, initial_indent=indent, subsequent_indent=indent) or [indent.rstrip()]
    return lines


def _buttons(actions: tuple[Action, ...] | list[Action]) -> str:
    return "  ".join(f"[{a.label} → /crm {a.command}]" for a in actions)


def render(reply: Reply) -> str:
    out: list[str] = []
    if reply.title:
        out += [reply.title, "─" * min(len(reply.title), WIDTH)]
    if reply.text:
        out += _wrap(("⚠ " if reply.kind == "error" else "") + reply.text)
    if reply.fields:
        width = max(len(f.label) for f in reply.fields)
        out += [f"{f.label:<{width}}  {f.value}" for f in reply.fields]
    for section in reply.sections:
        out.append("")
        if section.heading:
            out.append(section.heading)
        if section.text:
            out += _wrap(section.text, "  ")
        for number, item in enumerate(section.items, 1):
            bullet = f"{number}." if reply.kind == "choice" else "•"
            out += _wrap(f"{bullet} {item.title}", "  ")
            if item.detail:
                out += _wrap(item.detail, "     ")
            if item.actions:
                out.append("     " + _buttons(item.actions))
        for field in section.fields:
            out.append(f"  {field.label}: {field.value}")
        if section.footer:
            out += _wrap(section.footer, "  ")
    if reply.actions:
        out += ["", _buttons(reply.actions)]
    return "\n".join(out).strip("\n")
