-- Triggers: updated_at kept current, and rows a clinic's data can't sensibly hold rejected with a
-- message that says what is wrong (SQLSTATE 23514 check_violation, 23P01 for a double booking).

create or replace function set_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create or replace function reject(message text) returns void
language plpgsql as $$
begin
  raise exception using errcode = 'check_violation', message = message;
end
$$;

-- 'HH:MM' (or 'HH:MM:SS'), 00:00 .. 24:00, as an interval since midnight; null when malformed.
-- Built from the digits rather than cast through `time` (whose input function is only stable):
-- every function in the body is immutable, so the planner inlines it into the queries that use
-- it instead of running it as a separately planned statement per call (bench/NOTES.md).
create or replace function parse_clock(value text) returns interval
language sql immutable as $$
  select case
    when value ~ '^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$'
      then make_interval(hours => substr(value, 1, 2)::int, mins => substr(value, 4, 2)::int,
                         secs => coalesce(nullif(substr(value, 7, 2), '')::int, 0))
    when value ~ '^24:00(:00)?$' then interval '24 hours'
  end
$$;

create or replace function time_of(t time) returns interval
language sql immutable as $$ select t - time '00:00' $$;

-- The reason business_hours is malformed, or null when it is well formed (or null).
create or replace function business_hours_problem(hours jsonb) returns text
language plpgsql immutable as $$
declare
  day text;
  intervals jsonb;
  item jsonb;
  opens interval;
  closes interval;
  previous_close interval;
begin
  if hours is null or jsonb_typeof(hours) = 'null' then
    return null;
  end if;
  if jsonb_typeof(hours) <> 'object' then
    return 'business_hours must be an object keyed by weekday';
  end if;
  for day, intervals in select key, value from jsonb_each(hours) loop
    if day not in ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday') then
      return format('business_hours has an unknown weekday %L (use lowercase English names)', day);
    end if;
    if jsonb_typeof(intervals) = 'null' then
      continue;
    end if;
    if jsonb_typeof(intervals) <> 'array' then
      return format('business_hours.%s must be a list of {"open", "close"} intervals', day);
    end if;
    previous_close := null;
    for item in
      select value from jsonb_array_elements(intervals) order by value ->> 'open'
    loop
      -- `is distinct from`: a missing key gives null, which `<>` would let through.
      if jsonb_typeof(item) <> 'object'
         or jsonb_typeof(item -> 'open') is distinct from 'string'
         or jsonb_typeof(item -> 'close') is distinct from 'string' then
        return format('business_hours.%s intervals need "open" and "close" as HH:MM', day);
      end if;
      opens := parse_clock(item ->> 'open');
      closes := parse_clock(item ->> 'close');
      if opens is null or closes is null then
        return format('business_hours.%s has a time that is not HH:MM: %s', day, item::text);
      end if;
      if closes <= opens then
        return format('business_hours.%s closes before it opens: %s', day, item::text);
      end if;
      if previous_close is not null and opens < previous_close then
        return format('business_hours.%s has overlapping intervals', day);
      end if;
      previous_close := closes;
    end loop;
  end loop;
  return null;
end
$$;

-- call_scripts.conditions: when a script applies. All keys optional; an absent key matches
-- always. {"weekdays": ["monday", ...], "after": "HH:MM", "before": "HH:MM",
-- "open": true|false}. after/before form a local-time window [after, before) that wraps past
-- midnight when after > before; "open" matches the business being open (true) or closed
-- (false) by business_hours.
create or replace function script_conditions_problem(conditions jsonb) returns text
language plpgsql immutable as $$
declare
  key text;
