-- Notifications (CONTRACT section 7): queueing them from the rx_ functions (one line each in
-- 03_scheduling and 05_call_events calls into this file), the call's recording onto its
-- messages, the failures view, and the tables' row level security and grants. Kept together
-- here, rather than spread over 02, 06 and 07, so that the outbox reads as one area; the
-- tables are in 0003_notifications.sql.

alter table notification_endpoints enable row level security;
alter table notifications enable row level security;

drop trigger if exists notification_endpoints_updated_at on notification_endpoints;
create trigger notification_endpoints_updated_at before update on notification_endpoints
  for each row execute function set_updated_at();

drop trigger if exists notifications_updated_at on notifications;
create trigger notifications_updated_at before update on notifications
  for each row execute function set_updated_at();

-- Queue `p_event` for every active endpoint of the clinic that takes it (SMS: urgent messages
-- only), plus the reminders of an urgent message, and wake the workers at commit.
-- `p_details` (message text, notes, email addresses) is added only for endpoints that opted in.
-- Two plain inserts rather than one over a lateral union, each planned once per session
-- (generic plans): planning the union afresh on each call cost ~0.1 ms (bench/NOTES.md).
create or replace function enqueue_notifications(
  p_configuration uuid, p_event text, p_data jsonb, p_details jsonb,
  p_voicemail uuid, p_appointment uuid, p_urgent boolean
) returns void
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
  queued integer;
begin
  insert into notifications (
    agent_configuration_id, endpoint_id, event, voicemail_id, appointment_id, data
  )
  select p_configuration, e.id, p_event, p_voicemail, p_appointment,
         case when e.include_details then p_data || p_details else p_data end
  from notification_endpoints e
  where e.agent_configuration_id = p_configuration and e.is_active
    and (e.events is null or p_event = any(e.events))
    and (e.kind <> 'sms' or p_urgent);
  get diagnostics queued = row_count;
  if p_urgent then
    insert into notifications (
      agent_configuration_id, endpoint_id, event, voicemail_id, appointment_id, data, reminder,
      due_at
    )
    select p_configuration, e.id, 'voicemail.unread_reminder', p_voicemail, p_appointment,
           case when e.include_details then p_data || p_details else p_data end
             || jsonb_build_object('reminder', n, 'reminders', e.remind_times),
           n, now() + make_interval(mins => n * e.remind_after_minutes)
    from notification_endpoints e
    cross join generate_series(1, e.remind_times) n
    where e.agent_configuration_id = p_configuration and e.is_active
      and e.remind_after_minutes is not null
      and (e.events is null or 'voicemail.unread_reminder' = any(e.events));
  end if;
  if queued > 0 then
    perform pg_notify('notifications', '');
  end if;
end
$$;

-- voicemail.created for a message just stored (not for a retry that found it stored).
create or replace function enqueue_voicemail_notice(cfg agent_configurations, p_voicemail uuid, p_call_id text)
returns void
language plpgsql as $$
declare
  v voicemails;
begin
  -- Most clinics have no channel: one index probe, nothing built.
  if not exists (select 1 from notification_endpoints e
                 where e.agent_configuration_id = cfg.id and e.is_active) then
    return;
  end if;
  select * into v from voicemails where id = p_voicemail;
  perform enqueue_notifications(
    cfg.id, 'voicemail.created',
    jsonb_build_object(
      'voicemail_id', v.id, 'agent_id', cfg.agent_id, 'business_name', cfg.business_name,
      'timezone', cfg.timezone, 'call_id', p_call_id, 'caller_name', v.caller_name, 'caller_phone', v.caller_phone,
      'subject', v.subject, 'message_type', v.message_type, 'priority', v.priority,
      'is_urgent', v.is_urgent, 'received_at', v.received_at),
    jsonb_build_object('message', v.transcript, 'caller_email', v.caller_email),
    v.id, null, v.is_urgent);
end
$$;

-- appointment.booked, .rescheduled or .cancelled, from the appointment as appointment_json
-- gives it; `p_previous` is where a moved appointment was. A move to where it already was (a
-- retried reschedule) is no news.
create or replace function enqueue_appointment_notice(
  cfg agent_configurations, p_event text, p_appointment jsonb, p_previous jsonb
) returns void
language plpgsql as $$
declare
  a appointments;
