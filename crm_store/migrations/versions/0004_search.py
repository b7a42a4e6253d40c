"""full-text search over timeline entries and transcript messages

SQLite: one FTS5 external-content table per source, over a view that gives each row's
searchable text (none once a message is deleted or purged, or an entry retracted), the deal it
belongs to, the deal's owner, the owner's manager and the deal team. These numbers are indexed as
words of their own columns, so that a search keeps to the deals a person may see inside the
index (their own, their reports', their deal teams': ``owner : "7" OR team : (…) OR members :
"7"``) instead of reading every match's row; `crm_store.search` still reads every hit with the
visibility predicate in SQL. Triggers keep the index right for every writer (sync, capture,
edits, deletions, erasure, retention, owner, manager and deal-team changes) without any of them
calling anything; rows that exist already are indexed by a ``rebuild``.

PostgreSQL: a stored generated ``tsvector`` column on both tables with a GIN index.

Neither database's objects are in the models; `crm_store.search.is_search_object` tells the
schema comparison to leave exactly these alone.

On SQLite a later migration that re-creates ``transcript_messages``, ``timeline_entries``,
``opportunities``, ``users`` or ``deal_team_members`` (Alembic's batch "move and copy") must run this downgrade's SQLite
part before and this upgrade's after: the views and triggers name those tables, and SQLite
refuses to rename a table into place while a view or trigger refers to a missing one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TOKENIZE = "porter unicode61 remove_diacritics 2"
SOURCES = ("transcript_messages", "timeline_entries")
# The text a row offers to search: none once deleted or purged (messages) or retracted
# (entries), so such rows are in the index without words and never match.
SEARCHABLE = {
    "transcript_messages": ("CASE WHEN {r}.deleted_at IS NULL AND {r}.purged_at IS NULL THEN {r}.text END",
                            ("text", "deleted_at", "purged_at")),
    "timeline_entries": ("CASE WHEN {r}.retracted_at IS NULL THEN {r}.text END", ("text", "retracted_at")),
}
COLUMNS = "rowid, text, deal, owner, team, members"


def _manager(user: str) -> str:
    return f"(SELECT manager_id FROM users WHERE id = {user})"


def _members(deal: str, before: str = "") -> str:
    """The deal team's user ids as indexed (in order, space-separated). `before` turns the
    current set into the one a trigger's statement has just changed, which "delete" must repeat."""
    return (f"(SELECT group_concat(user_id, ' ') FROM (SELECT user_id FROM deal_team_members "
            f"WHERE opportunity_id = {deal}{before} ORDER BY user_id))")


def _write(table: str, delete: bool) -> str:
    fts = f"{table}_fts"
    return f"INSERT INTO {fts}({fts}, {COLUMNS}) SELECT 'delete', " if delete else f"INSERT INTO {fts}({COLUMNS}) SELECT "


def _row(table: str, row: str, delete: bool) -> str:
    """Index (or take out) one row, `row` being ``new`` or ``old`` in a trigger on `table`."""
    return f"""
        {_write(table, delete)}{row}.id, {SEARCHABLE[table][0].format(r=row)}, {row}.opportunity_id, o.owner_id,
            {_manager('o.owner_id')}, {_members('o.id')}
        FROM opportunities o WHERE o.id = {row}.opportunity_id;"""


def _rows(table: str, where: str, delete: bool, *, owner: str = "o.owner_id", team: str | None = None,
          members: str | None = None) -> str:
    """Index (or take out) the rows of the deals `where` picks; what was indexed before the
    trigger's statement is given by `owner`, `team` and `members`."""
    return f"""
        {_write(table, delete)}t.id, {SEARCHABLE[table][0].format(r='t')}, t.opportunity_id, {owner},
            {team or _manager(owner)}, {members or _members('o.id')}
        FROM opportunities o JOIN {table} t ON t.opportunity_id = o.id WHERE {where};"""


def _trigger(name: str, when: str, body: list[str]) -> None:
    op.execute(f"CREATE TRIGGER {name} {when} BEGIN {''.join(body)} END")