begin
  if conditions is null or jsonb_typeof(conditions) = 'null' then
    return null;
  end if;
  if jsonb_typeof(conditions) <> 'object' then
    return 'conditions must be an object';
  end if;
  for key in select jsonb_object_keys(conditions) loop
    if key not in ('weekdays', 'after', 'before', 'open') then
      return format('conditions has an unknown key %L (known: weekdays, after, before, open)', key);
    end if;
  end loop;
  if conditions ? 'weekdays' and (
       jsonb_typeof(conditions -> 'weekdays') <> 'array'
       or exists (
         select 1 from jsonb_array_elements(conditions -> 'weekdays') d
         where jsonb_typeof(d) <> 'string' or d #>> '{}' not in
           ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday')
       )) then
    return 'conditions.weekdays must be a list of lowercase English weekday names';
  end if;
  if conditions ? 'after' and (jsonb_typeof(conditions -> 'after') <> 'string'
                               or parse_clock(conditions ->> 'after') is null) then
    return 'conditions.after must be HH:MM';
  end if;
  if conditions ? 'before' and (jsonb_typeof(conditions -> 'before') <> 'string'
                                or parse_clock(conditions ->> 'before') is null) then
    return 'conditions.before must be HH:MM';
  end if;
  if conditions ? 'open' and jsonb_typeof(conditions -> 'open') <> 'boolean' then
    return 'conditions.open must be true or false';
  end if;
  return null;
end
$$;

create or replace function is_e164(phone text) returns boolean
language sql immutable as $$ select phone ~ '^\+[1-9][0-9]{6,14}$' $$;

create or replace function agent_configurations_check() returns trigger
language plpgsql as $$
declare
  problem text;
  -- pg_timezone_names reads the zone files: only look when the zone is new or changed.
  old_timezone text := case when tg_op = 'UPDATE' then old.timezone end;
begin
  if btrim(coalesce(new.agent_id, '')) = '' then
    perform reject('agent_id must not be empty');
  end if;
  if new.timezone is null then
    perform reject('timezone must be an IANA zone name such as America/New_York');
  end if;
  -- A zone name, not merely something `at time zone` accepts: PostgreSQL also takes POSIX specs
  -- such as 'XYZ+3' or '+05:00', which Python's zoneinfo (the service's side) cannot load.
  if new.timezone is distinct from old_timezone
     and not exists (select 1 from pg_timezone_names where name = new.timezone) then
    perform reject(format('timezone %L is not a known IANA zone name', new.timezone));
  end if;
  problem := business_hours_problem(new.business_hours);
  if problem is not null then
    perform reject(problem);
  end if;
  if new.forward_number is not null and not is_e164(new.forward_number) then
    perform reject(format('forward_number must be in E.164 form, like +16175550142'));
  end if;
  if new.forward_enabled and new.forward_number is null then
    perform reject('forward_enabled needs a forward_number');
  end if;
  return new;
end
$$;

drop trigger if exists agent_configurations_check on agent_configurations;
create trigger agent_configurations_check before insert or update on agent_configurations
  for each row execute function agent_configurations_check();
drop trigger if exists agent_configurations_updated_at on agent_configurations;
create trigger agent_configurations_updated_at before update on agent_configurations
  for each row execute function set_updated_at();

-- A child row belongs to the same user as the configuration it hangs from: filled in when
-- omitted, rejected when it names someone else (row level security relies on it).
-- PL/pgSQL rather than SQL: its query is planned once per session, where a SQL function that
-- reads a table (never inlined) is parsed and planned again on every call.
create or replace function owner_of_configuration(configuration_id uuid) returns uuid
language plpgsql stable as $$
declare
  owner uuid;
begin
  select c.user_id into owner from agent_configurations c
  where c.id = owner_of_configuration.configuration_id;
  return owner;
end
$$;

create or replace function staff_members_check() returns trigger
language plpgsql as $$
declare
  owner uuid := owner_of_configuration(new.agent_configuration_id);
begin
  if owner is null then
    perform reject('staff member must belong to an existing agent configuration');
  end if;
  new.user_id := coalesce(new.user_id, owner);
  if new.user_id <> owner then
    perform reject('staff member user_id must match its agent configuration''s user_id');
  end if;
  if btrim(coalesce(new.staff_name, '')) = '' then
    perform reject('staff_name must not be empty');
  end if;
  if new.default_appointment_duration is null
     or new.default_appointment_duration not between 1 and 1440 then
    perform reject('default_appointment_duration must be between 1 and 1440 minutes');
  end if;
  if coalesce(new.buffer_time_before, 0) < 0 or coalesce(new.buffer_time_after, 0) < 0 then
    perform reject('buffer times must not be negative');
  end if;
  if coalesce(new.buffer_time_before, 0) > 1440 or coalesce(new.buffer_time_after, 0) > 1440 then
    perform reject('buffer times must be at most 1440 minutes');
  end if;
  new.buffer_time_before := coalesce(new.buffer_time_before, 0);
  new.buffer_time_after := coalesce(new.buffer_time_after, 0);
  return new;