begin
  if p_previous is not null
     and (p_previous ->> 'start', p_previous ->> 'staff_member_id')
         = (p_appointment ->> 'start', p_appointment ->> 'staff_member_id') then
    return;
  end if;
  if not exists (select 1 from notification_endpoints e
                 where e.agent_configuration_id = cfg.id and e.is_active) then
    return;
  end if;
  select * into a from appointments where id = (p_appointment ->> 'appointment_id')::uuid;
  perform enqueue_notifications(
    cfg.id, p_event,
    jsonb_build_object(
      'appointment_id', a.id, 'agent_id', cfg.agent_id, 'business_name', cfg.business_name,
      'timezone', cfg.timezone, 'patient_name', a.patient_name,
      'patient_phone', a.patient_phone, 'date', a.appointment_date,
      'time', to_char(a.appointment_time, 'HH24:MI'), 'start', a.starts_at,
      'duration_minutes', a.duration_minutes, 'staff_member_id', a.staff_member_id,
      'staff_name', p_appointment ->> 'staff_name', 'appointment_type', a.appointment_type,
      'status', a.status)
      || case when p_previous is null then '{}'::jsonb else jsonb_build_object(
           'previous', jsonb_build_object(
             'date', p_previous -> 'date', 'time', p_previous -> 'time',
             'start', p_previous -> 'start', 'staff_member_id', p_previous -> 'staff_member_id',
             'staff_name', p_previous -> 'staff_name')) end,
    jsonb_build_object('patient_email', a.patient_email, 'notes', a.notes,
                       'special_requests', a.special_requests),
    null, a.id, false);
end
$$;

-- The call's recording and length onto every message left during it, whichever of the
-- message and the call's end was stored first: both rx_leave_voicemail and rx_call_event call
-- it. Both take the call's advisory lock first, so that of two such transactions at once the
-- later one waits and then sees the other's row (a row lock on the call log did the same at the
-- cost of writing the row; a voicemail's foreign key alone does not block the call's update).
create or replace function copy_call_recording(p_call_log uuid) returns void
language plpgsql as $$
begin
  if p_call_log is null then
    return;
  end if;
  perform pg_advisory_xact_lock(hashtextextended('call_log:' || p_call_log::text, 0));
  update voicemails v
  set recording_url = coalesce(l.recording_url, v.recording_url),
      duration_seconds = coalesce(round(l.duration_ms / 1000.0)::integer, v.duration_seconds)
  from customer_call_logs l
  where l.id = p_call_log and v.call_log_id = p_call_log
    and (l.recording_url is not null or l.duration_ms is not null)
    and (v.recording_url is distinct from coalesce(l.recording_url, v.recording_url)
         or v.duration_seconds is distinct from
            coalesce(round(l.duration_ms / 1000.0)::integer, v.duration_seconds));
end
$$;

-- What failed for good, for the clinic's dashboard and the operator.
create or replace view notification_failures with (security_invoker = true) as
select n.id, n.agent_configuration_id, n.endpoint_id, e.kind, n.event, n.voicemail_id,
       n.appointment_id, n.attempts, n.last_error, n.created_at, n.last_attempt_at
from notifications n
left join notification_endpoints e on e.id = n.endpoint_id
where n.status = 'failed';

drop policy if exists "endpoints of own configurations" on notification_endpoints;
create policy "endpoints of own configurations" on notification_endpoints
  for all to authenticated
  using (exists (select 1 from agent_configurations c
                 where c.id = notification_endpoints.agent_configuration_id
                   and c.user_id = auth.uid()))
  with check (exists (select 1 from agent_configurations c
                      where c.id = notification_endpoints.agent_configuration_id
                        and c.user_id = auth.uid()));
-- Clinics read their notifications; only the service writes them.
drop policy if exists "notifications of own configurations" on notifications;
create policy "notifications of own configurations" on notifications
  for select to authenticated
  using (exists (select 1 from agent_configurations c
                 where c.id = notifications.agent_configuration_id and c.user_id = auth.uid()));

grant select, insert, update, delete on notification_endpoints to authenticated;
grant select on notifications, notification_failures to authenticated;

-- Only the service (the owner) queues notifications or copies recordings; nobody signed in, and
-- never `anon`, may call these (Supabase serves every function of `public` over HTTP).
revoke all on function
  enqueue_notifications(uuid, text, jsonb, jsonb, uuid, uuid, boolean),
  enqueue_voicemail_notice(agent_configurations, uuid, text),
  enqueue_appointment_notice(agent_configurations, text, jsonb, jsonb),
  copy_call_recording(uuid)
from public;
revoke all on notification_endpoints, notifications, notification_failures from anon;
