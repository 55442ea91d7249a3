"""A process-wide in-memory DuckDB for reading files and computing over Arrow data.

Opening a DuckDB database costs tens of milliseconds, more than a small file's own work; a
cursor on a database kept for the process costs well under one. A forked child opens its own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

__all__ = ["scratch"]


@dataclass
class _Db:
    pid: int
    con: duckdb.DuckDBPyConnection
    memory_mb: int | None = None


_lock = threading.Lock()
_db: _Db | None = None


def scratch(memory_mb: int | None = None) -> duckdb.DuckDBPyConnection:
    """A new cursor on this process's in-memory DuckDB; close it after use. ``memory_mb``
    sets the database's memory limit (for every cursor) when it differs from the last."""
    global _db
    import duckdb  # here: a process that never reads through DuckDB never loads it

    with _lock:
        if _db is None or _db.pid != os.getpid():
            _db = _Db(os.getpid(), duckdb.connect(config={"threads": 2}))
        if memory_mb is not None and memory_mb != _db.memory_mb:
            _db.con.execute(f"SET memory_limit='{memory_mb}MB'")
            _db.memory_mb = memory_mb
        return _db.con.cursor()
