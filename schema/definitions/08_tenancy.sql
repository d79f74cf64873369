-- Tenancy on a hosted Supabase project (CONTRACT.md section 6), where PostgREST serves every
-- table and function of `public` to the anon key and to every signed-in user: who may route a
-- Retell agent id to a clinic, which rows may reference which, and who may run what. (Call logs
-- and agent_configs being read-only to signed-in users is in 06_row_level_security.)

-- A signed-in user may give a configuration only an agent id that the operator assigned to them
-- in agent_configs; the operator assigns any. Checked before the unique indexes are (a BEFORE
-- trigger), so that an id not assigned to the user is refused alike whether another clinic
-- uses it or not. Reactivating counts as taking the id again: it may have been reassigned.
-- The operator is whoever row level security does not restrict: the table's owner (the role
-- the service and migrations connect as), a superuser, or a role with bypassrls (Supabase's
-- postgres and service_role).
create or replace function agent_configurations_assigned() returns trigger
language plpgsql as $$
begin
  if tg_op = 'UPDATE' and new.agent_id is not distinct from old.agent_id
     and (old.is_active or not coalesce(new.is_active, false)) then
    return new;
  end if;
  if exists (select 1 from pg_roles r
             where r.rolname = current_user and (r.rolsuper or r.rolbypassrls))
     or pg_has_role(current_user, (select c.relowner from pg_class c where c.oid = tg_relid),
                    'member') then
    return new;
  end if;
  -- Read with the user's own rights: their rows of agent_configs are all they can see.
  if not exists (select 1 from agent_configs m
                 where m.agent_id = new.agent_id and m.user_id = new.user_id) then
    raise exception using
      errcode = 'insufficient_privilege',
      message = 'agent_id is not one assigned to this user',
      hint = 'The operator assigns agent ids to users in agent_configs.';
  end if;
  return new;
end
$$;

drop trigger if exists agent_configurations_assigned on agent_configurations;
create trigger agent_configurations_assigned before insert or update on agent_configurations
  for each row execute function agent_configurations_assigned();
