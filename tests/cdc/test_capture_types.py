"""Every operation and common type round-trips through trigger capture with Supabase's typing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest

from cdc import admin
from cdc.changes import Column, Operation
from cdc.migrate import migrate
from tests.cdc.helpers import collecting
from tests.conftest import Server, create_database, drop_database

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE public.typed (
    id bigint PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint, num numeric, f4 real, f8 double precision,
    b boolean, t text, vc varchar(20), ch char(3), u uuid,
    j json, jb jsonb, ts timestamp, tstz timestamptz, d date, tm time,
    iv interval, by bytea, ai integer[], at text[], ajb jsonb[], m mood, p posint, inet_ inet,
    n int, o int, x int
);
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed ""Case"" Table" ("Id" int PRIMARY KEY, "Value" text);
"""

FULL_ROW = """
INSERT INTO public.typed VALUES (
    1, 2, 4, 9007199254740993, 123.450, 1.5, 2.25,
    true, 'text', 'varchar', 'ab', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
    '{"a": [1, 2]}', '{"b": {"c": null}}', '2026-01-01 12:00:00.123456',
    '2026-01-01 12:00:00.5+02', '2026-01-02', '13:14:15', '1 day 02:00:00', '\\x0102ff',
    '{1,NULL,3}', '{"a b","c,d",NULL}', ARRAY['{"x":1}'::jsonb], 'happy', 7, '10.0.0.1/8',
    -1, -2, -3
)
"""

EXPECTED_RECORD = {
    "id": 1,
    "i2": 2,
    "i4": 4,
    "i8": 9007199254740993,
    "num": 123.45,
    "f4": 1.5,
    "f8": 2.25,
    "b": True,
    "t": "text",
    "vc": "varchar",
    "ch": "ab ",
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "j": {"a": [1, 2]},
    "jb": {"b": {"c": None}},
    "ts": "2026-01-01T12:00:00.123456",
    "tstz": "2026-01-01T10:00:00.5+00:00",
    "d": "2026-01-02",
    "tm": "13:14:15",
    "iv": "1 day 02:00:00",
    "by": "0102ff",
    "ai": [1, None, 3],
    "at": ["a b", "c,d", None],
    "ajb": [{"x": 1}],
    "m": "happy",
    "p": 7,
    "inet_": "10.0.0.1/8",
    # Columns named like the trigger functions' row aliases must not shadow the row.
    "n": -1,
    "o": -2,
    "x": -3,
}

COLUMNS = (
    ("id", "int8"), ("i2", "int2"), ("i4", "int4"), ("i8", "int8"), ("num", "numeric"),
    ("f4", "float4"), ("f8", "float8"), ("b", "bool"), ("t", "text"), ("vc", "varchar"),
    ("ch", "bpchar"), ("u", "uuid"), ("j", "json"), ("jb", "jsonb"), ("ts", "timestamp"),
    ("tstz", "timestamptz"), ("d", "date"), ("tm", "time"), ("iv", "interval"), ("by", "bytea"),
    ("ai", "_int4"), ("at", "_text"), ("ajb", "_jsonb"), ("m", "mood"), ("p", "posint"),
    ("inet_", "inet"), ("n", "int4"), ("o", "int4"), ("x", "int4"),
)  # fmt: skip


