-- Supabase already has auth.uid(); plain PostgreSQL (and the embedded server) gets a stand-in with
-- the same name and behaviour, created only where absent: on Supabase the migrating role does not
-- own `auth`, and its function is used, never replaced. (Changing the stand-in itself therefore
-- takes a versioned migration that drops it where it is ours.)

do $$
begin
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
