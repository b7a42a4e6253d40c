"""Decisions and action items in deal-room messages: explicit markers and readable offline rules.

Two entry points:

* `explicit(text)` recognises the markers people type on purpose (``Decision:``, ``decided:``,
  ``#decision``, ``✅ Decision``, ``Action:``, ``#action``). Deterministic: a marked message is
  always captured, unless the marker carries no content ("Decision: TBD").
* `detect(text)` also finds unmarked ones with cue phrases, so it runs on every message. Rules,
  not a model: nothing to download, every hit names the cue that fired, and a wrong answer can be
  traced to one line below.

How `detect` reads a message: only the author's own words count (Slack ``&gt;`` quote lines,
code blocks and ~struck~ text are dropped); Slack markup becomes plain words; the text is split
into sentences and lowercased. A decision cue (an approval in the past tense, "X it is", "we're
going with", a choice the customer made, "locked", "final", ...) counts unless its sentence is a
question, a hedge or a pending state, or a negation / unreal mood stands just before it; a few
phrases ("no decision yet", "nothing's final") veto decisions for the whole message. Without a
decision, an action-item cue (a request, an assignment, a first-person commitment, a to-do, an
imperative with a deadline) makes an action item. Decisions win over action items because a
settled message often ends with its follow-up ("going with 3 years. can you regen the quote?").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["decision", "action_item"]


@dataclass(frozen=True, slots=True)
class Marked:
    """A message with an explicit marker: its kind and its text without the marker."""

    kind: Kind
    text: str


@dataclass(frozen=True, slots=True)
class Detection:
    """What `detect` found: the kind, a confidence in [0, 1] and which cue fired (for people)."""

    kind: Kind
    confidence: float
    reason: str


# --- explicit markers --------------------------------------------------------------------------

# Leading blanks and *bold*/_italic_ openers, an optional check-mark emoji, then the keyword.
# A bare word needs its colon ("Decision making is slow" is no marker); a hashtag must end the
# word and not be asked ("#decisions", "#decision?"); after a check mark the colon is optional.
_MARKER = re.compile(
    r"""^\s*(?P<lead>(?:[*_~]+\s*)*)
    (?P<emoji>(?:✅|✔️?|☑️?|:white_check_mark:|:heavy_check_mark:|:ballot_box_with_check:)\s*(?:[*_~]+\s*)*)?
    (?:\#(?P<tag>decision|action)(?![\w?-])
      |(?P<word>decision|decided|action(?:[ -]items?)?)[*_~]*\s*:
      |(?(emoji)(?P<ticked>decision)\b(?![*_~]*\s*\?)|(?!)))""",
    re.IGNORECASE | re.VERBOSE,
)
# A marker whose content is a placeholder records nothing ("Decision: TBD", "#decision pending").
_PLACEHOLDER = re.compile(r"(?:tbd|tbc|tba|pending|not yet|none yet|nothing yet|no decision yet|n/?a|\?+)(?:\W|$)",
                          re.IGNORECASE)


def explicit(text: str) -> Marked | None:
    """The explicit marker at the start of `text`, if any, with the marker stripped off."""
    m = _MARKER.match(text)
    if m is None:
        return None
    key = (m["tag"] or m["word"] or m["ticked"]).lower()
    kind: Kind = "decision" if key.startswith("deci") else "action_item"
    body = text[m.end():].lstrip(" \t*_~:-—–").strip()
    if "*" in m["lead"] + (m["emoji"] or "") and body.endswith("*") and body.count("*") % 2:
        body = body[:-1].rstrip()  # the closing half of "*Decision: ...*"
    if not body or _PLACEHOLDER.match(body):
        return None
    return Marked(kind, body)


# --- the author's own words, as plain text -----------------------------------------------------

_QUOTE_LINE = re.compile(r"^[ \t]*(?:&gt;|>).*$", re.MULTILINE)  # someone else's words
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)         # pasted data, not speech
_STRUCK = re.compile(r"(?<!\w)~[^~\n]+~(?!\w)")                   # retracted words
_SLACK_LINKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>"), "@user"),
    (re.compile(r"<!subteam\^[A-Z0-9]+\|@?([^>]+)>"), r"@\1"),
    (re.compile(r"<!(?:subteam\^[A-Z0-9]+|here|channel|everyone)(?:\|[^>]*)?>"), "@here"),
    (re.compile(r"<#C[A-Z0-9]+(?:\|([^>]*))?>"), r"#\1"),
    (re.compile(r"<(?:https?://|mailto:)[^|>]*\|([^>]*)>"), r"\1"),
    (re.compile(r"<(?:https?://|mailto:)[^>]*>"), "link"),
)
_EMOJI = re.compile(r":[a-z0-9_+'-]+:")
_FORMAT = re.compile(r"(?<![\w*])[*_`]+|[*_`]+(?![\w*])")  # *bold*, _italic_, `code`, not snake_case
_WITH = re.compile(r"\bw/\s*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+|\s+[—–]+\s+|\s+-{1,2}\s+|\s*;\s*|\s*→\s*")


def own_words(text: str) -> str:
    """The author's text with quotes, code and Slack markup removed (`&amp;` etc. unescaped)."""
    if "gt;" in text or ">" in text:
        text = _QUOTE_LINE.sub("", text)
    if "```" in text:
        text = _CODE_BLOCK.sub(" ", text)
    if "~" in text:
        text = _STRUCK.sub(" ", text)
    if "<" in text:
        for pattern, repl in _SLACK_LINKS:
            text = pattern.sub(repl, text)
    if ":" in text:
        text = _EMOJI.sub(" ", text)
    text = _WITH.sub("with ", _FORMAT.sub("", text))
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    return text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").strip()


