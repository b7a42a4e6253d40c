"""Full-text search over timeline entries and deal-room transcripts, visibility enforced in SQL.

One function, `search`, on both databases (migration 0004 builds the indexes):

- SQLite: FTS5 tables over the text with the deal, its owner, the owner's manager and the deal
  team as extra indexed columns, kept in sync by triggers; ranked with ``bm25``. A person who
  does not see most deals is searched inside the index (``owner : "7" OR team : (…) OR members :
  "7"``), so a common word costs what their own matches cost, not what everybody's do.
- PostgreSQL: a generated ``tsvector`` column with a GIN index; ranked with ``ts_rank_cd``.

Either way every hit is read with `opportunity_visible` in SQL before it is shown, deleted and
purged messages and retracted entries never match, and the words a person typed are never
handed to the query syntax: they are split into plain words (letters and digits), common
English words (PostgreSQL's stop words) are left out, and each word is quoted.

Ranking: hits with all the words come before hits with only some (two tiers); within a tier by
relevance, with decisions, action items and notes boosted over plain conversation. Each source
ranks its newest `CANDIDATES` matches (the index yields them newest first, so nothing is sorted
to find them): a rare query is ranked whole, a very common one among its recent matches, which
keeps every search fast.
"""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
import unicodedata
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    bindparam,
    case,
    column,
    exists,
    func,
    literal,
    literal_column,
    select,
    table,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.actors import Actor
from crm_store.models import Opportunity, TimelineEntry, TranscriptMessage, User
from crm_store.store import Store
from crm_store.visibility import opportunity_visible, reporting_tree

MAX_INPUT_CHARS = 1000  # longer input is cut (the command refuses more than 200 characters)
MAX_TERMS = 8
MAX_TERM_CHARS = 64
PREFIX_MIN_CHARS = 3  # the last word also matches as a prefix ("secur" finds "security")
CANDIDATES = {2: 1000, 1: 300}  # per source, by tier: how many of the newest visible matches are ranked
PREFILTER_MAX_MANAGERS = 16  # more managers in one's tree: every match is checked in SQL instead
SNIPPET_TOKENS = 16
TOKENIZE = "porter unicode61 remove_diacritics 2"  # as in migration 0004
MARK = "*"
BOOSTS = {"decision": 2.0, "action_item": 1.75, "note": 1.25}

# PostgreSQL's English stop words (tsearch_data/english.stop): the same words are left out on
# both databases, so a search means the same everywhere.
STOPWORDS = frozenset("""
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom this that
    these those am is are was were be been being have has had having do does did doing a an the
    and but if or because as until while of at by for with about against between into through
    during before after above below to from up down in out on off over under again further then
    once here there when where why how all any both each few more most other some such no nor not
    only own same so than too very s t can will just don should now
""".split())

_WORD = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s+")