end
$$;

drop trigger if exists staff_members_check on staff_members;
create trigger staff_members_check before insert or update on staff_members
  for each row execute function staff_members_check();
drop trigger if exists staff_members_updated_at on staff_members;
create trigger staff_members_updated_at before update on staff_members
  for each row execute function set_updated_at();

create or replace function staff_availability_check() returns trigger
language plpgsql as $$
begin
  if new.day_of_week not between 0 and 6 then
    perform reject(format('day_of_week must be 0 (Sunday) to 6 (Saturday), not %s', new.day_of_week));
  end if;
  if new.start_time = time '24:00' then
    perform reject('availability start_time must be before 24:00');
  end if;
  -- 00:00 as an end means midnight at the close of the day (PostgreSQL also accepts 24:00).
  if new.end_time <> time '24:00' and new.end_time <= new.start_time
     and not (new.end_time = time '00:00') then
    perform reject('availability end_time must be after start_time');
  end if;
  if new.end_time = time '00:00' then
    new.end_time := time '24:00';
  end if;
  if (new.break_start_time is null) <> (new.break_end_time is null) then
    perform reject('a break needs both break_start_time and break_end_time');
  end if;
  if new.break_start_time is not null then
    if new.break_end_time <= new.break_start_time then
      perform reject('break_end_time must be after break_start_time');
    end if;
    if new.break_start_time < new.start_time or new.break_end_time > new.end_time then
      perform reject('the break must lie inside the working hours');
    end if;
  end if;
  return new;
end
$$;

drop trigger if exists staff_availability_check on staff_availability;
create trigger staff_availability_check before insert or update on staff_availability
  for each row execute function staff_availability_check();
drop trigger if exists staff_availability_updated_at on staff_availability;
create trigger staff_availability_updated_at before update on staff_availability
  for each row execute function set_updated_at();

create or replace function staff_time_off_check() returns trigger
language plpgsql as $$
begin
  if new.end_date < new.start_date then
    perform reject('time off end_date must not be before start_date');
  end if;
  new.is_full_day := coalesce(new.is_full_day, true);
  if not new.is_full_day then
    if new.start_time is null or new.end_time is null then
      perform reject('partial-day time off needs start_time and end_time');
    end if;
    if new.end_time = time '00:00' then
      new.end_time := time '24:00';
    end if;
    if new.end_time <= new.start_time then
      perform reject('time off end_time must be after start_time');
    end if;
  end if;
  return new;
end
$$;

drop trigger if exists staff_time_off_check on staff_time_off;
create trigger staff_time_off_check before insert or update on staff_time_off
  for each row execute function staff_time_off_check();
drop trigger if exists staff_time_off_updated_at on staff_time_off;
create trigger staff_time_off_updated_at before update on staff_time_off
  for each row execute function set_updated_at();

-- The key of a staff member's booking lock (lock_staff). A function of its own because
-- appointments_guard, which runs with a signed-in user's rights too, takes the lock by its key:
-- no user needs the right to call lock_staff.
create or replace function staff_lock_key(staff_id uuid) returns bigint
language sql immutable as $$
  select hashtextextended('staff:' || staff_id::text, 0)
$$;

-- The per-staff lock every writer of appointments takes before deciding on overlap. Taken in
-- the same transaction as the check, it turns check-then-insert into a safe sequence.
create or replace function lock_staff(staff_id uuid) returns void
language sql as $$
  select pg_advisory_xact_lock(staff_lock_key(staff_id))
$$;

