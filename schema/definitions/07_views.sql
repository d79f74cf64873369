-- Views for the common reads. security_invoker makes them apply the reader's row level
-- security rather than the view owner's.
create or replace view upcoming_appointments with (security_invoker = true) as
select a.id, a.user_id, s.agent_configuration_id, a.staff_member_id, s.staff_name,
       a.patient_name, a.patient_phone, a.patient_email, a.appointment_date, a.appointment_time,
       a.duration_minutes, a.appointment_type, a.status, a.starts_at, a.ends_at, a.call_log_id
from appointments a
join staff_members s on s.id = a.staff_member_id
where a.status in ('scheduled', 'confirmed') and a.starts_at >= now();

create or replace view unread_voicemails with (security_invoker = true) as
select v.id, v.user_id, v.agent_configuration_id, v.call_log_id, v.caller_name, v.caller_phone,
       v.caller_email, v.subject, v.transcript, v.message_type, v.priority, v.is_urgent,
       v.received_at
from voicemails v
where v.status = 'unread';

-- "Today" is the clinic's own day, in its zone.
create or replace view todays_calls with (security_invoker = true) as
select l.id, l.user_id, l.agent_configuration_id, l.retell_call_id, l.direction, l.from_number,
       l.to_number, l.call_status, l.started_at, l.ended_at, l.duration_ms,
       l.disconnection_reason, l.call_summary, l.user_sentiment, l.call_successful
from customer_call_logs l
join agent_configurations c on c.id = l.agent_configuration_id
where (coalesce(l.started_at, l.created_at) at time zone c.timezone)::date
      = (now() at time zone c.timezone)::date;

grant select on upcoming_appointments, unread_voicemails, todays_calls to authenticated;
