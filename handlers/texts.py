"""Every sentence a user can read, in one place (wording, tone and future translation)."""

from __future__ import annotations

MAX_INPUT_CHARS = 4000
MAX_QUERY_CHARS = 200

TOO_LONG = "That is too long: {length:,} characters. A /crm command takes at most {limit:,}."
QUERY_TOO_LONG = "Search text can be at most {limit} characters; yours has {length:,}. Try the distinctive part of the name."
NOTE_TOO_LONG = "A {noun} can be at most {limit:,} characters; yours has {length:,}. Split it in two."
EMPTY_ARGS = "`/crm {name}` needs more: type `/crm {usage}`, for example `/crm {example}`."
NO_ARGS_EXPECTED = "`/crm {name}` takes no words after it. Type `/crm {usage}`."
UNKNOWN_COMMAND = "`{word}` is not a command. Did you mean `/crm {suggestion}`?"
UNKNOWN_COMMAND_WITH_RESULTS = "`{word}` is not a command, so here are search results. Did you mean `/crm {suggestion}`?"
UNKNOWN_HELP_TOPIC = "There is no command `{word}`. Type `/crm help` to see them all."
INTERNAL_ERROR = "Sorry, something went wrong on our side and it has been logged (reference {ref}). Please try again in a moment."
HELP_TITLE = "Dealbot commands"
HELP_INTRO = "Type `/crm` followed by a command. Anything that is not a command is searched for."

NOTHING_FOUND = "Nothing matches “{query}”. Check the spelling, or search for part of the name."
NO_MATCH = "No {kind} matches “{query}”. Check the spelling, or try `/crm find {query}`."
MORE_MATCHES = "More match; add a word to narrow it down."
DID_YOU_MEAN = "Several {kinds} match “{query}”. Which one did you mean?"
UNMAPPED_HINT = (
    "Your chat account is not linked to a user in the CRM, so Dealbot can show you nothing yet. "
    "Ask your Dealbot admin to add your email address."
)
NOT_VISIBLE_REF = "No {kind} {ref} that you can see. Look it up by name with `/crm find <name>`."

LOG_USAGE = "Tell me which deal: `/crm log <deal>: <note>`, for example `/crm log acme renewal: sent the revised quote`. Inside a deal room, `/crm log <note>` is enough."
LOG_EMPTY_NOTE = "The note is empty. Type `/crm log {deal}: <what happened>`."
LOG_DONE = "Noted on {deal}."
LOG_UNMAPPED = "Only users known to the CRM can log a {noun}. Ask your Dealbot admin to add your email address."
DECISION_USAGE = "Tell me which deal: `/crm decision <deal>: <decision>`, for example `/crm decision acme renewal: 3-year term agreed`. Inside a deal room, `/crm decision <decision>` is enough."
DECISION_EMPTY = "The decision is empty. Type `/crm decision {deal}: <what was decided>`."
DECISION_DONE = "Decision recorded on {deal}."
FORM_EMPTY = "Write the {noun} here."
FORM_NO_DEAL = "Choose the deal: start typing its name."
FORM_DEAL_NOT_VISIBLE = "You cannot see that deal (any more). Choose another one."
FORM_ALREADY_LOGGED = "That message is already on the timeline of {deal}; nothing was added twice."
TIMELINE_USAGE = "Which deal? Type `/crm timeline <deal>`, for example `/crm timeline acme renewal`. Inside a deal room, `/crm timeline` is enough."
TIMELINE_EMPTY = "Nothing on the timeline of {deal} yet. Add the first note with `/crm log #{ref}: <note>`."

PIPELINE_USAGE = "Type `/crm pipeline`, `/crm pipeline mine`, `/crm pipeline team` or `/crm pipeline @someone`."
PIPELINE_NO_TEAM = "Nobody reports to you in the CRM, so there is no team pipeline. Try `/crm pipeline mine`."
PIPELINE_NO_USER = "No CRM user matches “{who}”. Use their email address, e.g. `/crm pipeline @maya@example.com`."
PIPELINE_MANY_USERS = "Several people match “{who}”. Which one did you mean?"
PIPELINE_EMPTY = "No open deals in this pipeline that you can see."

SHARE_PERSONAL = "A pipeline is personal: its totals include deals it does not list. Share a deal card instead."
SHARE_NO_CHANNEL = "I can only share into a channel."
SHARE_CANNOT_SEE_MEMBERS = "I cannot see who is in this channel, so I cannot check that everyone may see this deal. Invite me with `/invite @Dealbot` and try again."
SHARE_REFUSED = "Not shared: {people} may not see this deal in the CRM, and a card posted here belongs to everyone who can read the channel."
NOT_AUTHORIZED = "Dealbot is not installed correctly in this workspace (its token was refused). Ask your Slack admin to reinstall the app."
TOKEN_INVALID = "Dealbot's Slack token was refused, so I could not finish that. Ask your Slack admin to reinstall the app."

