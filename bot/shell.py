"""The local shell adapter: a console that behaves like a chat with Dealbot.

Like every adapter it only translates: a typed line becomes an `Invocation`, the dispatcher
answers with a `Reply`, and the reply is rendered as text. Tests drive the core through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from crm_store import Actor, Store
from handlers.dispatch import Dispatcher
from handlers.invocation import Invocation
from handlers.reply import Reply
from bot.render_text import render

SHELL_HELP = """Shell commands:
  /crm <command>   talk to Dealbot (try /crm help)
  /as EMAIL        act as another CRM user
  /whoami          who you are acting as
  /quit            leave (Ctrl-D works too)"""


def describe(actor: Actor) -> str:
    if not actor.is_mapped:
        return "an unmapped chat user (lookups show nothing until an admin links your email)"
    return f"{actor.name} <{actor.email}>, {'an' if actor.role == 'admin' else 'a'} {actor.role}"


class ShellAdapter:
    """One chat session in the console; `channel_id` lets a test pretend to be in a room."""

    def __init__(self, store: Store, actor: Actor, *, channel_id: str | None = None) -> None:
        self.store = store
        self.actor = actor
        self.channel_id = channel_id
        self.dispatcher = Dispatcher(store)

    async def ask(self, text: str) -> Reply:
        """Run one ``/crm`` line and return the reply (what tests look at)."""
        invocation = Invocation(text=text, actor=self.actor, platform="shell", channel_id=self.channel_id)
        return await self.dispatcher.dispatch(invocation)

    async def act_as(self, email: str) -> bool:
        actor = await self.store.actor_for(email=email)
        if actor.is_mapped:
            self.actor = actor
        return actor.is_mapped

    async def handle(self, line: str) -> str | None:
        """Answer one typed line as text; None means the user asked to leave."""
        line = line.strip()
        if not line or line.startswith("#"):
            return ""
        word = line.split(None, 1)[0].lower()
        if word in ("/quit", "/exit"):
            return None
        if word == "/crm":
            return render(await self.ask(line))
        if word == "/as":
            email = line[3:].strip()
            if not email:
                return "Type /as EMAIL, for example /as daniel.kim@example.com"
            if await self.act_as(email):
                return f"You are now {describe(self.actor)}."
            return f"No CRM user has the email {email!r}. You are still {describe(self.actor)}."
        if word == "/whoami":
            return f"You are {describe(self.actor)}."
        if word in ("/help", "/?"):
            return SHELL_HELP
        return "That is not a command. Dealbot commands start with /crm, e.g. /crm help. (/help lists shell commands.)"

    async def run(self, lines: Iterable[str], write: Callable[[str], None], *, echo: bool) -> None:
        for line in lines:
            if echo and line.strip() and not line.lstrip().startswith("#"):
                write(f"» {line.strip()}")
            answer = await self.handle(line)
            if answer is None:
                return
            if answer:
                write(answer + "\n")