def _sqlite_upgrade() -> None:
    # What is indexed for a row is exactly what the view shows for it, so "delete" (which must
    # repeat the indexed values) and "rebuild" agree. Every trigger runs after its statement and
    # reads the deal; while a deal is being deleted its own trigger (before) takes its rows out,
    # and the cascade's triggers find no deal and do nothing (SQLite deletes the deal first).
    for table in SOURCES:
        fts, view = f"{table}_fts", f"{table}_search"
        op.execute(f"""
            CREATE VIEW {view} AS
            SELECT t.id AS id, {SEARCHABLE[table][0].format(r='t')} AS text, t.opportunity_id AS deal,
                   o.owner_id AS owner, {_manager('o.owner_id')} AS team, {_members('o.id')} AS members
            FROM {table} t JOIN opportunities o ON o.id = t.opportunity_id
        """)
        op.execute(f"""
            CREATE VIRTUAL TABLE {fts} USING fts5(
                text, deal, owner, team, members, content='{view}', content_rowid='id', tokenize='{TOKENIZE}')
        """)
        columns = ("id", "opportunity_id", *SEARCHABLE[table][1])
        changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in columns)
        _trigger(f"{fts}_insert", f"AFTER INSERT ON {table}", [_row(table, "new", False)])
        _trigger(f"{fts}_delete", f"AFTER DELETE ON {table}", [_row(table, "old", True)])
        _trigger(f"{fts}_update", f"AFTER UPDATE OF {', '.join(columns)} ON {table} WHEN {changed}",
                 [_row(table, "old", True), _row(table, "new", False)])
        op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")

    def each(*writes: tuple[str, bool, dict[str, str]]) -> list[str]:
        return [_rows(t, where, delete, **given) for t in SOURCES for where, delete, given in writes]

    _trigger("opportunities_search_owner",
             "AFTER UPDATE OF owner_id ON opportunities WHEN old.owner_id IS NOT new.owner_id",
             each(("o.id = new.id", True, {"owner": "old.owner_id"}), ("o.id = new.id", False, {})))
    _trigger("opportunities_search_delete", "BEFORE DELETE ON opportunities", each(("o.id = old.id", True, {})))
    _trigger("users_search_manager", "AFTER UPDATE OF manager_id ON users WHEN old.manager_id IS NOT new.manager_id",
             each(("o.owner_id = new.id", True, {"team": "old.manager_id"}), ("o.owner_id = new.id", False, {})))
    joined = _members("o.id", " AND user_id IS NOT new.user_id")
    left = _members("o.id", " UNION SELECT old.user_id")
    swapped = _members("o.id", " AND user_id IS NOT new.user_id UNION SELECT old.user_id")
    _trigger("deal_team_members_search_insert", "AFTER INSERT ON deal_team_members",
             each(("o.id = new.opportunity_id", True, {"members": joined}), ("o.id = new.opportunity_id", False, {})))
    _trigger("deal_team_members_search_delete", "AFTER DELETE ON deal_team_members",
             each(("o.id = old.opportunity_id", True, {"members": left}), ("o.id = old.opportunity_id", False, {})))
    _trigger("deal_team_members_search_update", "AFTER UPDATE OF opportunity_id, user_id ON deal_team_members "
             "WHEN old.opportunity_id = new.opportunity_id AND old.user_id IS NOT new.user_id",
             each(("o.id = new.opportunity_id", True, {"members": swapped}), ("o.id = new.opportunity_id", False, {})))
    _trigger("deal_team_members_search_move", "AFTER UPDATE OF opportunity_id, user_id ON deal_team_members "
             "WHEN old.opportunity_id IS NOT new.opportunity_id",
             each(("o.id = old.opportunity_id", True, {"members": left}), ("o.id = old.opportunity_id", False, {}),
                  ("o.id = new.opportunity_id", True, {"members": joined}), ("o.id = new.opportunity_id", False, {})))


def _sqlite_downgrade() -> None:
    for trigger in ("deal_team_members_search_move", "deal_team_members_search_update",
                    "deal_team_members_search_delete", "deal_team_members_search_insert", "users_search_manager"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TRIGGER IF EXISTS opportunities_search_delete")
    op.execute("DROP TRIGGER IF EXISTS opportunities_search_owner")
    for table in SOURCES:
        for suffix in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_fts_{suffix}")
        op.execute(f"DROP TABLE IF EXISTS {table}_fts")
        op.execute(f"DROP VIEW IF EXISTS {table}_search")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_upgrade()
        return
    for table in SOURCES:
        op.execute(f"""
            ALTER TABLE {table} ADD COLUMN search_vector tsvector
            GENERATED ALWAYS AS (to_tsvector('english', coalesce(text, ''))) STORED
        """)
        op.execute(f"CREATE INDEX ix_{table}_search_vector ON {table} USING gin (search_vector)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_downgrade()
        return
    for table in SOURCES:
        op.execute(f"DROP INDEX IF EXISTS ix_{table}_search_vector")
        op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS search_vector")