@pytest.fixture(scope="module", params=["row", "statement"])
def granularity(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def db(pg_server: Server, granularity: str) -> Iterator[str]:
    """A fresh migrated database per granularity (both trigger kinds must capture alike)."""
    name = create_database(pg_server, f"capture_types_{granularity}")
    dsn = pg_server.dsn(name)
    migrate(dsn)
    yield dsn
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
async def conn(db: str, granularity: str) -> asyncpg.Connection:
    c = await asyncpg.connect(db)
    await c.execute(SCHEMA)
    admin.add_table(db, "public.typed", granularity=granularity)
    admin.add_table(db, '"Odd Schema"."Mixed ""Case"" Table"', granularity=granularity)
    yield c
    await c.close()


async def test_insert_update_delete_with_json_typing(db: str, conn: asyncpg.Connection) -> None:
    async with collecting(db) as reader:
        # The writer's own session settings must not change how values are rendered.
        await conn.execute("SET TimeZone = 'Asia/Kolkata'; SET IntervalStyle = 'iso_8601'")
        await conn.execute(FULL_ROW)
        await conn.execute("UPDATE public.typed SET t = 'changed', i4 = NULL WHERE id = 1")
        await conn.execute("DELETE FROM public.typed WHERE id = 1")
        await conn.execute("RESET TimeZone; RESET IntervalStyle")
        await reader.wait_count(3)
    ins, upd, dele = reader.changes
    assert [c.operation for c in reader.changes] == [
        Operation.INSERT,
        Operation.UPDATE,
        Operation.DELETE,
    ]
    assert ins.schema == "public" and ins.table == "typed"
    assert ins.record == EXPECTED_RECORD
    assert ins.old_record is None
    assert ins.columns == tuple(Column(n, t) for n, t in COLUMNS)
    assert upd.record == {**EXPECTED_RECORD, "t": "changed", "i4": None}
    assert upd.old_record == EXPECTED_RECORD
    assert dele.record is None
    assert dele.old_record == {**EXPECTED_RECORD, "t": "changed", "i4": None}
    for change in reader.changes:
        assert change.commit_timestamp.tzinfo is not None
        assert abs((datetime.now(UTC) - change.commit_timestamp).total_seconds()) < 60
    assert ins.position < upd.position < dele.position


async def test_nulls_everywhere(db: str, conn: asyncpg.Connection) -> None:
    async with collecting(db) as reader:
        await conn.execute("INSERT INTO public.typed (id) VALUES (2)")
        await reader.wait_count(1)
    record = reader.changes[0].record
    assert record is not None
    assert record["id"] == 2
    assert all(record[name] is None for name, _ in COLUMNS if name != "id")


async def test_one_megabyte_value_is_captured_whole(db: str, conn: asyncpg.Connection) -> None:
    big = "x" * (1024 * 1024) + "END"
    async with collecting(db) as reader:
        await conn.execute("INSERT INTO public.typed (id, t) VALUES (3, $1)", big)
        await reader.wait_count(1)
    record = reader.changes[0].record
    assert record is not None and record["t"] == big


async def test_quoted_mixed_case_table(db: str, conn: asyncpg.Connection) -> None:
    async with collecting(db) as reader:
        await conn.execute(
            'INSERT INTO "Odd Schema"."Mixed ""Case"" Table" VALUES (1, $1)', "hello"
        )
        await conn.execute('UPDATE "Odd Schema"."Mixed ""Case"" Table" SET "Value" = NULL')
        await reader.wait_count(2)
    ins, upd = reader.changes
    assert (ins.schema, ins.table) == ("Odd Schema", 'Mixed "Case" Table')
    assert ins.record == {"Id": 1, "Value": "hello"}
    assert upd.old_record == {"Id": 1, "Value": "hello"} and upd.record == {"Id": 1, "Value": None}
    assert ins.columns == (Column("Id", "int4"), Column("Value", "text"))


async def test_multi_row_statements_pair_old_and_new_rows(
    db: str, conn: asyncpg.Connection, granularity: str
) -> None:
    await conn.execute(
        "CREATE TABLE public.nokey (a int, b text);"
        "CREATE TABLE public.parted (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);"
        "CREATE TABLE public.parted_lo PARTITION OF public.parted FOR VALUES FROM (0) TO (500);"
        "CREATE TABLE public.parted_hi PARTITION OF public.parted FOR VALUES FROM (500) TO (5000);"
    )
    admin.add_table(db, "public.nokey", granularity=granularity)
    # A partitioned table is always captured per statement, on the parent.
    assert admin.add_table(db, "public.parted", granularity=granularity).granularity == "statement"
    n = 2000
    async with collecting(db) as reader:
        await conn.execute(
            f"INSERT INTO public.typed (id, i4) SELECT g, g FROM generate_series(10, {n + 9}) g"
        )
        # Changes the primary key and another column of every row in one statement.
        await conn.execute("UPDATE public.typed SET id = id + 100000, i4 = -i4 WHERE id >= 10")
        await conn.execute(
            f"INSERT INTO public.nokey SELECT g, 'v' || g FROM generate_series(1, {n}) g"
        )
        await conn.execute("UPDATE public.nokey SET b = b || '!' , a = a * 10")
        await conn.execute("INSERT INTO public.parted SELECT g, g FROM generate_series(1, 1000) g")
        # Rows move between partitions.
        await conn.execute("UPDATE public.parted SET id = id + 2000, v = v + 1")
        await reader.wait_count(2 * n + 2 * n + 2000)
    updates = [c for c in reader.changes if c.operation is Operation.UPDATE]
    assert len(updates) == 2 * n + 1000
    for c in updates:
        assert c.record is not None and c.old_record is not None
        if c.table == "typed":
            assert c.record["id"] == c.old_record["id"] + 100000  # type: ignore[operator]
            assert c.record["i4"] == -c.old_record["i4"]  # type: ignore[operator]
            assert c.old_record["i4"] == c.old_record["id"]
        elif c.table == "nokey":
            assert c.record["a"] == c.old_record["a"] * 10  # type: ignore[operator]
            assert c.record["b"] == f"{c.old_record['b']}!"
        else:
            assert c.table == "parted"
            assert c.record["id"] == c.old_record["id"] + 2000  # type: ignore[operator]
            assert c.record["v"] == c.old_record["v"] + 1  # type: ignore[operator]


async def test_old_values_key_and_event_subset(
    db: str, conn: asyncpg.Connection, granularity: str
) -> None:
    await conn.execute("CREATE TABLE public.keyed (id int PRIMARY KEY, v text)")
    admin.add_table(
        db, "public.keyed", events=("update", "delete"), old_values="key", granularity=granularity
    )
    async with collecting(db) as reader:
        await conn.execute("INSERT INTO public.keyed VALUES (1, 'a')")  # not captured
        await conn.execute("UPDATE public.keyed SET v = 'b'")
        await conn.execute("DELETE FROM public.keyed")
        await reader.wait_count(2)
    upd, dele = reader.changes
    assert upd.operation is Operation.UPDATE and upd.old_record == {"id": 1}
    assert upd.record == {"id": 1, "v": "b"}
    assert dele.operation is Operation.DELETE and dele.old_record == {"id": 1}
