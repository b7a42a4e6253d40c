"""The CRM store: models, migrations, visibility-enforcing queries and the fuzzy name index."""

from crm_store.actors import Actor
from crm_store.store import Found, Store

__all__ = ["Actor", "Found", "Store"]
