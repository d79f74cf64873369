-- Row level security on every table: a signed-in user (Supabase's `authenticated` role, identified
-- by auth.uid()) reaches only rows that lead back to their own user_id. The service itself
-- connects as the tables' owner, which row level security does not restrict.

alter table agent_configurations enable row level security;
alter table staff_members enable row level security;
alter table staff_availability enable row level security;
alter table staff_time_off enable row level security;
alter table appointments enable row level security;
alter table voicemails enable row level security;
alter table call_scripts enable row level security;
alter table customer_call_logs enable row level security;
alter table profiles enable row level security;
alter table agent_configs enable row level security;

grant select, insert, update, delete on
  agent_configurations, staff_members, staff_availability, staff_time_off, appointments,
  voicemails, call_scripts, profiles
to authenticated;
-- Call logs come only from Retell's traffic through the service, and agent_configs (which
-- agent id routes to which user) is the operator's: a signed-in user reads their own rows
-- there, and may delete their own call logs. Revoked as well as not granted: Supabase's
-- platform grants every privilege on new tables to authenticated.
grant select, delete on customer_call_logs to authenticated;
revoke insert, update, truncate on customer_call_logs from authenticated;
grant select on agent_configs to authenticated;
revoke insert, update, delete, truncate on agent_configs from authenticated;

-- The remembered availability days are not in `public`, so not served by Supabase's HTTP API;
-- locked all the same, since the service (the owner) is their only reader.
alter table slot_cache.staff_versions enable row level security;
alter table slot_cache.days enable row level security;

-- A Supabase project may have policies of its own on the tables it had before this service;
-- only these, by name, are ours.
drop policy if exists "own agent configurations" on agent_configurations;
create policy "own agent configurations" on agent_configurations for all to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());

drop policy if exists "own staff members" on staff_members;
create policy "own staff members" on staff_members for all to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());

drop policy if exists "availability of own staff" on staff_availability;
create policy "availability of own staff" on staff_availability for all to authenticated
  using (exists (select 1 from staff_members s
                 where s.id = staff_availability.staff_member_id and s.user_id = auth.uid()))
  with check (exists (select 1 from staff_members s
                      where s.id = staff_availability.staff_member_id and s.user_id = auth.uid()));

drop policy if exists "time off of own staff" on staff_time_off;
create policy "time off of own staff" on staff_time_off for all to authenticated
  using (exists (select 1 from staff_members s
                 where s.id = staff_time_off.staff_member_id and s.user_id = auth.uid()))
  with check (exists (select 1 from staff_members s
                      where s.id = staff_time_off.staff_member_id and s.user_id = auth.uid()));

drop policy if exists "own appointments" on appointments;
create policy "own appointments" on appointments for all to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());

drop policy if exists "own voicemails" on voicemails;
create policy "own voicemails" on voicemails for all to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());

drop policy if exists "own call scripts" on call_scripts;
create policy "own call scripts" on call_scripts for all to authenticated
  using (user_id = auth.uid()) with check (user_id = auth.uid());

drop policy if exists "own call logs" on customer_call_logs;
create policy "own call logs" on customer_call_logs for select to authenticated
  using (user_id = auth.uid());
drop policy if exists "own call logs deleted" on customer_call_logs;
create policy "own call logs deleted" on customer_call_logs for delete to authenticated
  using (user_id = auth.uid());

drop policy if exists "own profile" on profiles;
create policy "own profile" on profiles for all to authenticated
  using (id = auth.uid()) with check (id = auth.uid());

drop policy if exists "own agent configs" on agent_configs;
create policy "own agent configs" on agent_configs for select to authenticated
  using (user_id = auth.uid());
