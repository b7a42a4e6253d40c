"""The decision / action-item detector: explicit markers, a regression floor on the labelled dev set
(``../shared/data/decisions_dev.jsonl``), the issue's examples, and fresh sentences written for
this suite (none taken from the dev file) so the rules are checked on text they were not tuned on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transcripts.detect import Detection, Kind, Marked, detect, explicit

# A copy of ../shared/data/decisions_dev.jsonl, kept in the repository so a clean clone tests it.
DEV_FILE = Path(__file__).resolve().parent / "fixtures" / "labelled" / "decisions_dev.jsonl"


def kind_of(text: str) -> str:
    found = detect(text)
    return found.kind if found is not None else "none"


# --- regression floor on the dev set ------------------------------------------------------------

def precision_recall(rows: list[dict[str, str]], label: str) -> tuple[float, float]:
    predicted = [kind_of(row["text"]) for row in rows]
    hits = sum(1 for row, p in zip(rows, predicted) if p == label and row["label"] == label)
    said = sum(1 for p in predicted if p == label)
    truth = sum(1 for row in rows if row["label"] == label)
    return (hits / said if said else 0.0), (hits / truth if truth else 0.0)


@pytest.fixture(scope="module")
def dev_rows() -> list[dict[str, str]]:
    rows = [json.loads(line) for line in DEV_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert rows and {row["label"] for row in rows} <= {"decision", "action_item", "none"}
    return rows


def test_decision_precision_and_recall_stay_above_the_floor(dev_rows: list[dict[str, str]]) -> None:
    precision, recall = precision_recall(dev_rows, "decision")
    assert precision >= 0.85, f"decision precision {precision:.3f} < 0.85"
    assert recall >= 0.75, f"decision recall {recall:.3f} < 0.75"


def test_action_item_precision_and_recall_stay_above_the_floor(dev_rows: list[dict[str, str]]) -> None:
    precision, recall = precision_recall(dev_rows, "action_item")
    assert precision >= 0.8, f"action-item precision {precision:.3f} < 0.8"
    assert recall >= 0.7, f"action-item recall {recall:.3f} < 0.7"


def test_every_detection_has_a_confidence_and_a_reason(dev_rows: list[dict[str, str]]) -> None:
    for row in dev_rows:
        found = detect(row["text"])
        if found is not None:
            assert isinstance(found, Detection)
            assert 0.0 <= found.confidence <= 1.0
            assert found.reason


# --- the issue's examples -----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("3-year term it is", "decision"),
    ("Legal signed off on the DPA", "decision"),
    ("their CFO approved the budget", "decision"),
    ("should we go with 3 years?", "none"),
    ("if procurement approves we'd go annual", "none"),
    ("no decision yet", "none"),
])
def test_the_issue_examples(text: str, expected: str) -> None:
    assert kind_of(text) == expected


# --- fresh sanity sentences (not from the dev file) ---------------------------------------------

FRESH_DECISIONS = [
    "Procurement signed off on the 2-year term this morning.",
    "ok, monthly billing it is",
    "We're going with the Frankfurt region for hosting.",
    "Their GC accepted our liability language, no more redlines.",
    "Legal approved SOW v3 :tada:",
    "Finance greenlit the extra 5% discount for Acme.",
    "The customer picked the Premium bundle over Standard.",
    "Price is locked at $72/seat for 3 years.",
    "we've decided to drop the pilot and go straight to contract",
    "So that's settled: kickoff on May 4.",
    "ok agreed with their procurement: net 45, invoiced annually",
    "<@U0ABCDEF12> ok'd the 18%, sending the quote now",
    "They went with the 250-seat tier in the end",
    "we're not offering a pilot. straight to a paid contract, end of story",
    "VP sales gave us the green light on the non-standard payment terms",
    "Quarterly invoicing it is then",
    "Update: Globex chose us over Workday :tada:",
    "Kickoff date is final: June 3.",
    "Their legal team finally countersigned the MSA :tada:",
    "CFO said yes to the multi-year deal",
    "they agreed to a 3-year term with annual payments",
    "no worries, legal approved it this morning",
]

FRESH_NONE = [
    # questions
    "should we lock the price for 3 years?",
    "has legal approved the DPA?",
    "is the 20% approved or not?",
    "Did we ever agree on the uplift?",
    # conditionals
    "if legal signs off we'd start the pilot in June",
    "if they agree to 3 years we could drop the setup fee",
    "we are going with 3 years if finance agrees",
    "If they sign this week we could honor the old pricing",
    # hedges, proposals, pending
    "leaning toward the Frankfurt region but not sure yet",
    "thinking about offering a 2-year term instead",
    "proposal: 10% off if they sign by the 30th",
    "I'd probably go with the annual plan, but your call",
    "waiting for their CFO to approve the budget",
    "their legal hasn't signed off yet",
    "we have not agreed on payment terms",
    "They seem to like option B but nothing's signed",
    "the DPA still needs approval from their privacy office",
    # quoted text: someone else's words
    "&gt; ok, annual billing it is\nhmm, let me check with finance first",
    "&gt; their CFO approved the budget\nsource?",
    # chatter that looks like a cue
    "Agreed. This one is going to be tough.",
    "Thanks Sam, agreed with your read on the champion",
    "Confirmed the meeting for Tuesday at 3",
    "the approved vendor list on their side has 3 names",
    "they picked up the phone finally",
    "it is what it is",
    "Please see the attached deck",
    "Decision making on their side is slow",
    "the demo went well, lots of questions about SSO",
    "FYI their champion is out until Monday",
    "we're moving fast on this one",
    "they're keeping their options open",
    "we're holding off until the board meeting",
    "we're giving it one more week before escalating",
    "they approved a similar deal with Salesforce last year",
    "Their CFO agreed that the ROI case is strong, but no budget yet",
    "The order form is final v12 in the folder",
    "Status stays at Negotiation until the PO lands",
    "I will if you want me to",
]

FRESH_ACTIONS = [
    "<@U0123ABCD> can you send the revised order form to Priya today?",
    "pls update the close date in the CRM",
    "I'll draft the security questionnaire answers by Thursday",
    "<@U0123ABCD> to book the onsite with their IT team",
    "could someone check whether we support SAML with Okta?",
    "need the signed NDA back by EOD tomorrow, <@U0999XYZ> can you chase?",
    "I'm going to loop in our solutions engineer for the API questions",
    "will send the recap to their champion tonight",
    "Priya to share the reference list by Wednesday",
    "follow up with their IT lead about SSO by Friday",
    "Can someone own the mutual action plan for this one?",
    "Someone please update the next steps field in SFDC",
    "I'm on the hook for the ROI model, should have it by Wednesday",
    "Reminder to self: send the W-9 to their AP team",
    "let's send the business case to their CFO by Friday",
]


@pytest.mark.parametrize("text", FRESH_DECISIONS)
def test_fresh_decisions(text: str) -> None:
    assert kind_of(text) == "decision", detect(text)


@pytest.mark.parametrize("text", FRESH_NONE)
def test_fresh_non_decisions(text: str) -> None:
    assert kind_of(text) == "none", detect(text)


@pytest.mark.parametrize("text", FRESH_ACTIONS)
def test_fresh_action_items(text: str) -> None:
    assert kind_of(text) == "action_item", detect(text)


def test_a_decision_wins_over_its_follow_up_request() -> None:
    found = detect("ok, going with the 2-year term. <@U0123ABCD> can you update the quote?")
    assert found is not None and found.kind == "decision"
    assert "going with" in found.reason


def test_the_reason_names_the_cue() -> None:
    found = detect("fine, annual billing it is")
    assert found is not None and found.reason == "'X it is': 'annual billing it is'"
    assert 0.5 <= found.confidence <= 1.0


# --- explicit markers ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, body", [
    ("Decision: 3-year term", "decision", "3-year term"),
    ("decision:3-year term", "decision", "3-year term"),
    ("DECISION : net 60", "decision", "net 60"),
    ("decided: go annual", "decision", "go annual"),
    ("DECIDED: we're no-bidding the RFP", "decision", "we're no-bidding the RFP"),
    ("#decision no paid pilot", "decision", "no paid pilot"),
    ("#Decision: annual billing", "decision", "annual billing"),
    ("✅ Decision: net 60", "decision", "net 60"),
    ("✅ decision net 60", "decision", "net 60"),
    (":white_check_mark: Decision: EU hosting", "decision", "EU hosting"),
    (":white_check_mark: *Decision* EU hosting", "decision", "EU hosting"),
    ("   *Decision:* 18% off platform", "decision", "18% off platform"),
    ("*Decision*: 18% off platform", "decision", "18% off platform"),
    ("*Decision: 18% off platform*", "decision", "18% off platform"),
    ("_decided:_ go annual", "decision", "go annual"),
    ("\n  Decision: multi-line\nsecond line", "decision", "multi-line\nsecond line"),
    ("Action: Marta to send MAP v2", "action_item", "Marta to send MAP v2"),
    ("action: chase the PO", "action_item", "chase the PO"),
    ("#action send the W-9", "action_item", "send the W-9"),
    ("#ACTION: send the W-9", "action_item", "send the W-9"),
    ("*Action:* book the onsite", "action_item", "book the onsite"),
    ("Action items: send deck, book onsite", "action_item", "send deck, book onsite"),
])
def test_explicit_markers(text: str, kind: Kind, body: str) -> None:
    assert explicit(text) == Marked(kind, body)
    found = detect(text)
    assert found is not None and found.kind == kind and found.confidence == 1.0


@pytest.mark.parametrize("text", [
    "decisions are hard",
    "Decision making is slow",
    "the action plan",
    "Action plan for Q3: more demos",
    "Actionable: nothing",
    "#decisions are logged in the channel topic",
    "#decision? not yet, still need Sunita's sign-off",
    "#actionable",
    "DECIDED?? lol no",
    "Decision: TBD. Their committee meets on the 14th.",
    "Decision:",
    "#decision pending",
    "we made a decision: 3 years",
    "&gt; Decision: 3 years",
    "> Decision: 3 years",
    "re: Decision: 3 years",
])
def test_non_markers(text: str) -> None:
    assert explicit(text) is None


def test_quoted_markers_are_not_the_authors_decision() -> None:
    assert detect("&gt; Decision: 3 years\nnice, thanks") is None
