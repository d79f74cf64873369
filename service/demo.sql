-- The demo clinic. Fixed ids make loading idempotent: a second run inserts nothing.
-- Appointments and the time-off day are placed relative to the first load's date.
insert into auth.users (id, email) values ('d0000000-0000-4000-8000-000000000001', 'owner@brightside.example')
on conflict (id) do nothing;

insert into agent_configurations (
  id, user_id, agent_id, agent_name, business_name, business_address, business_phone,
  business_email, business_type, greeting_message, call_script, forward_number,
  forward_enabled, voicemail_enabled, voicemail_greeting, business_hours, timezone
) values (
  'd0000000-0000-4000-8000-0000000000c1', 'd0000000-0000-4000-8000-000000000001', 'agent_7c41e9b2d05a4f83b6e2c19d0a', 'Ava', 'Brightside Dental', '120 Boylston Street, Boston, MA 02116',
  '+16175550100', 'frontdesk@brightside.example', 'dental',
  'Thank you for calling Brightside Dental, this is Ava. How can I help you today?',
  'Help callers book, move or cancel visits, take messages, and put urgent calls through.',
  '+16175550142', true, true,
  'The office is closed right now, but I can take a message for the team.',
  '{"monday": [{"open": "08:00", "close": "17:00"}],
    "tuesday": [{"open": "08:00", "close": "17:00"}],
    "wednesday": [{"open": "08:00", "close": "19:00"}],
    "thursday": [{"open": "08:00", "close": "17:00"}],
    "friday": [{"open": "08:00", "close": "13:00"}],
    "saturday": [], "sunday": []}',
  'America/New_York'
) on conflict (id) do nothing;

-- The operator's assignment of the demo agent id to the demo clinic's owner.
insert into agent_configs (id, user_id, agent_id) values (
  'd0000000-0000-4000-8000-0000000000d1', 'd0000000-0000-4000-8000-000000000001', 'agent_7c41e9b2d05a4f83b6e2c19d0a'
) on conflict (id) do nothing;

insert into staff_members (id, agent_configuration_id, staff_name, staff_role,
                           default_appointment_duration, buffer_time_before, buffer_time_after)
values
  ('d0000000-0000-4000-8000-0000000000a1', 'd0000000-0000-4000-8000-0000000000c1', 'Dr. Ada Lee', 'dentist', 30, 0, 10),
  ('d0000000-0000-4000-8000-0000000000a2', 'd0000000-0000-4000-8000-0000000000c1', 'Dr. Omar Haddad', 'dentist', 30, 0, 0),
  ('d0000000-0000-4000-8000-0000000000a3', 'd0000000-0000-4000-8000-0000000000c1', 'Sam Park', 'hygienist', 45, 5, 5)
on conflict (id) do nothing;

insert into staff_availability (id, staff_member_id, day_of_week, start_time, end_time,
                                break_start_time, break_end_time)
select md5('demo-availability' || s.id || d)::uuid, s.id, d, s.opens, s.closes, '12:00', '13:00'
from (values
  ('d0000000-0000-4000-8000-0000000000a1'::uuid, time '09:00', time '17:00'),
  ('d0000000-0000-4000-8000-0000000000a2'::uuid, time '08:00', time '16:00'),
  ('d0000000-0000-4000-8000-0000000000a3'::uuid, time '09:00', time '18:00')
) s(id, opens, closes), generate_series(1, 5) d
on conflict (id) do nothing;

insert into staff_time_off (id, staff_member_id, start_date, end_date, is_full_day, reason)
values ('d0000000-0000-4000-8000-0000000000f1', 'd0000000-0000-4000-8000-0000000000a2',
        current_date + 3, current_date + 3, true, 'conference')
on conflict (id) do nothing;

insert into appointments (id, staff_member_id, patient_name, patient_phone, appointment_date,
                          appointment_time, duration_minutes, appointment_type)
select md5('demo-appointment' || n)::uuid, staff, patient, phone,
       current_date + day_offset, at, 30, kind
from (values
  (1, 'd0000000-0000-4000-8000-0000000000a1'::uuid, 'Maria Gonzalez', '+16175550187', 7, time '09:00', 'cleaning'),
  (2, 'd0000000-0000-4000-8000-0000000000a1'::uuid, 'James Whitaker', '+16175550163', 7, time '10:00', 'checkup'),
  (3, 'd0000000-0000-4000-8000-0000000000a3'::uuid, 'Priya Raman', '+16175550129', 8, time '14:00', 'cleaning'),
  (4, 'd0000000-0000-4000-8000-0000000000a2'::uuid, 'Leo Chen', '+16175550111', 9, time '11:00', 'consultation')
) a(n, staff, patient, phone, day_offset, at, kind)
where extract(dow from current_date + day_offset) between 1 and 5
on conflict (id) do nothing;

insert into call_scripts (id, agent_configuration_id, script_name, script_type, script_content,
                          conditions, is_default)
values
  ('d0000000-0000-4000-8000-0000000000b1', 'd0000000-0000-4000-8000-0000000000c1', 'Daytime greeting', 'greeting',
   'Thank you for calling Brightside Dental, this is Ava. How can I help you today?',
   '{"open": true}', true),
  ('d0000000-0000-4000-8000-0000000000b2', 'd0000000-0000-4000-8000-0000000000c1', 'After hours', 'after_hours',
   'Thanks for calling Brightside Dental. The office is closed right now, but I can book a visit or take a message.',
   '{"open": false}', false)
on conflict (id) do nothing;
