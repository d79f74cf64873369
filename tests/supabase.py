"""A test database set up as a hosted Supabase project is, to attack it as its users would.

What is reproduced of Supabase's platform setup (its init scripts, before any project SQL):
- the roles `anon`, `authenticated` and `service_role` (bypassrls), and PostgREST's login role
  (here AUTHENTICATOR), which switches to one of them per request and sets `request.jwt.claims`;
- a migrating role that is not a superuser but bypasses row level security (Supabase's
  `postgres`; here OWNER, since the local `postgres` is a superuser), owning the database;
- schema `auth` owned by `supabase_admin`, `auth.users` and `auth.uid()` by
  `supabase_auth_admin`;
- `alter default privileges in schema public grant all on tables, functions and sequences to
  anon, authenticated, service_role`, for the role that will own the project's objects.

Roles belong to the whole server, not to one database: they are created once when missing (under
an advisory lock, since test sessions run in parallel) and never dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson

OWNER = "supabase_postgres_test"
AUTHENTICATOR = "supabase_authenticator_test"
# Any constant that nothing else takes as an advisory lock.
ROLES_LOCK_KEY = 7_413_200_512

ROLES = {
    "anon": "nologin noinherit",
    "authenticated": "nologin noinherit",
    "service_role": "nologin noinherit bypassrls",
    "supabase_admin": "nologin",
    "supabase_auth_admin": "nologin noinherit",
    OWNER: "login nosuperuser bypassrls",
    AUTHENTICATOR: "login noinherit nosuperuser",
}

AUTH_SCHEMA = [
    "create schema auth authorization supabase_admin",
    "grant all on schema auth to supabase_auth_admin",
    "grant usage on schema auth to anon, authenticated, service_role, " + OWNER,
    """
    create table auth.users (
      id uuid primary key default gen_random_uuid(),
      email text,
      created_at timestamptz not null default now()
    )
    """,
    "alter table auth.users owner to supabase_auth_admin",
    # What the project needs of auth.users: foreign keys to it, and (tests, the operator)
    # creating and removing users.
    f"grant select, insert, delete, truncate, references on auth.users to {OWNER}",
    """
    create function auth.uid() returns uuid language sql stable as $$
      select coalesce(current_setting('request.jwt.claim.sub', true),
                      (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'))::uuid
    $$
    """,
    "alter function auth.uid() owner to supabase_auth_admin",
]

PUBLIC_SCHEMA = [
    "grant usage on schema public to anon, authenticated, service_role",
    *(
        f"alter default privileges for role {OWNER} in schema public"
        f" grant all on {kind} to anon, authenticated, service_role"
        for kind in ("tables", "functions", "sequences")
    ),
]

# Everything about schema auth that the project's SQL must leave as it found it.
AUTH_SNAPSHOT = """
select 'schema' as kind, n.nspname as name, n.nspowner::regrole::text as owner,
       n.nspacl::text as acl, null as definition
from pg_namespace n where n.nspname = 'auth'
union all
select 'relation', c.relname, c.relowner::regrole::text, c.relacl::text,
       (select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                          order by a.attnum)
        from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)
from pg_class c where c.relnamespace = 'auth'::regnamespace
union all
select 'function', p.oid::regprocedure::text, p.proowner::regrole::text, p.proacl::text,
       pg_get_functiondef(p.oid)
from pg_proc p where p.pronamespace = 'auth'::regnamespace
union all
select 'trigger', t.tgname, null, null, pg_get_triggerdef(t.oid)
from pg_trigger t join pg_class c on c.oid = t.tgrelid
where c.relnamespace = 'auth'::regnamespace and not t.tgisinternal
order by 1, 2
"""


def with_user(url: str, user: str) -> str:
    """The same database as `url`, logged in as `user` (the test server trusts local logins)."""
    return str(httpx.URL(url).copy_with(username=user, password=None))


async def ensure_roles(admin: asyncpg.Connection) -> None:
    """Create the platform's roles where missing; PostgREST's role may become the others."""
    await admin.execute("select pg_advisory_lock($1)", ROLES_LOCK_KEY)
    try:
        for name, attributes in ROLES.items():
            exists = await admin.fetchval("select 1 from pg_roles where rolname = $1", name)
            if not exists:
                await admin.execute(f'create role "{name}" {attributes}')
        await admin.execute(f"grant anon, authenticated, service_role to {AUTHENTICATOR}")
    finally:
        await admin.execute("select pg_advisory_unlock($1)", ROLES_LOCK_KEY)


async def prepare_database(url: str) -> None:
    """Give a new, empty database Supabase's roles, schema auth, grants and default privileges.

    `url` logs in as a superuser; the database then belongs to OWNER, as a Supabase project's
    belongs to `postgres`.
    """
    conn = await asyncpg.connect(url)
    try:
        await ensure_roles(conn)
        name = await conn.fetchval("select current_database()")
        await conn.execute(f'alter database "{name}" owner to {OWNER}')
        for statement in (*AUTH_SCHEMA, *PUBLIC_SCHEMA):
            await conn.execute(statement)
    finally:
        await conn.close()


async def auth_snapshot(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(AUTH_SNAPSHOT)]


@asynccontextmanager
async def request_as(
    conn: asyncpg.Connection, role: str, user_id: uuid.UUID | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """One PostgREST request: a transaction as `role`, with the JWT's claims; rolled back.

    `conn` is logged in as AUTHENTICATOR, as PostgREST is.
    """
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(f"set local role {role}")
        claims: dict[str, str] = {"role": role}
        if user_id is not None:
            claims["sub"] = str(user_id)
        await conn.execute(
            "select set_config('request.jwt.claims', $1, true)", orjson.dumps(claims).decode()
        )
        yield conn
    finally:
        await transaction.rollback()