SourceName = Literal["message", "entry"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result. `snippet` is plain text with the matched words marked ``*like this*``."""

    source: SourceName
    id: int
    kind: str  # the entry's kind, or "message"
    opportunity_id: int
    opportunity: str
    snippet: str
    author: str | None
    at: datetime
    permalink: str | None
    score: float


def terms(words: str) -> list[str]:
    """The words of `words` that are searched for: lower-case letters and digits, no stop words,
    each once, at most `MAX_TERMS`."""
    text = unicodedata.normalize("NFKC", words[:MAX_INPUT_CHARS]).casefold()
    found: list[str] = []
    for word in _WORD.findall(text):
        if word in STOPWORDS or len(word) > MAX_TERM_CHARS or word in found:
            continue
        found.append(word)
        if len(found) == MAX_TERMS:
            break
    return found


# -- the schema objects the models do not know ---------------------------------------------------

SOURCE_TABLES = ("transcript_messages", "timeline_entries")
_FTS_TABLES = frozenset(f"{t}_fts{shadow}" for t in SOURCE_TABLES
                        for shadow in ("", "_data", "_idx", "_docsize", "_config"))
_SEARCH_INDEXES = frozenset(f"ix_{t}_search_vector" for t in SOURCE_TABLES)


def is_search_object(name: str | None, type_: str, reflected: bool, table: str | None = None) -> bool:
    """True for what migration 0004 adds outside the models: SQLite's FTS5 tables (and their
    shadow tables), PostgreSQL's generated ``search_vector`` columns and their GIN indexes. The
    views and triggers are never compared."""
    if not reflected:
        return False
    if type_ == "table":
        return name in _FTS_TABLES
    if type_ == "column":
        return name == "search_vector" and table in SOURCE_TABLES
    if type_ == "index":
        return name in _SEARCH_INDEXES
    return False


# -- the two sources -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Source:
    name: SourceName
    model: Any  # TranscriptMessage or TimelineEntry
    table: str

    @property
    def fts(self) -> str:
        return f"{self.table}_fts"

    def searchable(self) -> ColumnElement[bool]:
        if self.model is TranscriptMessage:
            return TranscriptMessage.deleted_at.is_(None) & TranscriptMessage.purged_at.is_(None)
        return TimelineEntry.retracted_at.is_(None)

    def boost(self) -> ColumnElement[Any]:
        if self.model is TranscriptMessage:
            return literal(1.0, Float)
        return case(*((TimelineEntry.kind == kind, literal(b, Float)) for kind, b in BOOSTS.items()),
                    else_=literal(1.0, Float))

    def time(self) -> Any:
        return TranscriptMessage.posted_at if self.model is TranscriptMessage else TimelineEntry.occurred_at

    def kind(self) -> Any:
        return literal("message", String) if self.model is TranscriptMessage else TimelineEntry.kind


SOURCES = (_Source("message", TranscriptMessage, "transcript_messages"),
           _Source("entry", TimelineEntry, "timeline_entries"))


@dataclass(frozen=True, slots=True)
class _Candidate:
    source: _Source
    id: int
    tier: int  # 2: every word, 1: some
    score: float  # higher is better


@dataclass(frozen=True, slots=True)
class _Row:
    candidate: _Candidate
    kind: str
    opportunity_id: int
    opportunity: str
    author: str | None
    at: datetime
    permalink: str | None
    text: str


# -- the function ---------------------------------------------------------------------------------

async def search(store: Store, actor: Actor, words: str, *, opportunity_id: int | None = None,
                 limit: int = 10) -> list[Hit]:
    """The best `limit` hits for `words` in what `actor` may see (in one deal, if given), best
    first. Empty when there is nothing to search for or nothing matches."""
    found = terms(words)
    if not found or not actor.is_mapped:
        return []
    limit = max(1, min(limit, 100))
    async with store.session() as s:
        query = (_SQLite if store.dialect == "sqlite" else _Postgres)(s, actor, found, opportunity_id)
        await query.prepare()
        candidates: list[_Candidate] = []
        for tier in (2, 1) if len(found) > 1 else (2,):
            if len(candidates) < limit:
                candidates += await query.rank(tier, {(c.source.name, c.id) for c in candidates}, limit)
        rows = await query.details(candidates)
        rows.sort(key=lambda r: (r.candidate.tier, r.candidate.score, r.at, r.candidate.id), reverse=True)
        rows = rows[:limit]
        snippets = await query.snippets(rows)
    return [Hit(source=r.candidate.source.name, id=r.candidate.id, kind=r.kind, opportunity_id=r.opportunity_id,
                opportunity=r.opportunity, snippet=_tidy(snippets.get(r.candidate) or r.text), author=r.author,
                at=r.at, permalink=r.permalink, score=r.candidate.score) for r in rows]


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _tidy(snippet: str) -> str:
    return _SPACE.sub(" ", snippet).strip()


class _Query(ABC):
    """One search on one database (each dialect fills in the three abstract parts). `tier` 2 wants every word, 1 any of them."""

    def __init__(self, s: AsyncSession, actor: Actor, words: list[str], opportunity_id: int | None) -> None:
        self.s = s
        self.actor = actor
        self.words = words
        self.opportunity_id = opportunity_id
        self.visible = opportunity_visible(actor)  # built once, used by every statement
        self.prefix = False  # whether the last word is also matched as the start of a word

    async def prepare(self) -> None:
        """The last word is searched as a prefix too when it is long enough and, as it stands, no
        indexed word ("secur…" for "security"): a complete word finds its other forms by stemming
        already, and the prefix of a common word costs a merge of many index entries."""
        last = self.words[-1]
        self.prefix = len(last) >= PREFIX_MIN_CHARS and not await self.known(last)

    @abstractmethod
    async def known(self, word: str) -> bool:
        """Whether `word` is an indexed word as it stands."""

    @abstractmethod
    def window(self, source: _Source, tier: int, seen: set[int]) -> Select[Any]:
        """(id, score) of the newest `CANDIDATES[tier]` matches of `source`, `seen` left out."""

    @abstractmethod
    async def snippets(self, rows: list[_Row]) -> dict[_Candidate, str]:
        """The rows' texts cut around the words, which are marked."""

    def row_visible(self, source: _Source) -> ColumnElement[bool]:
        """The row's deal is one the actor may see (a correlated EXISTS, so that the full-text
        index stays the driving loop of the query)."""
        if self.actor.is_admin:
            return literal(True)
        return exists().where(Opportunity.id == source.model.opportunity_id, self.visible)

    async def rank(self, tier: int, seen: set[tuple[str, int]], limit: int) -> list[_Candidate]:
        """The best `limit` of each source's window, in one statement; `seen` (source, id) left out."""
        parts = []
        for number, source in enumerate(SOURCES):
            window = self.window(source, tier, {i for name, i in seen if name == source.name}).subquery()
            best = (select(literal(number).label("source"), window.c.id, window.c.score)
                    .order_by(window.c.score.desc(), window.c.id.desc()).limit(limit).subquery())
            parts.append(select(best))
        found = (await self.s.execute(union_all(*parts))).all()
        return [_Candidate(SOURCES[number], int(i), tier, float(score)) for number, i, score in found]

    async def details(self, candidates: list[_Candidate]) -> list[_Row]:
        """What the hits show, read again with the visibility predicate, in one statement."""
        parts = []
        for number, source in enumerate(SOURCES):
            model = source.model
            ids = [c.id for c in candidates if c.source is source]
            if not ids:
                continue
            part = (
                select(literal(number).label("source"), model.id, source.kind().label("kind"),
                       model.opportunity_id, Opportunity.name.label("deal"), User.name.label("author"),
                       source.time().label("at"), model.permalink, model.text)
                .join(Opportunity, Opportunity.id == model.opportunity_id)
                .outerjoin(User, User.id == model.author_id)
                .where(model.id.in_(ids), source.searchable(), self.visible)
            )
            if self.opportunity_id is not None:
                part = part.where(model.opportunity_id == self.opportunity_id)
            parts.append(part)
        if not parts:
            return []
        by_key = {(c.source.name, c.id): c for c in candidates}
        found = (await self.s.execute(union_all(*parts) if len(parts) > 1 else parts[0])).all()
        return [_Row(by_key[(SOURCES[number].name, i)], kind, opp_id, deal, author, at, permalink, text or "")
                for number, i, kind, opp_id, deal, author, at, permalink, text in found]


