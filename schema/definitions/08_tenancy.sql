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

-- Whether a call log is one of this configuration's calls, as the writer sees it: for a
-- signed-in user another clinic's call log is as absent as one that does not exist, so both are
-- refused alike (before the foreign key could tell them apart).
create or replace function same_clinic_call_log(p_call_log_id uuid, p_configuration_id uuid)
returns boolean
language plpgsql stable as $$
begin
  return exists (select 1 from customer_call_logs l
                 where l.id = p_call_log_id and l.agent_configuration_id = p_configuration_id);
end
$$;

-- An appointment's call is one of its staff member's clinic.
create or replace function appointments_same_clinic() returns trigger
language plpgsql as $$
begin
  if new.call_log_id is not null
     and (tg_op = 'INSERT' or new.call_log_id is distinct from old.call_log_id
          or new.staff_member_id is distinct from old.staff_member_id)
     and not same_clinic_call_log(new.call_log_id, (
       select s.agent_configuration_id from staff_members s where s.id = new.staff_member_id)) then
    perform reject('call_log_id must name a call of this clinic');
  end if;
  return new;
end
$$;

drop trigger if exists appointments_same_clinic on appointments;
create trigger appointments_same_clinic
  before insert or update of call_log_id, staff_member_id on appointments
  for each row execute function appointments_same_clinic();

create or replace function voicemails_same_clinic() returns trigger
language plpgsql as $$
begin
  if new.call_log_id is not null
     and (tg_op = 'INSERT' or new.call_log_id is distinct from old.call_log_id
          or new.agent_configuration_id is distinct from old.agent_configuration_id)
     and not same_clinic_call_log(new.call_log_id, new.agent_configuration_id) then
    perform reject('call_log_id must name a call of this clinic');
  end if;
  return new;
end
$$;

drop trigger if exists voicemails_same_clinic on voicemails;
create trigger voicemails_same_clinic
  before insert or update of call_log_id, agent_configuration_id on voicemails
  for each row execute function voicemails_same_clinic();

-- The other direction: a call log, or a staff member, does not move to another clinic while
-- rows of the first one reference it. (A configuration's deletion sets its call logs'
-- configuration to null, which moves them nowhere.)
create or replace function customer_call_logs_same_clinic() returns trigger
language plpgsql as $$
begin
  if new.agent_configuration_id is not null and (
       exists (select 1 from voicemails v
               where v.call_log_id = new.id
                 and v.agent_configuration_id <> new.agent_configuration_id)
       or exists (select 1 from appointments a join staff_members s on s.id = a.staff_member_id
                  where a.call_log_id = new.id
                    and s.agent_configuration_id <> new.agent_configuration_id)) then
    perform reject('a call log referenced by its clinic''s rows cannot move to another clinic');
  end if;
  return new;
end
$$;

drop trigger if exists customer_call_logs_same_clinic on customer_call_logs;
create trigger customer_call_logs_same_clinic
  before update of agent_configuration_id on customer_call_logs
  for each row when (new.agent_configuration_id is distinct from old.agent_configuration_id)
  execute function customer_call_logs_same_clinic();

create or replace function staff_members_same_clinic() returns trigger
language plpgsql as $$
begin
  if exists (select 1 from appointments a join customer_call_logs l on l.id = a.call_log_id
             where a.staff_member_id = new.id
               and l.agent_configuration_id is distinct from new.agent_configuration_id) then
    perform reject('a staff member with appointments from their clinic''s calls cannot move to'
                   ' another clinic');
  end if;
  return new;
end
$$;

drop trigger if exists staff_members_same_clinic on staff_members;
create trigger staff_members_same_clinic
  before update of agent_configuration_id on staff_members
  for each row when (new.agent_configuration_id is distinct from old.agent_configuration_id)
  execute function staff_members_same_clinic();

-- Functions run for their owner (the service) only, unless granted below. PostgREST serves
-- every function of `public` as /rpc/<name>, and Supabase's platform grants execute on each
-- new one to anon and authenticated, as PostgreSQL does to PUBLIC: both are undone here, for
-- the functions there are and (default privileges) for those created later. Extensions'
-- functions are the extensions' own.
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon, authenticated;
do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure from pg_proc p
    where p.pronamespace in ('public'::regnamespace, 'slot_cache'::regnamespace)
      and not exists (select 1 from pg_depend d
                      where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                        and d.deptype = 'e')
  loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
  end loop;
end
$$;

-- What a signed-in user's own writes need: the helpers their tables' triggers call (trigger
-- functions themselves need no grant). Nothing that takes a lock, and no rx_ function.
grant execute on function
  reject(text), owner_of_configuration(uuid), business_hours_problem(jsonb),
  script_conditions_problem(jsonb), parse_clock(text), is_e164(text),
  same_clinic_call_log(uuid, uuid), staff_lock_key(uuid)
to authenticated;

-- anon, the public key, reaches no table either (row level security already shows it no row).
revoke all on all tables in schema public from anon;
alter default privileges in schema public revoke all on tables from anon;
