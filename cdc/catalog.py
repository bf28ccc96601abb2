"""Table columns from the database, for binding filters at join time: :class:`Catalog`.

A join names tables; its filters are checked against those tables' columns and converted with
their types (:func:`broadcaster.filters.bind`). The columns come from ``pg_attribute`` and
``pg_type`` over a small asyncpg pool and are cached for ``ttl`` seconds; concurrent lookups of the
same table share one query. An unknown table is not cached (it may be created any moment).

Lives in ``cdc`` because drivers stay there; the broadcaster sees it only through its
``ColumnLookup``/``DatabaseProbe`` protocols, and ``broadcaster.app`` wires it in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

from cdc.changes import Column

__all__ = ["COLUMNS_SQL", "Catalog"]

log = logging.getLogger(__name__)

COLUMNS_SQL = (
    "SELECT a.attname, t.typname FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
    " WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
    " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)


class Catalog:
    """Cached column lookups.

    Args:
        dsn: libpq URL of the database.
        ttl: seconds a table's columns are trusted.
        timeout: seconds for connecting and for each query.
    """

    def __init__(self, dsn: str, *, ttl: float = 30.0, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._ttl = ttl
        self._timeout = timeout
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._cache: dict[tuple[str, str], tuple[float, tuple[Column, ...]]] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[tuple[Column, ...]]] = {}

    async def _get_pool(self) -> Any:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=4,
                    timeout=self._timeout,
                    server_settings={"application_name": "pgcast catalog"},
                )
            return self._pool

    async def columns(self, schema: str, table: str) -> tuple[Column, ...]:
        """The table's columns in attnum order; ``()`` if there is no such table.

        Raises:
            asyncpg.PostgresError, OSError, TimeoutError: the database could not answer.
        """
        key = (schema, table)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[Column, ...]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            pool = await self._get_pool()
            rows = await pool.fetch(COLUMNS_SQL, schema, table, timeout=self._timeout)
            columns = tuple(Column(r["attname"], r["typname"]) for r in rows)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else has to
            raise
        finally:
            del self._pending[key]
        if columns:
            self._cache[key] = (time.monotonic() + self._ttl, columns)
        future.set_result(columns)
        return columns

    async def ping(self) -> bool:
        """Whether the database answers ``SELECT 1`` within the timeout."""
        try:
            pool = await self._get_pool()
            await pool.fetchval("SELECT 1", timeout=self._timeout)
        except Exception as exc:
            log.warning("database health check failed: %s", exc)
            return False
        return True

    async def close(self) -> None:
        """Release the pool's connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except (TimeoutError, Exception):
                pool.terminate()
