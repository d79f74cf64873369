-- Row level security on every table: a signed-in user (Supabase's `authenticated` role, identified
-- by auth.uid()) reaches only rows that lead back to their own user_id. The service itself
-- connects as the tables' owner, which row level security does not restrict.

do $$
declare
  t text;
begin
  foreach t in array array[
    'agent_configurations', 'staff_members', 'staff_availability', 'staff_time_off',
    'appointments', 'voicemails', 'call_scripts', 'customer_call_logs', 'profiles',
    'agent_configs'
  ] loop
    execute format('alter table %I enable row level security', t);
    execute format('grant select, insert, update, delete on %I to authenticated', t);
  end loop;
end
$$;

-- Policies are added by name only where missing: a Supabase project may already have its own on
-- the tables it had before this service.
create function ensure_policy(table_name text, policy_name text, predicate text) returns void
language plpgsql as $$
begin
  if not exists (
    select 1 from pg_policies
    where schemaname = current_schema() and tablename = table_name and policyname = policy_name
  ) then
    execute format(
      'create policy %I on %I for all to authenticated using (%s) with check (%s)',
      policy_name, table_name, predicate, predicate
    );
  end if;
end
$$;

select ensure_policy('agent_configurations', 'own agent configurations', 'user_id = auth.uid()');
select ensure_policy('staff_members', 'own staff members', 'user_id = auth.uid()');
select ensure_policy('staff_availability', 'availability of own staff', $p$
  exists (select 1 from staff_members s
          where s.id = staff_availability.staff_member_id and s.user_id = auth.uid())
$p$);
select ensure_policy('staff_time_off', 'time off of own staff', $p$
  exists (select 1 from staff_members s
          where s.id = staff_time_off.staff_member_id and s.user_id = auth.uid())
$p$);
select ensure_policy('appointments', 'own appointments', 'user_id = auth.uid()');
select ensure_policy('voicemails', 'own voicemails', 'user_id = auth.uid()');
select ensure_policy('call_scripts', 'own call scripts', 'user_id = auth.uid()');
select ensure_policy('customer_call_logs', 'own call logs', 'user_id = auth.uid()');
select ensure_policy('profiles', 'own profile', 'id = auth.uid()');
select ensure_policy('agent_configs', 'own agent configs', 'user_id = auth.uid()');

drop function ensure_policy(text, text, text);

-- Views for the common reads. security_invoker makes them apply the reader's row level
-- security rather than the view owner's.
create view upcoming_appointments with (security_invoker = true) as
select a.id, a.user_id, s.agent_configuration_id, a.staff_member_id, s.staff_name,
       a.patient_name, a.patient_phone, a.patient_email, a.appointment_date, a.appointment_time,
       a.duration_minutes, a.appointment_type, a.status, a.starts_at, a.ends_at, a.call_log_id
from appointments a
join staff_members s on s.id = a.staff_member_id
where a.status in ('scheduled', 'confirmed') and a.starts_at >= now();

create view unread_voicemails with (security_invoker = true) as
select v.id, v.user_id, v.agent_configuration_id, v.call_log_id, v.caller_name, v.caller_phone,
       v.caller_email, v.subject, v.transcript, v.message_type, v.priority, v.is_urgent,
       v.received_at
from voicemails v
where v.status = 'unread';

-- "Today" is the clinic's own day, in its zone.
create view todays_calls with (security_invoker = true) as
select l.id, l.user_id, l.agent_configuration_id, l.retell_call_id, l.direction, l.from_number,
       l.to_number, l.call_status, l.started_at, l.ended_at, l.duration_ms,
       l.disconnection_reason, l.call_summary, l.user_sentiment, l.call_successful
from customer_call_logs l
join agent_configurations c on c.id = l.agent_configuration_id
where (coalesce(l.started_at, l.created_at) at time zone c.timezone)::date
      = (now() at time zone c.timezone)::date;

grant select on upcoming_appointments, unread_voicemails, todays_calls to authenticated;