def _match(fts: str) -> Any:
    return literal_column(fts).op("MATCH")


class _SQLite(_Query):
    scope: str | None = None

    async def prepare(self) -> None:
        self.scope = await self._scope()
        await super().prepare()

    async def _scope(self) -> str | None:
        """An FTS5 filter on the indexed owner, owner's-manager and deal-team columns that keeps
        to the deals the actor may see: their own, those owned by anyone whose manager is in
        their reporting tree, those whose team they are on (or to the one deal asked for). None
        for a person with many managers below them, who sees most deals anyway. It only narrows
        the search: `details` reads every hit again with the visibility predicate."""
        if self.opportunity_id is not None:
            return f'deal : "{int(self.opportunity_id)}"'
        user_id = self.actor.user_id
        if self.actor.is_admin or user_id is None:
            return None
        managed = [int(m) for m in (await self.s.execute(
            select(User.manager_id).where(User.manager_id.in_(reporting_tree(user_id)))
            .group_by(User.manager_id).limit(PREFILTER_MAX_MANAGERS + 1))).scalars() if m is not None]
        if len(managed) > PREFILTER_MAX_MANAGERS:
            return None
        me = _quote(str(user_id))
        team = f" OR team : ({' OR '.join(_quote(str(m)) for m in managed)})" if managed else ""
        return f"owner : {me}{team} OR members : {me}"

    def words_match(self, tier: int) -> str:
        last = len(self.words) - 1
        quoted = [_quote(w) + (" *" if i == last and self.prefix else "") for i, w in enumerate(self.words)]
        return f"text : ({(' AND ' if tier == 2 else ' OR ').join(quoted)})"

    async def known(self, word: str) -> bool:
        checks = [exists(select(literal(1)).select_from(table(src.fts)).where(_match(src.fts)(f"text : {_quote(word)}")))
                  for src in SOURCES]
        return bool((await self.s.execute(select(checks[0] | checks[1]))).scalar())

    def window(self, source: _Source, tier: int, seen: set[int]) -> Select[Any]:
        """The index runs newest first (rowid order, no sorting) and stops after the window.
        Within a scope (and for an admin) the index alone decides what matches: it holds no
        words of deleted, purged or retracted rows, and the scope keeps to visible deals.
        Without a scope every match is checked against its row here."""
        model = source.model
        found = table(source.fts, column("rowid"))
        words = self.words_match(tier)
        # bm25 is lower for better matches; only the text column counts.
        score = (-func.bm25(literal_column(source.fts), 1.0, 0.0, 0.0, 0.0, 0.0) * source.boost()).label("score")
        window = (
            select(found.c.rowid.label("id"), score)
            .select_from(found)
            .where(_match(source.fts)(f"({words}) AND ({self.scope})" if self.scope else words))
            .order_by(found.c.rowid.desc())
            .limit(CANDIDATES[tier])
        )
        if self.scope is None and not self.actor.is_admin:
            window = window.join(model, model.id == found.c.rowid).where(source.searchable(), self.row_visible(source))
        elif model is TimelineEntry:
            window = window.join(model, model.id == found.c.rowid)  # its kind, for the boost
        if seen:
            window = window.where(found.c.rowid.not_in(sorted(seen)))
        return window

    async def snippets(self, rows: list[_Row]) -> dict[_Candidate, str]:
        """FTS5's own snippets, cut from the hits' texts in a throw-away in-memory FTS5 table
        with the same tokenizer: the words are marked as the index matched them, and the query
        (a prefix above all) runs over a few rows instead of once per hit over the whole index."""
        with closing(sqlite3.connect(":memory:")) as db:
            db.execute(f"CREATE VIRTUAL TABLE hits USING fts5(text, tokenize='{TOKENIZE}')")
            db.executemany("INSERT INTO hits(rowid, text) VALUES (?, ?)", enumerate(r.text for r in rows))
            found = db.execute("SELECT rowid, snippet(hits, 0, ?, ?, '…', ?) FROM hits WHERE hits MATCH ?",
                               (MARK, MARK, SNIPPET_TOKENS, self.words_match(1))).fetchall()
        return {rows[i].candidate: text for i, text in found if text}