-- Every appointment row's checks, owner and instants, and the overlap test under the staff
-- member's lock. The overlap test reads the btree idx_appointments_staff_starts (the staff
-- member's appointments that start within the day before the new one) instead of the exclusion
-- constraint's GiST index, which visited ~30 pages per booking where the btree visits ~3 (~40 ->
-- ~13 us). Nothing the exact test (&&) can match is left out: this trigger holds every row to at
-- most 1440 minutes, so an appointment that started a day or more before the new one has ended
-- by then. The exclusion constraint still stands behind it for any writer.
create or replace function appointments_guard() returns trigger
language plpgsql as $$
declare
  staff record;
  local_start timestamp;
begin
  if new.status not in ('scheduled', 'confirmed', 'cancelled', 'completed', 'no_show') then
    perform reject(format('unknown appointment status %L', new.status));
  end if;
  if new.appointment_time = time '24:00' then
    perform reject('appointment_time must be before 24:00 (use 00:00 of the next day)');
  end if;
  if new.duration_minutes is null or new.duration_minutes not between 1 and 1440 then
    perform reject('duration_minutes must be between 1 and 1440');
  end if;
  if btrim(coalesce(new.patient_name, '')) = '' then
    perform reject('patient_name must not be empty');
  end if;
  if btrim(coalesce(new.patient_phone, '')) = '' then
    perform reject('patient_phone must not be empty');
  end if;

  -- The same inner join, as a nested loop: on small tables the planner hashed both of them
  -- for the one row (~18 us against ~5).
  select s.user_id, c.timezone into staff
  from staff_members s,
       lateral (select c.timezone from agent_configurations c
                where c.id = s.agent_configuration_id offset 0) c
  where s.id = new.staff_member_id;
  if not found then
    perform reject('appointment must name an existing staff member');
  end if;
  new.user_id := coalesce(new.user_id, staff.user_id);
  if new.user_id <> staff.user_id then
    perform reject('appointment user_id must match its staff member''s user_id');
  end if;

  local_start := new.appointment_date + new.appointment_time;
  new.starts_at := local_start at time zone staff.timezone;
  -- A wall-clock time that occurs twice (fall back) means its first occurrence.
  if ((new.starts_at - interval '1 hour') at time zone staff.timezone) = local_start then
    new.starts_at := new.starts_at - interval '1 hour';
  end if;
  new.ends_at := new.starts_at + make_interval(mins => new.duration_minutes);

  if new.status <> 'cancelled' then
    perform pg_advisory_xact_lock(staff_lock_key(new.staff_member_id));
    if exists (
      select 1 from appointments a
      where a.staff_member_id = new.staff_member_id
        and a.status <> 'cancelled'
        and a.id <> new.id
        and a.starts_at < new.ends_at
        and a.starts_at > new.starts_at - interval '1440 minutes'
        and tstzrange(a.starts_at, a.ends_at) && tstzrange(new.starts_at, new.ends_at)
    ) then
      raise exception using
        errcode = 'exclusion_violation',
        message = 'this staff member already has an appointment at that time',
        constraint = 'appointments_no_overlap';
    end if;
  end if;
  return new;
end
$$;

drop trigger if exists appointments_guard on appointments;
create trigger appointments_guard before insert or update on appointments
  for each row execute function appointments_guard();
drop trigger if exists appointments_updated_at on appointments;
create trigger appointments_updated_at before update on appointments
  for each row execute function set_updated_at();

-- Moving a clinic to another zone moves its appointments' instants with it.
create or replace function agent_configurations_rezone() returns trigger
language plpgsql as $$
begin
  update appointments a set starts_at = a.starts_at
  from staff_members s
  where s.agent_configuration_id = new.id and a.staff_member_id = s.id;
  return null;
end
$$;

drop trigger if exists agent_configurations_rezone on agent_configurations;
create trigger agent_configurations_rezone after update of timezone on agent_configurations
  for each row when (old.timezone is distinct from new.timezone)
  execute function agent_configurations_rezone();

create or replace function voicemails_check() returns trigger
language plpgsql as $$
declare
  owner uuid := owner_of_configuration(new.agent_configuration_id);