ROOM_TOPIC = "{amount} · {stage} · closes {close} · owner {owner}"
ROOM_UPDATES = "What changed on {deal}:"
ROOM_ABSENT = "On the deal team but not on {platform} (so not invited): {people}."
ROOM_CLOSING = "{deal} was {outcome}. Final amount {amount}; open for {days}; {decisions} logged. This room will be archived."
ROOM_PLATFORM_NAMES = {"slack": "Slack", "teams": "Teams", "shell": "this chat"}
ROOM_NOT_HERE = "Deal rooms are not set up on this platform, so I cannot open one from here."
ROOM_EXISTS = "{deal} already has a room: #{channel}."
ROOM_ON_ITS_WAY = "Opening a room for {deal}: the deal team is invited as soon as it exists."
ROOM_CLOSED_DEAL = "{deal} is {status}: closed deals get no new room."

# -- the local shell's deal rooms (`dealbot shell`) ----------------------------------------------
SHELL_ROOMS_OFF = "This shell has no deal rooms. `dealbot shell --demo` has them."
SHELL_ROOMS_TITLE = "Deal rooms you can see"
SHELL_ROOMS_NONE = "No deal rooms that you can see yet. Open one with `/crm room <deal>`."
SHELL_ROOM_BEING_MADE = "(being created)"
SHELL_ROOM_HERE = "you are here"
SHELL_ENTER_USAGE = "Which room? Type `/enter <room>`, for example `/enter deal-acme-renewal`. `/rooms` lists them."
SHELL_NO_SUCH_ROOM = "There is no deal room called #{name} that you can see. `/rooms` lists the rooms you can see."
SHELL_SEVERAL_ROOMS = "Several rooms start with #{name}: {rooms}. Type more of the name."
SHELL_ENTERED = "You are in #{name} ({deal}). What you type now is posted here, and `/crm log <note>` needs no deal. `/leave` leaves."
SHELL_ENTERED_CLOSED = "You are in #{name} ({deal}); the room is {status}, so nothing can be posted here. `/leave` leaves."
SHELL_LEFT = "You left #{name}."
SHELL_NOT_IN_ROOM = "You are not in a room. `/enter <room>` enters one; `/rooms` lists them."
SHELL_LEFT_UNSEEN = "You are no longer in #{name}: {person} may not see that deal."
SHELL_ROOM_CLOSED = "#{name} is archived or gone, so nothing was posted. `/leave` leaves it."
SHELL_NOT_A_COMMAND = "That is not a command. Dealbot commands start with /crm, e.g. /crm help. (/help lists shell commands.)"

# -- decision capture in deal rooms (transcripts/capture.py, handlers/capture.py) -----------------
CAPTURE_SUGGEST = "That sounds like {a_kind} on {deal}: “{excerpt}”. Log it on the timeline?"
CAPTURE_LOGGED_AUTO = "Logged as {a_kind} on {deal}: “{excerpt}”."
CAPTURE_LOG = "Log it"
CAPTURE_DISMISS = "Dismiss"
CAPTURE_UNDO = "Undo"
CAPTURE_DONE = "Logged as {a_kind} on {deal}'s timeline."
CAPTURE_ALREADY = "That message is on {deal}'s timeline already."
CAPTURE_DISMISSED = "OK, not logged."
CAPTURE_UNDONE = "Undone: that {kind} is marked retracted on {deal}'s timeline."
CAPTURE_NOTHING_TO_UNDO = "There is nothing to undo on {deal}'s timeline for that message."
CAPTURE_GONE = "That message is no longer available (deleted, or on a deal you cannot see)."
CAPTURE_UNMAPPED = "I can't log that for you: your chat account isn't linked to a CRM user. Ask your CRM admin to add your email."
CAPTURE_KINDS = {"decision": "a decision", "action_item": "an action item"}
CARD_DECISIONS = "Latest decisions"

# -- /crm search ---------------------------------------------------------------------------------
SEARCH_TITLE = "Search results for “{query}”"
SEARCH_NO_WORDS = "There is nothing to search for in “{query}”: very common words such as “the” are left out. Type the words you remember, for example `/crm search security review`."
SEARCH_NOTHING = "Nothing you can see mentions “{query}”: no note, decision or deal-room message. Try other or fewer words."
SEARCH_MORE = "Only the best {limit} are shown. Add a word to narrow the search."
SEARCH_MESSAGE = "Message"
SEARCH_OPEN_TIMELINE = "Open timeline"
LINK_LABEL = "open message"

# -- Teams cards (bot/teams/cards.py) -------------------------------------------------------------
CARD_MORE = "… and {count:,} more"
CARD_FORM_SUBMIT = "Save"
CARD_FORM_REQUIRED = "This is empty. Write something first."

# -- digests (handlers/digest.py, handlers/digest_reply.py) ---------------------------------------
DIGEST_USAGE = ("Type `/crm digest daily [HH:MM]`, `/crm digest weekly [weekday] [HH:MM]`, `/crm digest off` "
                "or `/crm digest` to see yours; a time zone may follow, e.g. `/crm digest weekly monday 08:30 Europe/Berlin`.")
