"""The results database (install ``facemtl[serve]``): SQLAlchemy tables, Alembic migrations
shipped in the package, batched writers, filtered reads, retention and export.

    from facemtl.store import Store, Query, AnswerFilter
    store = Store("sqlite:///results.db")          # or postgresql://user@host/db
    faces, next_page = store.faces(Query(answers=[AnswerFilter("gender", classes=["female"])]))
"""

from __future__ import annotations

from .engine import DEFAULT_URL, ENV_URL, database_url
from .migrate import current_revision, head_revision, upgrade
from .queries import AnswerFilter, Query
from .repository import SchemaError, Store, StoreError
from .writer import SessionWriter, SourceBusyError, SourceKindError

__all__ = ["Store", "StoreError", "SchemaError", "SourceKindError", "SourceBusyError", "Query", "AnswerFilter", "SessionWriter",
           "database_url", "DEFAULT_URL", "ENV_URL", "upgrade", "current_revision", "head_revision"]
