"""PostgreSQL schema, migrations and statements for :class:`stores.PostgresStore`.

Every statement is rendered for one schema (quoted identifier) when the store
is built, so the store can live in any schema and tests can isolate themselves
in a fresh one. No asyncpg import here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from stores._errors import StoreUnavailable

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Statements",
    "migrate",
    "quote_ident",
]

MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer identifiers.


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (double quotes doubled), rejecting unusable names."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"schema name must be a non-empty str, not {name!r}")
    if len(name.encode()) > MAX_IDENTIFIER:
        raise ValueError(f"schema name {name!r} is over {MAX_IDENTIFIER} bytes")
    return '"' + name.replace('"', '""') + '"'


# Forward-only migrations: MIGRATIONS[i] brings the schema from version i to
# i + 1. `{s}` is the quoted schema. Appending a new entry is how the layout
# changes; an existing entry never changes once released.
MIGRATIONS: list[str] = [
    """
    -- fillfactor leaves room on each page so the frequent version updates
    -- can be HOT (heap-only tuple) updates that skip index maintenance.
    CREATE TABLE {s}.streams (
        name text PRIMARY KEY,
        version bigint NOT NULL
    ) WITH (fillfactor = 80);
    CREATE TABLE {s}.events (
        position bigint PRIMARY KEY,
        stream text NOT NULL,
        version bigint NOT NULL,
        category text NOT NULL,
        type text NOT NULL,
        data bytea NOT NULL,
        metadata bytea NOT NULL,
        schema_version integer NOT NULL,
        event_id text NOT NULL,
        recorded_at timestamptz NOT NULL,
        -- The safety net behind the version check: two writers can never
        -- both store version v of one stream.
        UNIQUE (stream, version)
    );
    CREATE TABLE {s}.commands (
        command_id text PRIMARY KEY,
        stream text NOT NULL,
        version bigint NOT NULL,
        first_position bigint NOT NULL,
        last_position bigint NOT NULL,
        reply bytea
    );
    CREATE TABLE {s}.snapshots (
        stream text NOT NULL,
        version bigint NOT NULL,
        state bytea NOT NULL,
        schema_version integer NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (stream, version)
    );
    CREATE TABLE {s}.checkpoints (
        name text PRIMARY KEY,
        position bigint NOT NULL
    ) WITH (fillfactor = 80);
    -- Takes the schema's write lock, then reads (with fresh snapshots, see
    -- below) the head, the batch's stream versions and any recorded commands.
    -- PostgreSQL: "VOLATILE functions obtain a fresh snapshot at the start of
    -- each query they execute" (docs, "Function Volatility Categories"), so the
    -- SELECTs after pg_advisory_xact_lock see every batch committed before the
    -- lock was granted. In one statement the snapshot would predate the wait.
    CREATE FUNCTION {s}.lock_and_read(lock_key bigint, streams text[], command_ids text[],
                                      idle_timeout_ms integer)
    RETURNS TABLE (kind integer, key text, stream text, version bigint,
                   first_position bigint, last_position bigint, reply bytea, at timestamptz)
    LANGUAGE plpgsql VOLATILE AS $fn$
    BEGIN
        -- A writer process that freezes (SIGSTOP, debugger, swap) while holding
        -- the lock would block every writer: the server ends this session if
        -- this transaction sits idle that long (set_config(..., true) = SET LOCAL).
        IF idle_timeout_ms > 0 THEN
            PERFORM set_config('idle_in_transaction_session_timeout', idle_timeout_ms::text, true);
        END IF;
        PERFORM pg_advisory_xact_lock(lock_key);
        -- kind 0: the head and the batch's timestamp (one row). clock_timestamp(),
        -- read after the lock is granted, rises with positions; now() is the
        -- transaction's start, which can predate the previous batch's commit.
        RETURN QUERY
            SELECT 0, NULL::text, NULL::text, coalesce(max(e.position), 0), NULL::bigint,
                   NULL::bigint, NULL::bytea, clock_timestamp()
            FROM {s}.events e;
        -- kind 1: the current version of each stream in the batch that exists.
        RETURN QUERY
            SELECT 1, st.name, st.name, st.version, NULL::bigint, NULL::bigint, NULL::bytea,
                   NULL::timestamptz
            FROM {s}.streams st WHERE st.name = ANY(streams);
        -- kind 2: each command id of the batch that is already recorded.
        RETURN QUERY
            SELECT 2, c.command_id, c.stream, c.version, c.first_position, c.last_position,
                   c.reply, NULL::timestamptz
            FROM {s}.commands c WHERE c.command_id = ANY(command_ids);
    END
    $fn$;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def _channel(schema: str) -> str:
    # NOTIFY channel names are identifiers (at most 63 bytes): hash long names.
    name = f"actorsourcing_{schema}"
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    return "actorsourcing_" + hashlib.blake2b(schema.encode(), digest_size=16).hexdigest()