DIGEST_BAD_TIME = "“{value}” is not a time of day. Use 24-hour HH:MM, for example 08:30 or 17:00."
DIGEST_BAD_WEEKDAY = "“{value}” is not a weekday.{hint} Use monday … sunday (or mon … sun)."
DIGEST_BAD_ZONE = "“{value}” is not a time zone I know.{hint} Use an IANA name such as Europe/Berlin or America/New_York."
DIGEST_DID_YOU_MEAN = " Did you mean {suggestion}?"
DIGEST_DAILY_WEEKDAY = "A daily digest comes every day, so it takes no weekday. For one day a week, type `/crm digest weekly {weekday}`."
DIGEST_TWICE = "You gave two {what}s ({first} and {second}). Give one."
DIGEST_SUBSCRIBED = "You will get {schedule}. The first one comes {next}."
DIGEST_OFF = "Your digest is off. `/crm digest daily` or `/crm digest weekly` turns it on again."
DIGEST_ALREADY_OFF = "You have no digest to turn off. `/crm digest daily` or `/crm digest weekly` subscribes you."
DIGEST_NONE = "You get no digest. Subscribe with `/crm digest daily 08:00` or `/crm digest weekly monday 08:30`."
DIGEST_SHOW = "You get {schedule}. The next one comes {next}."
DIGEST_LAST_SENT = " The last one covered up to {when}."
DIGEST_DAILY = "a daily digest at {time} ({zone})"
DIGEST_WEEKLY = "a weekly digest on {weekday}s at {time} ({zone})"
DIGEST_ZONE_FROM = {"typed": "", "profile": " — from your chat profile", "crm": " — from the CRM",
                    "default": " — Dealbot's default; add a zone to change it"}
DIGEST_MORE_USAGE = "Which list? Type `/crm digest more <list>` with one of: {names}."
DIGEST_TITLE = "Pipeline digest for {manager}"
DIGEST_SPAN = "What moved in your team's pipeline from {start} to {end}."
DIGEST_EMPTY = "Nothing moved in your team's pipeline from {start} to {end}."
DIGEST_PIPELINE = "Open pipeline"
DIGEST_FIRST = "This is your first digest: changes to the pipeline show from the next one."
DIGEST_STAGE_LINE = "{stage}: {count} deal{s} · {amount} · weighted {weighted}"
DIGEST_SINCE_LAST = "{deals} deals, {amount} since the last digest"
DIGEST_UNCHANGED = "unchanged since the last digest"
DIGEST_TOTAL = "Total ({currency})"
DIGEST_TOTAL_VALUE = "{count} deals · {amount} · weighted {weighted}"
DIGEST_SECTIONS = {
    "won": "Won ({n})", "lost": "Lost ({n})", "moved": "Moved stage ({n})", "amounts": "Amount changes ({n})",
    "slipped": "Close dates slipped ({n})", "decisions": "Decisions and action items ({n})",
    "stale": "Stale: no activity for {days} days ({n})", "closing": "Closing in the next 14 days ({n})",
    "rooms": "New deal rooms ({n})",
}
DIGEST_MORE = "… and {n} more: `/crm digest more {name}`"
DIGEST_DEAL = "{deal} · {account}"
DIGEST_DEAL_DETAIL = "{amount} · {stage} · closes {close} · {owner}"
DIGEST_MOVE = "{old} → {new}"
DIGEST_AMOUNT = "{old} → {new} ({change:+.0f} %)"
DIGEST_SLIP = "{old} → {new} · slipped {times}"
DIGEST_SLIP_TIMES = {1: "once", 2: "twice"}
DIGEST_CAPTURED = "{kind} on {deal}"
DIGEST_CAPTURED_DETAIL = "“{text}” — {author}, {when}"
DIGEST_STALE = "last activity {when}"
DIGEST_STALE_NEVER = "no activity yet"
DIGEST_ROOM = "#{channel} ({platform}) · {deal}"
DIGEST_CHART_TITLE = "Open pipeline by stage"
DIGEST_CHART_ALT = "Bar chart of the open pipeline by stage, now and at the last digest"
DIGEST_MORE_TITLE = "{section}, {start} to {end}"
DIGEST_MORE_EMPTY = "Nothing in “{name}” from {start} to {end}."

# Microsoft Teams
TEAMS_SENT_PRIVATELY = "I sent you the answer in our 1:1 chat: it shows deals that not everyone here may see."
TEAMS_CANNOT_DM = "I could not reach you in a 1:1 chat. Open Dealbot in Teams (Apps → Dealbot → Add) and ask me there."
TEAMS_LOG_TITLE = "Log as decision"
TEAMS_LOG_SUBMIT = "Log decision"
TEAMS_LOG_TEXT = "Decision"
TEAMS_LOG_DEAL = "Deal"
TEAMS_LOG_DEAL_HINT = "#12 or the deal's name"
TEAMS_LOG_DEAL_MISSING = "Say which deal: its number (#12) or its name."
TEAMS_LOG_DEAL_NONE = "No deal you can see matches “{query}”. Type its number, such as #12."
TEAMS_LOG_DEAL_SEVERAL = "Several deals match “{query}”: {deals}. Type the number of the one you mean."
TEAMS_NOT_AUTHORIZED = "Dealbot could not get a token from Microsoft Entra ID, so I could not finish that. Ask your Teams admin to check the bot's app id and secret."
