"""Test harness: a throwaway PostgreSQL cluster per test session, a fresh database per module.

Set ``PGCAST_TEST_DATABASE_URL`` to use an existing server instead (its role needs CREATEDB).
No mocks of Postgres: every database test talks to a real server.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from cdc.embedded import Cluster, throwaway_cluster
from cdc.migrate import migrate

# Property tests run on shared, sometimes loaded machines (CI, parallel agents): time is not what
# they check, so slow input generation and per-example deadlines must not fail them.
settings.register_profile(
    "pgcast", suppress_health_check=[HealthCheck.too_slow], deadline=None, print_blob=True
)
settings.load_profile("pgcast")


@dataclass(frozen=True)
class Server:
    """Where the test server is; ``cluster`` is None for an external one."""

    url: str
    cluster: Cluster | None

    def dsn(self, dbname: str) -> str:
        if self.cluster is not None:
            return self.cluster.dsn(dbname)
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    external = os.environ.get("PGCAST_TEST_DATABASE_URL")
    if external:
        yield Server(external, None)
        return
    # fsync off: a test cluster needs no durability across OS crashes; restarts still work.
    with throwaway_cluster(settings={"fsync": "off"}) as cluster:
        yield Server(cluster.dsn(), cluster)


def create_database(server: Server, hint: str) -> str:
    name = "t_" + re.sub(r"\W", "_", hint)[-40:] + "_" + uuid.uuid4().hex[:8]
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(server: Server, name: str) -> None:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def db(pg_server: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the pgcast schema migrated; yields its URL."""
    name = create_database(pg_server, request.module.__name__)
    dsn = pg_server.dsn(name)
    migrate(dsn)
    yield dsn
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def blank_db(pg_server: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database without the pgcast schema."""
    name = create_database(pg_server, request.module.__name__ + "_blank")
    yield pg_server.dsn(name)
    drop_database(pg_server, name)