def sentences(text: str) -> list[str]:
    """Sentences and list items: the scope of a question mark, a hedge or a conditional."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


# --- cues (matched against lowercased sentences) -------------------------------------------------

Guard = Callable[[str, "re.Match[str]"], bool]


@dataclass(frozen=True, slots=True)
class Cue:
    """One rule family: a pattern, how much a hit says, an optional extra check; `cased` sees capitals,
    `shown_before` is how many words before the match the reason quotes."""

    name: str
    weight: float
    pattern: re.Pattern[str]
    guard: Guard | None = None
    cased: bool = False
    shown_before: int = 0


_rx = re.compile
_INTERJECTION = _rx(r"^(?:ok(?:ay)?|yep|yes|yeah|so|fine|\+1)[\s,.!]*")
_REPLY_AFTER = _rx(r"\s*(?:[,.!—–-]|$|(?:it|that|this|but|100|totally|completely)\b)")
_REPLY_OBJECT = _rx(r"\s*with (?:you|u\b|that|this|what|him|her|@)")
_LOGISTICS = _rx(r"\W+(?:\S+\W+){0,3}?(?:meeting|call|invite|calendar|demo|sync|qbr|zoom|slot|lunch|dinner|agenda)\b")
_IT_IS_STOP = frozenset("what how as that this which whatever where who when why if whether is so and but "
                        "think know say believe because of".split())


def _not_a_reply(s: str, m: re.Match[str]) -> bool:
    """'Agreed, it's a tough one' agrees with a colleague; 'agreed at 2x' / 'agreed internally:' settles."""
    after = s[m.end():]
    if _REPLY_OBJECT.match(after):
        return False
    return bool(_INTERJECTION.sub("", s[:m.start()].strip())) or not _REPLY_AFTER.match(after)


def _not_logistics(s: str, m: re.Match[str]) -> bool:
    """'Confirmed the meeting for Tuesday', 'we're moving the QBR' arrange a calendar, not a deal."""
    return not _LOGISTICS.match(s, m.end())


_DETERMINER = frozenset("the a an our their this that its his her your my".split())


def _not_an_adjective(s: str, m: re.Match[str]) -> bool:
    """'the approved vendor list' describes a thing; 'legal approved the DPA' reports an approval."""
    before = s[:m.start()].split()
    return not before or before[-1] not in _DETERMINER


def _reports_approval(s: str, m: re.Match[str]) -> bool:
    """An approval of a deal term: not an adjective and not a calendar invite."""
    return _not_an_adjective(s, m) and _not_logistics(s, m)


def _x_it_is(s: str, m: re.Match[str]) -> bool:
    """'net 60 it is' settles; 'it is what it is', 'that's how it is' do not."""
    before = s[:m.start()].split()
    return bool(before) and before[-1].strip(",") not in _IT_IS_STOP