begin
  if owner is null then
    perform reject('voicemail must belong to an existing agent configuration');
  end if;
  new.user_id := coalesce(new.user_id, owner);
  if new.user_id <> owner then
    perform reject('voicemail user_id must match its agent configuration''s user_id');
  end if;
  new.message_type := coalesce(new.message_type, 'voicemail');
  new.priority := coalesce(new.priority, 'normal');
  new.status := coalesce(new.status, 'unread');
  if new.message_type not in ('voicemail', 'callback_request', 'information_request') then
    perform reject(format('unknown message_type %L', new.message_type));
  end if;
  if new.priority not in ('low', 'normal', 'high', 'urgent') then
    perform reject(format('unknown priority %L', new.priority));
  end if;
  if new.status not in ('unread', 'read', 'archived', 'deleted') then
    perform reject(format('unknown voicemail status %L', new.status));
  end if;
  if new.duration_seconds is not null and new.duration_seconds < 0 then
    perform reject('duration_seconds must not be negative');
  end if;
  if btrim(coalesce(new.caller_phone, '')) = '' then
    perform reject('caller_phone must not be empty');
  end if;
  new.is_urgent := coalesce(new.is_urgent, false) or new.priority = 'urgent';
  if new.is_urgent then
    new.priority := 'urgent';
  end if;
  if new.status = 'read' and new.read_at is null then
    new.read_at := now();
  end if;
  return new;
end
$$;

drop trigger if exists voicemails_check on voicemails;
create trigger voicemails_check before insert or update on voicemails
  for each row execute function voicemails_check();

create or replace function call_scripts_check() returns trigger
language plpgsql as $$
declare
  owner uuid;
  problem text;
begin
  if new.agent_configuration_id is not null then
    owner := owner_of_configuration(new.agent_configuration_id);
    if owner is null then
      perform reject('call script must belong to an existing agent configuration');
    end if;
    new.user_id := coalesce(new.user_id, owner);
    if new.user_id <> owner then
      perform reject('call script user_id must match its agent configuration''s user_id');
    end if;
  end if;
  if new.script_type not in ('greeting', 'appointment', 'information', 'emergency', 'after_hours') then
    perform reject(format('unknown script_type %L', new.script_type));
  end if;
  if btrim(coalesce(new.script_content, '')) = '' then
    perform reject('script_content must not be empty');
  end if;
  problem := script_conditions_problem(new.conditions);
  if problem is not null then
    perform reject(problem);
  end if;
  return new;
end
$$;

drop trigger if exists call_scripts_check on call_scripts;
create trigger call_scripts_check before insert or update on call_scripts
  for each row execute function call_scripts_check();
drop trigger if exists call_scripts_updated_at on call_scripts;
create trigger call_scripts_updated_at before update on call_scripts
  for each row execute function set_updated_at();

create or replace function customer_call_logs_check() returns trigger
language plpgsql as $$
declare
  owner uuid;
begin
  if new.duration_ms is not null and new.duration_ms < 0 then
    perform reject('duration_ms must not be negative');
  end if;
  if new.started_at is not null and new.ended_at is not null and new.ended_at < new.started_at then
    perform reject('a call cannot end before it starts');
  end if;
  -- Like every child of a configuration: its owner's, or refused (a call log naming another
  -- user's configuration would show that clinic's calls to the wrong person).
  if new.agent_configuration_id is not null then
    owner := owner_of_configuration(new.agent_configuration_id);
    if owner is null then
      perform reject('call log must belong to an existing agent configuration');
    end if;
    new.user_id := coalesce(new.user_id, owner);
    if new.user_id <> owner then
      perform reject('call log user_id must match its agent configuration''s user_id');
    end if;
  end if;
  return new;
end
$$;

drop trigger if exists customer_call_logs_check on customer_call_logs;
create trigger customer_call_logs_check before insert or update on customer_call_logs
  for each row execute function customer_call_logs_check();
drop trigger if exists customer_call_logs_updated_at on customer_call_logs;
create trigger customer_call_logs_updated_at before update on customer_call_logs
  for each row execute function set_updated_at();
drop trigger if exists profiles_updated_at on profiles;
create trigger profiles_updated_at before update on profiles
  for each row execute function set_updated_at();
