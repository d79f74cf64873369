"""What the schema leaves in a database's catalog, as comparable text, without object ids."""

from __future__ import annotations

import asyncpg

# The project's schemas: its own, and auth for the stand-ins created where Supabase's are absent.
SCHEMAS = ["public", "slot_cache", "auth"]

QUERIES = {
    "functions": """
        select format('%s %s acl=%s', p.oid::regprocedure, pg_get_functiondef(p.oid), p.proacl)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any($1) and p.prokind in ('f', 'p')""",
    "relations": """
        select format('%s.%s kind=%s persistence=%s rls=%s force=%s options=%s acl=%s',
                      n.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
                      c.relforcerowsecurity, c.reloptions, c.relacl)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any($1) and c.relkind in ('r', 'v', 'S', 'm', 'p')""",
    "columns": """
        select format('%s.%s #%s %s %s notnull=%s default=%s compression=%s', n.nspname,
                      c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                      a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attcompression)
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where n.nspname = any($1) and c.relkind in ('r', 'v', 'p') and a.attnum > 0
          and not a.attisdropped""",
    "constraints": """
        select format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
        from pg_constraint
        where connamespace in (select oid from pg_namespace where nspname = any($1))""",
    "indexes": """
        select format('%s %s', indexname, indexdef) from pg_indexes
        where schemaname = any($1)""",
    "views": """
        select format('%s.%s %s', schemaname, viewname, definition) from pg_views
        where schemaname = any($1)""",
    "triggers": """
        select format('%s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
        from pg_trigger t join pg_class c on c.oid = t.tgrelid
        where not t.tgisinternal
          and c.relnamespace in (select oid from pg_namespace where nspname = any($1))""",
    "policies": """
        select format('%s.%s %s %s %s %s %s %s', schemaname, tablename, policyname, permissive,
                      roles, cmd, qual, with_check)
        from pg_policies where schemaname = any($1)""",
    "schemas": """
        select format('%s acl=%s', nspname, nspacl) from pg_namespace where nspname = any($1)""",
    # (Extensions are per database, not per schema: $1 is only there to share the call.)
    "extensions": """
        select format('%s %s', extname, extversion) from pg_extension
        where $1::text[] is not null""",
}


async def catalog(
    conn: asyncpg.Connection, *, ignore: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Each kind of object as a sorted list of its definitions; lines containing any of `ignore`
    are left out."""
    found: dict[str, list[str]] = {}
    for kind, sql in QUERIES.items():
        rows = await conn.fetch(sql, SCHEMAS)
        found[kind] = sorted(r[0] for r in rows if not any(word in r[0] for word in ignore))
    return found