DECISION_CUES: tuple[Cue, ...] = (
    Cue("approval", 0.85, _rx(
        r"\b(?:approved|signed[ -]off|sign-?off from|ok'?d|okay(?:e|')d|green-?lit|rubber-stamped|accepted|conceded"
        r"|gave (?:us |it |them )?the (?:green light|go-?ahead|ok|okay|thumbs up)|verbal yes|said (?:yes|no)\b"
        r"|(?:has|have|had|was|were|got|is|just) (?:been )?(?:signed|countersigned)\b|voted\b"
        r"|(?:counter-?)?signed (?:the|our|their) (?:msa|contract|agreement|order form|sow|dpa|nda|paper|quote|renewal)"
        r")"), _reports_approval),
    Cue("approval (non-English)", 0.8, _rx(
        r"\b(?:freigegeben|genehmigt|zugestimmt|validée?|approuvée?|aprobad[oa]|aprob[óo]|visto bueno"
        r"|godkän[dt]|låst|goedgekeurd|approvat[oa]|acordad[oa])\b")),
    Cue("agreement", 0.8, _rx(r"\bagreed\b(?! to disagree)"), _not_a_reply),
    Cue("decided", 0.85, _rx(r"\b(?:decided|made the call|made a call|the call is made)\b")),
    Cue("choice made", 0.8, _rx(
        r"\b(?:chose|chosen|picked(?! (?:it )?up\b)|selected|opted (?:for|out|in|to)|went with|go(?:ing)? with"
        r"|go(?:ing)? ahead with|settled on|landed (?:on|at)|reverting to|switching to|sticking with)\b")),
    Cue("plan stated as fact", 0.75, _rx(
        r"\b(?:we|they)(?:'re| are| r)\s+(?:not\s+|now\s+|officially\s+|definitely\s+)?"
        r"(?:keeping (?!(?:an? |their |our |my |your )?(?:eye|options|quiet|in touch|in mind))|dropping"
        r"|giving (?!away|up|it\b)|committing|moving (?:the|to|forward|ahead)\b|letting|including|matching|selecting"
        r"|choosing|no-?bidding|holding (?:at|firm|the)\b|extending|waiving|(?<=not )doing|a go\b|all set|good to go)"
        r"|\b(?:we|they)(?:'ll| will)\s+(?:not\s+)?(?:include|keep|stick with|honou?r|waive|cover|pay)\b"),
        _not_logistics),
    Cue("'X it is'", 0.85, _rx(r"\bit is\b(?=\s*(?:[.!,)]|then\b|$))"), _x_it_is, shown_before=2),
    Cue("settled/final", 0.85, _rx(
        r"\b(?:(?:that's|it's|that is|it is|is) settled|settled then"
        r"|(?:is|are|'s|was) final\b(?=\s*(?:[.!,:;)]|$|now\b|then\b))"
        r"|^(?:ok(?:ay)?|so|alright)?[\s,]*final\b[^.!?]{0,40}:"
        r"|final (?:answer|call|word)\b|done deal|end of story|full stop|^period\b|where we land(?:ed)?\b"
        r"|that's the plan|hold the line|locked\b|locking (?:it|that|this) in|it's a go\b|stays at|remains at)")),
    Cue("acceptance", 0.7, _rx(r"\b(?:is|are|'re|'s)\s+(?:fine|ok|okay|good|happy)\s+with\b|\bfine by (?:us|me)\b")),
    Cue("confirmed", 0.75, _rx(r"\bconfirmed\b"), _not_logistics),
)

# A whole-message veto: the author says it is not settled.
NOT_SETTLED = _rx(
    r"\b(?:no decision|not a decision|not (?:yet )?(?:decided|final|agreed|settled)|undecided|nothing'?s final"
    r"|nothing (?:is |has been )?(?:agreed|final|decided|settled|locked|signed)|tb[dc]\b|not a plan\b"
    r"|not proposing|yet to (?:be )?(?:decide|agree|approve|sign))")
# A sentence-level veto: hedges, proposals, pending states, conditions on someone's approval.
HEDGED = _rx(
    r"\b(?:lean(?:ing)? (?:to|toward|towards)|leaning|thinking (?:about|of)|think about|probably|likely|almost"
    r"|might|maybe|perhaps|possibly|hopefully|sounds like|looks like|seems like|i think|i guess|not sure"
    r"|not counting|propos(?:al|e|ing)|suggest|spitball|hypothetical|what if|rough idea|tentative|sleep on it"
    r"|in principle|assuming|expected to|open to pushback|pending|waiting (?:on|for)|not yet|still (?:need|needs"
    r"|waiting|evaluating|deciding|reviewing|discussing|model(?:l)?ing|split|open|working)|no \w+(?: \w+)? yet\b"
    r"|until (?:we|they|i|he|she|after|the \w+ \w+s)\b|last (?:year|quarter|month|time)|in the past|previously"
    r"|before committing|not a fan|i'd rather|noch nicht|pas encore|todav[íi]a no|a[úu]n no|inte än)"
    r"|\b(?:if|unless|provided|once|assuming|subject to)\b[^.?!]{0,40}\b(?:approves?|agrees?|signs? off|accepts?"
    r"|ok'?s|okays|confirms?|says yes)\b")
