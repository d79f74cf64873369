-- Supabase already has auth.users, auth.uid() and the `authenticated` role; plain PostgreSQL (and
-- the embedded server) gets minimal stand-ins with the same names and behaviour. Objects that
-- exist are only referenced, never altered: on Supabase the migrating role does not own `auth`.

create extension if not exists btree_gist;

do $$
begin
  if not exists (select 1 from pg_namespace where nspname = 'auth') then
    create schema auth;
  end if;

  if to_regclass('auth.users') is null then
    create table auth.users (
      id uuid primary key default gen_random_uuid(),
      email text,
      created_at timestamptz not null default now()
    );
  end if;

  -- Same lookup order as Supabase's own auth.uid(): the single claim, then the claims object.
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
    language sql stable
    as $f$
      select nullif(
        coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
        ), ''
      )::uuid
    $f$;
  end if;

  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;

  -- Grants on the stand-in only; on Supabase these already exist and are not ours to change.
  if not exists (
    select 1 from pg_namespace n join pg_roles r on r.oid = n.nspowner
    where n.nspname = 'auth' and r.rolname in ('supabase_admin', 'supabase_auth_admin')
  ) then
    grant usage on schema auth to authenticated, anon;
    grant execute on function auth.uid() to authenticated, anon;
  end if;
end
$$;