_CONFIG: ColumnElement[Any] = literal_column("'english'::regconfig")
_HEADLINE = f'StartSel={MARK}, StopSel={MARK}, MaxWords={SNIPPET_TOKENS}, MinWords=6, MaxFragments=2, ' \
            'FragmentDelimiter=" … "'


class _Postgres(_Query):
    def tsquery(self, tier: int) -> ColumnElement[Any]:
        parts: list[ColumnElement[Any]] = []
        last = len(self.words) - 1
        for i, word in enumerate(self.words):
            term = bindparam(None, word, type_=String)
            if i == last and self.prefix:
                parts.append(func.to_tsquery(_CONFIG, func.quote_literal(term).concat(":*")))
            else:
                parts.append(func.plainto_tsquery(_CONFIG, term))
        combined = parts[0]
        for part in parts[1:]:
            combined = combined.op("&&" if tier == 2 else "||")(part)
        return combined

    @staticmethod
    def vector(source: _Source) -> ColumnElement[Any]:
        return literal_column(f"{source.table}.search_vector")

    async def known(self, word: str) -> bool:
        checks = [exists().where(self.vector(src).op("@@")(func.plainto_tsquery(_CONFIG, word))).select_from(
            src.model) for src in SOURCES]
        return bool((await self.s.execute(select(checks[0] | checks[1]))).scalar())

    def window(self, source: _Source, tier: int, seen: set[int]) -> Select[Any]:
        model, query = source.model, self.tsquery(tier)
        window = (
            select(model.id.label("id"), (func.ts_rank_cd(self.vector(source), query, 1) * source.boost()).label("score"))
            .where(self.vector(source).op("@@")(query), source.searchable(), self.row_visible(source))
            .order_by(model.id.desc())
            .limit(CANDIDATES[tier])
        )
        if self.opportunity_id is not None:
            window = window.where(model.opportunity_id == self.opportunity_id)
        if seen:
            window = window.where(model.id.not_in(sorted(seen)))
        return window

    async def snippets(self, rows: list[_Row]) -> dict[_Candidate, str]:
        out: dict[_Candidate, str] = {}
        for source in SOURCES:
            by_id = {r.candidate.id: r.candidate for r in rows if r.candidate.source is source}
            if by_id:
                model = source.model
                headline = func.ts_headline(_CONFIG, model.text, self.tsquery(1), _HEADLINE)
                found = (await self.s.execute(select(model.id, headline).where(model.id.in_(list(by_id))))).all()
                out.update({by_id[i]: text for i, text in found if text})
        return out