# The three words before a cue: a negation or an unreal mood ("hasn't approved", "if legal approves").
_NEGATED = _rx(r"\b(?:not|never|no(?!\s+(?:worries|problem|probs?|doubt|rush|biggie)\b)|nothing|nobody|none"
               r"|neither|nor|nicht|pas|inte|niet)\b|n't\b")
_UNREAL = _rx(r"\b(?:if|unless|once|until|when|whether|be|get|gets|getting|would|could|should|might|may|can|must"
              r"|need|needs|want|wants|hope|hoping|try|trying)\b|'d\b")

ACTION_VERBS = (
    r"(?:send|share|draft|write|prep|prepare|schedule|book|set up|setup|update|review|check|double-check|confirm"
    r"|follow up|chase|ping|email|call|loop in|reach out|attach|upload|file|submit|pull|reconcile|fix|build|finish"
    r"|model|get|find|look into|dig|own|handle|take|translate|add|create|spin up|put together|sort out|circulate"
    r"|forward|collect|ask|invite|run|sync|compile|verify|clean up|bring|provide|deliver|escalate|regen|arrange"
    r"|organi[sz]e|coordinate|walk|present|document|complete|respond|reply|answer|resend|nudge|remind|mark)")
_DEADLINE = (
    r"(?:\b(?:by|before|until|no later than)\s+"
    r"(?:(?:mon|tue|tues|wed|wednes|thu|thur|thurs|fri|sat|satur|sun)(?:day)?\b"
    r"|eod|eow|cob|eom|end of (?:the )?(?:day|week|month)|tomorrow|tmrw|tonight|noon|lunch|the \d|\d|next|this)"
    r"|\b(?:eod|eow|asap|today|tonight|tomorrow|tmrw|within (?:the |an? |\d+ )\w+))")
_NOT_A_NAME = ("Happy|Need|Want|Going|Time|Nice|Hard|Ready|Easy|How|What|Where|Back|Up|Due|Glad|Hoping|Hope|Remember"
               "|Forgot|Wanted|Trying|Plan|Only|Also|Just|Next|Then|Have|Try|Able|Used|Got|Reminder|Note")

