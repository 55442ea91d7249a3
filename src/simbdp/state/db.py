"""A thin portable SQL layer over SQLite (embedded default) and PostgreSQL.

SQL is written once with ``?`` placeholders; for PostgreSQL they become ``%s``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simbdp.errors import SinkUnavailable

__all__ = ["Database"]


class Database:
    """One connection per thread to the state store; ``dialect`` is ``sqlite`` or ``postgres``."""

    def __init__(self, *, sqlite_path: Path | None = None, dsn: str | None = None):
        if (sqlite_path is None) == (dsn is None):
            raise ValueError("give exactly one of sqlite_path and dsn")
        self.dialect = "sqlite" if sqlite_path else "postgres"
        self._sqlite_path, self._dsn = sqlite_path, dsn
        self._local = threading.local()

    def _connect(self) -> Any:
        if self._sqlite_path is not None:
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._sqlite_path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg

        try:
            return psycopg.connect(self._dsn, autocommit=True)
        except psycopg.OperationalError as e:
            raise SinkUnavailable(f"state store PostgreSQL unreachable: {e}") from e

    @property
    def conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or (self.dialect == "postgres" and conn.closed):
            conn = self._local.conn = self._connect()
        return conn

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cur = self.conn.execute(self._sql(sql), params)
        return cur.rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.dialect == "sqlite":
            self.conn.executemany(sql, rows)
        else:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(self._sql(sql), params)
        if cur.description is None:
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """An immediate (write-locking) transaction on SQLite, a plain one on PostgreSQL."""
        conn = self.conn
        if self.dialect == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        else:
            with conn.transaction():
                yield

    def script(self, statements: str) -> None:
        for stmt in statements.split(";"):
            if stmt.strip():
                self.execute(stmt)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