def _lock_key(schema: str) -> int:
    # A stable signed 64-bit advisory lock key per schema (same in every process).
    digest = hashlib.blake2b(f"actorsourcing:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement the store runs, rendered for one schema."""

    schema: str
    channel: str
    lock_key: int
    create_schema: str
    create_meta: str
    get_version: str
    set_version: str
    lock_and_read: str
    write_batch: str
    read_stream_fwd: str
    read_stream_back: str
    read_payloads: str
    read_replay: str
    read_all: str
    head: str
    stream_version: str
    actual_version: str
    find_command: str
    save_snapshot: str
    load_snapshot: str
    get_checkpoint: str
    set_checkpoint: str
    reset_checkpoint: str
    ensure_checkpoint: str
    lock_checkpoint: str

    @classmethod
    def for_schema(cls, schema: str) -> Statements:
        """Render every statement for ``schema``."""
        s = quote_ident(schema)
        cols = (
            "position, stream, version, type, data, metadata, schema_version, event_id, recorded_at"
        )
        return cls(
            schema=schema,
            channel=_channel(schema),
            lock_key=_lock_key(schema),
            create_schema=f"CREATE SCHEMA IF NOT EXISTS {s}",
            create_meta=(
                f"CREATE TABLE IF NOT EXISTS {s}.actorsourcing_schema (version integer NOT NULL)"
            ),
            get_version=f"SELECT max(version) FROM {s}.actorsourcing_schema",
            # One row per applied migration; the highest is the schema's version.
            set_version=f"INSERT INTO {s}.actorsourcing_schema (version) VALUES ($1)",
            lock_and_read=f"SELECT * FROM {s}.lock_and_read($1, $2::text[], $3::text[], $4)",
            # One statement for the whole batch (data-modifying CTEs all run,
            # in one snapshot; we already hold the write lock and checked
            # versions and command ids, so nothing here can conflict).
            write_batch=f"""
                WITH ev AS (
                    INSERT INTO {s}.events ({cols}, category)
                    SELECT p, st, v, t, d, m, sv, id, $10::timestamptz, split_part(st, '-', 1)
                    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                                $5::bytea[], $6::bytea[], $7::integer[], $8::text[])
                         AS u(p, st, v, t, d, m, sv, id)
                ), vs AS (
                    INSERT INTO {s}.streams (name, version)
                    SELECT * FROM unnest($11::text[], $12::bigint[])
                    ON CONFLICT (name) DO UPDATE SET version = excluded.version
                ), cm AS (
                    INSERT INTO {s}.commands
                        (command_id, stream, version, first_position, last_position, reply)
                    SELECT * FROM unnest($13::text[], $14::text[], $15::bigint[],
                                         $16::bigint[], $17::bigint[], $18::bytea[])
                )
                SELECT pg_notify($9, $19::text)
            """,
            read_stream_fwd=(
                f"SELECT {cols} FROM {s}.events WHERE stream = $1 AND version >= $2"
                f" AND version <= $3 ORDER BY version LIMIT $4"
            ),
            read_stream_back=(
                f"SELECT {cols} FROM {s}.events WHERE stream = $1 AND version >= $2"
                f" AND version <= $3 ORDER BY version DESC LIMIT $4"
            ),
            # The replay read: only the four columns activation uses (no
            # position, metadata, event id or time to transfer and decode).
            read_payloads=(
                f"SELECT version, type, schema_version, data FROM {s}.events"
                f" WHERE stream = $1 AND version >= $2 AND version <= $3 ORDER BY version LIMIT $4"
            ),
            # read_replay in one statement: the newest snapshot at or below $2
            # (its row has a NULL type), then the events after it when its
            # schema version is $3, else from version 1; $4 limits the events.
            read_replay=(
                f"WITH snap AS (SELECT version, state, schema_version, recorded_at"
                f" FROM {s}.snapshots WHERE stream = $1 AND version <= $2"
                f" ORDER BY version DESC LIMIT 1)"
                f" SELECT version, NULL::text, schema_version, state, recorded_at FROM snap"
                f" UNION ALL (SELECT version, type, schema_version, data, NULL::timestamptz"
                f" FROM {s}.events WHERE stream = $1 AND version <= $2 AND version >"
                f" coalesce((SELECT version FROM snap WHERE schema_version = $3), 0)"
                f" ORDER BY version LIMIT $4)"
            ),
            read_all=(
                f"SELECT {cols} FROM {s}.events WHERE position > $1"
                f" AND ($3::text[] IS NULL OR type = ANY($3::text[]))"
                f" AND ($4::text[] IS NULL OR category = ANY($4::text[]))"
                f" ORDER BY position LIMIT $2"
            ),
            head=f"SELECT coalesce(max(position), 0) FROM {s}.events",
            stream_version=f"SELECT version FROM {s}.streams WHERE name = $1",
            actual_version=(
                f"SELECT greatest((SELECT max(version) FROM {s}.events WHERE stream = $1),"
                f" (SELECT version FROM {s}.streams WHERE name = $1), 0)"
            ),
            find_command=(
                f"SELECT command_id, stream, version, first_position, last_position, reply"
                f" FROM {s}.commands WHERE command_id = $1"
            ),
            save_snapshot=(
                f"INSERT INTO {s}.snapshots (stream, version, state, schema_version)"
                f" VALUES ($1, $2, $3, $4) ON CONFLICT (stream, version) DO UPDATE SET"
                f" state = excluded.state, schema_version = excluded.schema_version,"
                f" recorded_at = excluded.recorded_at"
            ),
            load_snapshot=(
                f"SELECT stream, version, state, schema_version, recorded_at FROM {s}.snapshots"
                f" WHERE stream = $1 AND ($2::bigint IS NULL OR version <= $2::bigint)"
                f" ORDER BY version DESC LIMIT 1"
            ),
            get_checkpoint=f"SELECT position FROM {s}.checkpoints WHERE name = $1",
            set_checkpoint=(
                f"INSERT INTO {s}.checkpoints AS c (name, position) VALUES ($1, $2)"
                f" ON CONFLICT (name) DO UPDATE SET position = excluded.position"
                f" WHERE c.position < excluded.position"
            ),
            reset_checkpoint=(
                f"INSERT INTO {s}.checkpoints (name, position) VALUES ($1, $2)"
                f" ON CONFLICT (name) DO UPDATE SET position = excluded.position"
            ),
            ensure_checkpoint=(
                f"INSERT INTO {s}.checkpoints (name, position) VALUES ($1, 0)"
                f" ON CONFLICT (name) DO NOTHING"
            ),
            lock_checkpoint=f"SELECT position FROM {s}.checkpoints WHERE name = $1 FOR UPDATE",
        )


async def migrate(conn: Any, sql: Statements) -> None:
    """Create ``sql.schema`` and bring its tables to :data:`SCHEMA_VERSION`.

    Args:
        conn: An ``asyncpg.Connection`` (not in a transaction).
        sql: The statements of the schema.

    Raises:
        StoreUnavailable: the schema is at a newer version than this library knows.
    """
    async with conn.transaction():
        # Serialise concurrent openers of one schema (CREATE SCHEMA IF NOT
        # EXISTS can still race on the catalog's unique index without it).
        await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.lock_key)
        await conn.execute(sql.create_schema)
        await conn.execute(sql.create_meta)
        version = await conn.fetchval(sql.get_version) or 0
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"schema {sql.schema!r} is at version {version}; this library knows up to"
                f" {SCHEMA_VERSION}: upgrade actorsourcing"
            )
        for step in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[step].format(s=quote_ident(sql.schema)))
            await conn.execute(sql.set_version, step + 1)