ACTION_CUES: tuple[Cue, ...] = (
    Cue("request", 0.85, _rx(
        r"\b(?:can|could|would|will)\s+(?:you|u|someone|somebody|anyone|one of you|y'all)\b"
        r"(?!\s+(?:believe|imagine|tell|see|hear|think|guess|be (?:ok|okay|fine|open|happy|comfortable)))")),
    Cue("please", 0.8, _rx(r"\b(?:pls|plz|please|plse)\b(?!\s+(?:note|see|find|be aware|ignore|no more))")),
    Cue("owner needed", 0.8, _rx(
        r"\b(?:need|needs|needed)\s+(?:someone|somebody|a volunteer|an owner|@[\w.-]+|you)\s+to\b"
        r"|\bsomeone (?:needs|has|should|must) to\b|\bneed\b[^.?!]{0,60}" + _DEADLINE)),
    # "Marta to send ...", "@ana will book ...", "CS to schedule ..." at the start of a line or clause.
    Cue("assignment", 0.8, _rx(
        r"(?:^[-•*\s]*|[:;,•(]\s*|\d[.)]\s*)(?:@[\w.-]+|(?!(?:" + _NOT_A_NAME + r")\b)[A-Z][a-z]+|[A-Z]{2,4})"
        r"\s+(?:to|will|is going to)\s+" + ACTION_VERBS + r"\b"
        r"|(?i:\bthat's you\b|\byou're up\b|\bover to you\b|\bassigned to\b|\bowner:)"), cased=True),
    Cue("commitment", 0.8, _rx(
        r"\b(?:i'll|i will|i'm going to|i am going to|i'm gonna|gonna|i can take|i owe)\b"
        r"(?!\s+(?:be|have|need|think|bet|admit|say|assume|believe|guess|wait|probably|maybe|never|pass|hold off|if)\b)"
        r"|(?:^|[,:;.!]\s*|i'm |i am )(?:on it|will do|taking this|i've got this|i got this|leave it with me)\b"
        r"|\b(?:i'm|i am) (?:on the hook|handling|taking care of|drafting|prepping|putting together|working on)\b"
        r"|(?:^|[,:;.!]\s*)will (?!(?:you|they|we|he|she|it|that|this|there|the|be)\b)[a-z]+"
        r"|\b(?:taking|took) the action\b|\baction (?:for|on) me\b|\bcoming your way\b|\binvite coming\b"
        r"|\b(?:le|te|les) (?:mando|env[íi]o|paso|escribo|llamo)\b|\bje (?:vais|m'en occupe|t'envoie)\b"
        r"|\bich (?:schicke|sende|kümmere)\b")),
    Cue("task in passive voice", 0.7, _rx(
        r"\bneeds? to be (?:sent|signed|filed|submitted|updated|uploaded|fixed|reviewed|done|scheduled|booked"
        r"|added|attached|shared|completed|translated|countersigned|returned)\b|^@[\w.-]+\s+reminder\b")),
    Cue("to-do", 0.9, _rx(
        r"\b(?:todo|to-do|(?:note|reminder) to self)\b|\baction items?\b|(?:^|\s)ai:|\bnext steps?:|\bfollow-?ups?:")),
    Cue("task with deadline", 0.7, _rx(
        r"(?:(?:^|[:;,•*(]\s*|\d[.)]\s*)|\blet's\s+)" + ACTION_VERBS + r"\b[^.?!]*" + _DEADLINE
        + r"|" + _DEADLINE + r"[^.?!]*:\s*(?:\(?\d[.)]\s*)?" + ACTION_VERBS + r"\b")),
    Cue("working on it", 0.7, _rx(
        r"(?:^|[,:;.!]\s*)(?:setting up|sending|drafting|building|prepping|booking|scheduling|writing|reaching out"
        r"|pulling|working on)\b")),
)

Hit = tuple[Cue, str]


def _decision_hits(s: str) -> list[Hit]:
    """Decision cues that count in one lowercased sentence (none in a question or a hedged one)."""
    hits: list[Hit] = []
    for cue in DECISION_CUES:
        for m in cue.pattern.finditer(s):
            before = s[:m.start()].split()[-3:]
            window = " ".join(before)
            if _NEGATED.search(window) or _UNREAL.search(window):
                continue
            if cue.guard is None or cue.guard(s, m):
                hits.append((cue, " ".join(before[len(before) - cue.shown_before:] + [m[0]])))
                break
    if hits and (s.rstrip(" .!)\"'").endswith("?") or HEDGED.search(s)):
        return []  # checked last: most sentences have no cue at all
    return hits


def _action_hits(s: str, low: str) -> list[Hit]:
    """Action-item cues in one sentence; a question is fine here ("can you send ...?")."""
    hits: list[Hit] = []
    for cue in ACTION_CUES:
        text = s if cue.cased else low
        m = cue.pattern.search(text)
        if m is not None and (cue.guard is None or cue.guard(text, m)):
            hits.append((cue, m[0]))
    return hits


def _detection(kind: Kind, hits: list[Hit]) -> Detection:
    """The strongest cue's weight, a little more for each further cue that agrees; the cues as reason."""
    confidence = min(0.99, max(cue.weight for cue, _ in hits) + 0.05 * (len(hits) - 1))
    reason = "; ".join(f"{cue.name}: '{text.strip(' ,:;.!-')}'" for cue, text in hits)
    return Detection(kind, round(confidence, 2), reason)


def detect(text: str) -> Detection | None:
    """A decision or action item in one chat message, or None; explicit markers first."""
    marked = explicit(text)
    if marked is not None:
        return Detection(marked.kind, 1.0, "explicit marker")
    parts = sentences(own_words(text))
    lows = [s.lower() for s in parts]
    hits = [h for low in lows for h in _decision_hits(low)]
    if hits and not NOT_SETTLED.search("\n".join(lows)):
        return _detection("decision", hits)
    hits = [h for s, low in zip(parts, lows) for h in _action_hits(s, low)]
    return _detection("action_item", hits) if hits else None
