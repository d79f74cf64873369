-- The scheduling rules as database functions: one definition of "free" that availability and
-- booking both use, so the service never offers a slot it then refuses. CONTRACT.md section 4.
--
-- Performance (bench/NOTES.md). The planner's estimates for the rx_ functions' queries are rough
-- (generate_series and jsonb_array_elements count as 1,000 and 100 rows), which made every call
-- pay for JIT compilation (hundreds of milliseconds) and a fresh plan: they run with jit off, and
-- those whose plans do not depend on the argument values plan once per session and reuse the
-- plan (plan_cache_mode = force_generic_plan). rx_check_availability is in 04_availability_cache.

create or replace function weekday_name(d date) returns text
language sql immutable as $$
  select (array['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'])
         [extract(dow from d)::int + 1]
$$;

-- Whether the business is open at an instant by its business_hours (null: always open).
-- PL/pgSQL: as an SQL function, its `exists` subquery kept it from being inlined, so
-- forward_call (and the inbound webhook) parsed and planned it on every call (~0.2 ms); PL/pgSQL
-- plans the same expression once per session.
create or replace function business_open_at(hours jsonb, tz text, at timestamptz) returns boolean
language plpgsql stable as $$
begin
  return hours is null or jsonb_typeof(hours) = 'null' or exists (
    select 1
    from jsonb_array_elements(
      case when jsonb_typeof(hours -> weekday_name((at at time zone tz)::date)) = 'array'
           then hours -> weekday_name((at at time zone tz)::date) else '[]'::jsonb end
    ) i
    where time_of((at at time zone tz)::time) >= parse_clock(i ->> 'open')
      and time_of((at at time zone tz)::time) < parse_clock(i ->> 'close')
  );
end
$$;

-- Rules 2, 3 and the full-day half of 5: each staff member's working windows on each local date,
-- as offsets from local midnight, split by breaks and cut to business hours.
create or replace function working_windows(
  p_configuration_id uuid, p_staff_ids uuid[], p_from date, p_to date
) returns table (staff_member_id uuid, local_date date, opens interval, closes interval)
language sql stable as $$
  with days as (
    select d::date as local_date from generate_series(p_from, p_to, interval '1 day') d
  ),
  cfg as (
    select c.business_hours, (c.business_hours is null or jsonb_typeof(c.business_hours) = 'null')
           as unrestricted
    from agent_configurations c where c.id = p_configuration_id
  ),
  rows as (
    select a.staff_member_id, days.local_date,
           time_of(a.start_time) as s, time_of(a.end_time) as e,
           time_of(a.break_start_time) as bs, time_of(a.break_end_time) as be
    from days
    join staff_availability a on a.day_of_week = extract(dow from days.local_date)::int
    where a.staff_member_id = any(p_staff_ids) and a.is_active
      and not exists (
        select 1 from staff_time_off t
        where t.staff_member_id = a.staff_member_id and t.is_active and t.is_full_day
          and days.local_date between t.start_date and t.end_date
      )
  ),
  split as (
    select staff_member_id, local_date, s as opens, coalesce(bs, e) as closes from rows
    union all
    select staff_member_id, local_date, be, e from rows where be is not null
  ),
  -- Materialized: the business hours of each date are parsed once, not once per window.
  hours as materialized (
    select days.local_date, parse_clock(i ->> 'open') as opens, parse_clock(i ->> 'close') as closes
    from days, cfg,
         jsonb_array_elements(
           case when jsonb_typeof(cfg.business_hours -> weekday_name(days.local_date)) = 'array'
                then cfg.business_hours -> weekday_name(days.local_date) else '[]'::jsonb end
         ) i
    where not cfg.unrestricted
  )
  select w.staff_member_id, w.local_date, w.opens, w.closes
  from split w, cfg
  where cfg.unrestricted and w.opens < w.closes
  union all
  select w.staff_member_id, w.local_date, greatest(w.opens, h.opens), least(w.closes, h.closes)
  from split w join hours h on h.local_date = w.local_date, cfg
  where not cfg.unrestricted and greatest(w.opens, h.opens) < least(w.closes, h.closes)
$$;

-- Rules 1-8: the free slots of the given staff members between two local dates. With p_at null
-- the candidates are each window's grid (rule 4); with p_at set, the one local time p_at on each
-- date, when [p_at, p_at + D) lies inside one window (a booking off the grid). p_ignore leaves
-- one appointment out of the busy time (the one being moved).
create or replace function free_slots(
  p_configuration_id uuid,
  p_staff_ids uuid[],
  p_from date,
  p_to date,
  p_duration integer,
  p_not_before timestamptz,
  p_at time default null,
  p_ignore uuid default null
) returns table (
  staff_member_id uuid, staff_name text, local_date date, local_time time,
  starts_at timestamptz, duration_minutes integer
)
language sql stable as $$
  with cfg as (
    select c.timezone as tz from agent_configurations c where c.id = p_configuration_id
  ),
  staff as (
    select s.id, s.staff_name::text as staff_name,
           coalesce(p_duration, s.default_appointment_duration) as d,
           s.buffer_time_before as before_min, s.buffer_time_after as after_min
    from staff_members s
    where s.id = any(p_staff_ids) and s.agent_configuration_id = p_configuration_id
      and s.is_active and s.is_bookable
  ),
  -- Materialized: computed once, not once per staff member by a nested loop.
  working as materialized (
    select w.* from working_windows(p_configuration_id, p_staff_ids, p_from, p_to) w
  ),
  windows as (
    select w.*, st.staff_name, st.d, st.before_min, st.after_min,
           local_bound(w.local_date + w.closes, cfg.tz) as window_end
    from working w
    join staff st on st.id = w.staff_member_id, cfg
  ),
  -- Rule 6's appointments, read once through idx_appointments_staff_starts rather than per
  -- candidate: any appointment that can touch a candidate on these dates starts within four
  -- days of them (durations and buffers are at most a day each, zones within 15 h of UTC).
  busy as materialized (
    select a.staff_member_id, a.starts_at, a.ends_at
    from appointments a
    where a.staff_member_id = any(p_staff_ids)
      and a.status <> 'cancelled'
      and a.id is distinct from p_ignore
      and a.starts_at > (p_from - 4)::timestamp at time zone 'UTC'
      and a.starts_at < (p_to + 5)::timestamp at time zone 'UTC'
  ),
  -- Rule 5's partial days off as instants, once for each date they cover.
  time_off as materialized (
    select t.staff_member_id, d::date as local_date,
           local_bound(d::date + t.start_time, cfg.tz) as starts_at,
           local_bound(d::date + t.end_time, cfg.tz) as ends_at
    from staff_time_off t, cfg,
         generate_series(greatest(t.start_date, p_from), least(t.end_date, p_to), interval '1 day') d
    where t.staff_member_id = any(p_staff_ids) and t.is_active and not t.is_full_day
      and t.start_date <= p_to and t.end_date >= p_from
  ),
  -- The grid runs up to the window's wall-clock end; whether a start fits is decided in real
  -- minutes below (a window over the hour that repeats, fall back, holds an hour more).
  offsets as (
    select w.*, o - w.local_date as local_offset
    from windows w,
         generate_series(w.local_date + w.opens, w.local_date + w.closes - interval '1 minute',
                         make_interval(mins => w.d)) o
    where p_at is null
    union all
    select w.*, time_of(p_at)
    from windows w
    where p_at is not null and time_of(p_at) >= w.opens and time_of(p_at) < w.closes
  ),
  -- Materialized: each candidate's instant is computed once, not in every test that uses it.
  candidates as materialized (
    select o.*, local_instant(o.local_date + o.local_offset, cfg.tz) as starts_at
    from offsets o, cfg
  )
  select c.staff_member_id, c.staff_name, c.local_date, (time '00:00' + c.local_offset)::time,
         c.starts_at, c.d
  from candidates c
  where c.starts_at is not null
    and c.starts_at >= p_not_before
    and c.starts_at + make_interval(mins => c.d) <= c.window_end
    -- Rule 6: buffers on both sides; the bound on starts_at lets the index find the neighbours.
    and not exists (
      select 1 from busy a
      where a.staff_member_id = c.staff_member_id
        and a.starts_at < c.starts_at + make_interval(mins => c.d + c.after_min + c.before_min)
        and a.starts_at > c.starts_at - make_interval(mins => c.after_min + c.before_min + 1440)
        and a.ends_at > c.starts_at - make_interval(mins => c.after_min + c.before_min)
    )
    -- Rule 5, partial days: busy time on the candidate's own date.
    and not exists (
      select 1 from time_off t
      where t.staff_member_id = c.staff_member_id and t.local_date = c.local_date
        and t.starts_at < c.starts_at + make_interval(mins => c.d) and t.ends_at > c.starts_at
    )
$$;

-- Caller-spoken staff names: case-insensitive, a leading title (Dr, Dr., Doctor) ignored.
create or replace function normalize_person_name(name text) returns text
language sql immutable as $$
  select btrim(regexp_replace(
    regexp_replace(lower(btrim(coalesce(name, ''))), '^(dr\.?|doctor)\s+', ''),
    '[\s,]+', ' ', 'g'))
$$;

-- Whether a spoken name names a person, both already normalized: the whole name, or one of
-- its words (dots ignored).
create or replace function normalized_name_matches(spoken text, full_name text) returns boolean
language sql immutable as $$
  select spoken <> '' and (
    spoken = full_name
    or spoken = any(string_to_array(regexp_replace(full_name, '\.', '', 'g'), ' '))
    or regexp_replace(spoken, '\.', '', 'g')
       = any(string_to_array(regexp_replace(full_name, '\.', '', 'g'), ' '))
  )
$$;

create or replace function name_matches(spoken text, full_name text) returns boolean
language sql immutable as $$
  select normalized_name_matches(normalize_person_name(spoken), normalize_person_name(full_name))
$$;

-- The bookable staff members a request names: {"ids": [...], "names": [...]} when it names at
-- least one, else {"problem": "unknown_staff" | "ambiguous_staff" | "unknown_role",
-- "choices": [...]}. Another clinic's staff are never among them.
create or replace function resolve_staff(
  p_configuration_id uuid, p_name text, p_staff_id uuid, p_role text
) returns jsonb
language plpgsql stable as $$
declare
  matched jsonb;
  -- name_matches(p_name, staff_name), with each side normalized once rather than in every test.
  spoken text := normalize_person_name(p_name);
begin
  select jsonb_build_object(
           'ids', coalesce(jsonb_agg(s.id order by s.staff_name, s.id), '[]'::jsonb),
           'names', coalesce(jsonb_agg(s.staff_name order by s.staff_name, s.id), '[]'::jsonb))
    into matched
  from staff_members s,
       -- offset 0: computed once per row, not once per use.
       lateral (select case when p_name is not null then normalize_person_name(s.staff_name) end
                       as full_name offset 0) n
  where s.agent_configuration_id = p_configuration_id and s.is_active and s.is_bookable
    and (p_staff_id is null or s.id = p_staff_id)
    and (p_name is null or normalized_name_matches(spoken, n.full_name))
    and (p_role is null or lower(s.staff_role) = lower(p_role)
         or lower(s.staff_role) || 's' = lower(p_role));

  if jsonb_array_length(matched -> 'ids') = 0 then
    if p_role is not null and p_name is null and p_staff_id is null then
      return jsonb_build_object('problem', 'unknown_role', 'choices', (
        select coalesce(jsonb_agg(distinct s.staff_role), '[]'::jsonb) from staff_members s
        where s.agent_configuration_id = p_configuration_id and s.is_active and s.is_bookable
          and s.staff_role is not null));
    end if;
    -- Only read when needed: a request that names staff we know never pays for this list.
    return jsonb_build_object('problem', 'unknown_staff', 'choices', (
      select coalesce(jsonb_agg(s.staff_name order by s.staff_name), '[]'::jsonb)
      from staff_members s
      where s.agent_configuration_id = p_configuration_id and s.is_active and s.is_bookable));
  end if;
  if p_name is not null and p_staff_id is null and jsonb_array_length(matched -> 'ids') > 1 then
    return jsonb_build_object('problem', 'ambiguous_staff', 'choices', matched -> 'names');
  end if;
  return matched;
end
$$;

create or replace function slot_json(staff_member_id uuid, staff_name text, local_date date,
                          local_time time, starts_at timestamptz) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'start', starts_at, 'date', local_date, 'time', to_char(local_time, 'HH24:MI'),
    'staff_member_id', staff_member_id, 'staff_name', staff_name)
$$;

-- The active configuration behind a Retell agent id (all fields null when there is none).
-- PL/pgSQL rather than SQL: its query is planned once per session, where a SQL function that
-- can't be inlined (this one reads a table) is parsed and planned again on every call.
create or replace function configuration_for_agent(p_agent_id text) returns agent_configurations
language plpgsql stable as $$
declare
  found_cfg agent_configurations;
begin
  select c.* into found_cfg from agent_configurations c
  where c.agent_id = p_agent_id and c.is_active;
  return found_cfg;
end
$$;

-- The call's customer_call_logs row, created when the call's webhook has not arrived yet; null
-- when the call id is another configuration's (nothing of this call is linked to its row).
create or replace function ensure_call_log(cfg agent_configurations, p_call jsonb) returns uuid
language plpgsql as $$
declare
  log_id uuid;
  call_id text := nullif(p_call ->> 'call_id', '');
begin
  if call_id is null then
    return null;
  end if;
  select l.id into log_id from customer_call_logs l
  where l.retell_call_id = call_id and l.agent_configuration_id = cfg.id;
  if log_id is not null then
    return log_id;
  end if;
  insert into customer_call_logs (
    retell_call_id, agent_configuration_id, user_id, agent_id, call_type, direction,
    from_number, to_number, call_status, started_at
  ) values (
    call_id, cfg.id, cfg.user_id, cfg.agent_id, p_call ->> 'call_type', p_call ->> 'direction',
    phone_number_or_null(p_call ->> 'from_number'), phone_number_or_null(p_call ->> 'to_number'),
    coalesce(p_call ->> 'call_status', 'ongoing'),
    case when jsonb_typeof(p_call -> 'start_timestamp') = 'number'
         then to_timestamp((p_call ->> 'start_timestamp')::numeric / 1000) end
  )
  on conflict (retell_call_id) do nothing
  returning id into log_id;
  if log_id is null then
    select l.id into log_id from customer_call_logs l
    where l.retell_call_id = call_id and l.agent_configuration_id = cfg.id;
  end if;
  return log_id;
end
$$;

-- Refusals shared by every date a caller names: the past, and beyond the booking horizon, with
-- the clinic's today and zone for the sentence; null when the date is fine.
-- Stable, as jsonb_build_object is: a SQL function declared more constant than its body is never
-- inlined, and runs as a separately planned statement on every call.
create or replace function date_problem(p_date date, p_today date, p_timezone text) returns jsonb
language sql stable as $$
  select case
    when p_date < p_today
      then jsonb_build_object('problem', 'past_date', 'today', p_today, 'timezone', p_timezone)
    when p_date > p_today + 366
      then jsonb_build_object('problem', 'too_far', 'today', p_today, 'timezone', p_timezone)
  end
$$;

-- Up to three free slots nearest to a wanted instant, within the week from its date.
create or replace function nearest_slots(
  cfg agent_configurations, p_staff_ids uuid[], p_date date, p_wanted timestamptz,
  p_duration integer, p_not_before timestamptz, p_ignore uuid default null
) returns jsonb
language sql stable as $$
  select coalesce(jsonb_agg(slot_json(n.staff_member_id, n.staff_name, n.local_date,
                                      n.local_time, n.starts_at)
                            order by n.starts_at, n.staff_name), '[]'::jsonb)
  from (
    select f.* from free_slots(cfg.id, p_staff_ids, p_date, p_date + 6, p_duration,
                               p_not_before, null, p_ignore) f
    order by abs(extract(epoch from f.starts_at - p_wanted)), f.starts_at, f.staff_name
    limit 3
  ) n
$$;

-- Why a wanted time can't be had with any of the staff: outside their hours, too soon, or taken.
create or replace function refusal_reason(
  cfg agent_configurations, p_staff_ids uuid[], p_date date, p_time time, p_duration integer,
  p_wanted timestamptz, p_not_before timestamptz
) returns text
language sql stable as $$
  select case
    when p_wanted is null then 'nonexistent_time'
    when p_wanted < p_not_before then 'too_soon'
    when not exists (
      select 1 from working_windows(cfg.id, p_staff_ids, p_date, p_date) w
      join staff_members s on s.id = w.staff_member_id
      where time_of(p_time) >= w.opens and time_of(p_time) < w.closes
        and p_wanted + make_interval(mins => coalesce(p_duration, s.default_appointment_duration))
            <= local_bound(p_date + w.closes, cfg.timezone)
    ) then 'outside_hours'
    else 'taken'
  end
$$;

create or replace function appointment_json(a appointments, staff_name text) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'appointment_id', a.id, 'date', a.appointment_date,
    'time', to_char(a.appointment_time, 'HH24:MI'), 'start', a.starts_at,
    'staff_member_id', a.staff_member_id, 'staff_name', staff_name,
    'appointment_type', a.appointment_type, 'status', a.status,
    'patient_name', a.patient_name, 'duration_minutes', a.duration_minutes)
$$;

-- Book into the first named staff member (by name) who is free at the wanted time; the check
-- then the insert run under the staff members' locks. The call's log row is created only when
-- the booking is made: a refused request writes nothing.
create or replace function book_into(
  cfg agent_configurations, p_staff jsonb, p_args jsonb, p_call jsonb, p_now timestamptz,
  p_min_notice integer, p_move uuid default null
) returns jsonb
language plpgsql as $$
declare
  wanted_date date := (p_args ->> 'date')::date;
  wanted_time time := (p_args ->> 'time')::time;
  duration integer := (p_args ->> 'duration_minutes')::int;
  not_before timestamptz := p_now + make_interval(mins => p_min_notice);
  wanted timestamptz := local_instant(wanted_date + wanted_time, cfg.timezone);
  staff_ids uuid[] := array(select jsonb_array_elements_text(p_staff -> 'ids')::uuid);
  staff_id uuid;
  booked appointments;
  slot record;
  call_log uuid;
begin
  -- Every staff member the request could book is locked before anything is read, always in
  -- (staff_name, id) order, so two bookings can't deadlock and the check sees committed rows.
  foreach staff_id in array staff_ids loop
    perform lock_staff(staff_id);
  end loop;
  -- Read under the locks, so a concurrent retry of this call's booking has committed by now.
  select l.id into call_log from customer_call_logs l
  where l.retell_call_id = nullif(p_call ->> 'call_id', '') and l.agent_configuration_id = cfg.id;
  if p_move is null and call_log is not null then
    -- A retry of a booking this call already made (the same patient at the same time) answers
    -- with that booking, whichever of the staff members it went to. Another patient at that
    -- time, a parent's second child, is a booking of their own.
    select a.* into booked from appointments a
    where a.call_log_id = call_log and a.staff_member_id = any(staff_ids)
      and a.appointment_date = wanted_date and a.appointment_time = wanted_time
      and a.status <> 'cancelled'
      and a.patient_phone = p_args ->> 'patient_phone'
      and lower(btrim(a.patient_name)) = lower(btrim(p_args ->> 'patient_name'))
    order by a.created_at, a.id
    limit 1;
    if booked.id is not null then
      return jsonb_build_object('booked', true, 'replayed', true,
                                'appointment', appointment_json(booked, (
                                  select s.staff_name from staff_members s
                                  where s.id = booked.staff_member_id)));
    end if;
  end if;
  foreach staff_id in array staff_ids loop
    select f.* into slot
    from free_slots(cfg.id, array[staff_id], wanted_date, wanted_date, duration, not_before,
                    wanted_time, p_move) f
    limit 1;
    if slot.staff_member_id is not null then
      if p_move is null then
        call_log := coalesce(call_log, ensure_call_log(cfg, p_call));
        insert into appointments (
          user_id, staff_member_id, call_log_id, patient_name, patient_phone, patient_email,
          appointment_date, appointment_time, duration_minutes, appointment_type, notes,
          special_requests
        ) values (
          cfg.user_id, staff_id, call_log, p_args ->> 'patient_name', p_args ->> 'patient_phone',
          p_args ->> 'patient_email', wanted_date, wanted_time, slot.duration_minutes,
          p_args ->> 'appointment_type', p_args ->> 'notes', p_args ->> 'special_requests'
        ) returning * into booked;
      else
        update appointments set staff_member_id = staff_id, appointment_date = wanted_date,
               appointment_time = wanted_time, duration_minutes = slot.duration_minutes,
               rescheduled_from_date = appointment_date, rescheduled_from_time = appointment_time
        where id = p_move
        returning * into booked;
      end if;
      return jsonb_build_object('booked', true, 'replayed', false,
                                'appointment', appointment_json(booked, slot.staff_name));
    end if;
  end loop;
  return jsonb_build_object(
    'booked', false,
    'reason', refusal_reason(cfg, staff_ids, wanted_date, wanted_time, duration, wanted, not_before),
    'alternatives', nearest_slots(cfg, staff_ids, wanted_date,
                                  local_bound(wanted_date + wanted_time, cfg.timezone),
                                  duration, not_before, p_move));
end
$$;

create or replace function rx_book_appointment(
  p_agent_id text, p_call jsonb, p_args jsonb, p_now timestamptz, p_min_notice integer
) returns jsonb
language plpgsql
set jit = off set plan_cache_mode = force_generic_plan
as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  today date;
  refusal jsonb;
  staff jsonb;
  booking jsonb;
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  perform set_config('TimeZone', cfg.timezone, true);
  today := (p_now at time zone cfg.timezone)::date;
  refusal := date_problem((p_args ->> 'date')::date, today, cfg.timezone);
  if refusal is not null then
    return refusal;
  end if;
  staff := resolve_staff(cfg.id, p_args ->> 'staff_name', (p_args ->> 'staff_member_id')::uuid,
                         p_args ->> 'staff_role');
  if staff ? 'problem' then
    return staff || jsonb_build_object('timezone', cfg.timezone);
  end if;
  booking := book_into(cfg, staff, p_args, p_call, p_now, p_min_notice);
  -- Notifications (09_notifications): for a booking made now, not for a retry's replay.
  if booking ->> 'replayed' = 'false' then
    perform enqueue_appointment_notice(cfg, 'appointment.booked', booking -> 'appointment', null);
  end if;
  return booking || jsonb_build_object('timezone', cfg.timezone, 'today', today);
end
$$;

-- The caller's own appointments: booked under the call's number (own_phone, which the service
-- fills in from the call, never from the caller's words), or under another number only together
-- with the patient's name (case-insensitive). A web call, with no number, gives both.
create or replace function caller_appointments(
  cfg agent_configurations, p_call jsonb, p_args jsonb
) returns setof appointments
language sql stable as $$
  with who as (
    select nullif(p_args ->> 'own_phone', '') as own_phone,
           nullif(p_args ->> 'patient_phone', '') as given_phone,
           nullif(btrim(p_args ->> 'patient_name'), '') as given_name
  )
  select a.*
  from appointments a
  join staff_members s on s.id = a.staff_member_id, who
  where s.agent_configuration_id = cfg.id
    and (
      (who.own_phone is not null and a.patient_phone = who.own_phone
       and (who.given_phone is null or who.given_phone = who.own_phone)
       and (who.given_name is null or name_matches(who.given_name, a.patient_name)))
      or (who.given_phone is not null and who.given_name is not null
          and a.patient_phone = who.given_phone
          and lower(btrim(a.patient_name)) = lower(who.given_name))
    )
$$;

create or replace function rx_find_appointments(
  p_agent_id text, p_call jsonb, p_args jsonb, p_now timestamptz, p_min_notice integer
) returns jsonb
language plpgsql
set jit = off
as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  found jsonb;
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  perform set_config('TimeZone', cfg.timezone, true);
  select coalesce(jsonb_agg(appointment_json(a, s.staff_name) order by a.starts_at), '[]'::jsonb)
    into found
  from (
    select * from caller_appointments(cfg, p_call, p_args) c
    where c.status in ('scheduled', 'confirmed') and c.starts_at >= p_now
    order by c.starts_at limit 20
  ) a join staff_members s on s.id = a.staff_member_id;
  return jsonb_build_object('timezone', cfg.timezone, 'appointments', found,
                            'today', (p_now at time zone cfg.timezone)::date);
end
$$;

-- The one appointment a cancel or reschedule names: by id, or by date (and time) among the
-- caller's upcoming ones. {"appointment": ...} or {"problem": ..., "choices": [...]}.
create or replace function select_appointment(
  cfg agent_configurations, p_call jsonb, p_args jsonb, p_now timestamptz, p_lock boolean
) returns jsonb
language plpgsql as $$
declare
  picked appointments;
  matches jsonb;
  n integer;
begin
  if p_args ? 'appointment_id' then
    select a.* into picked from caller_appointments(cfg, p_call, p_args) a
    where a.id = (p_args ->> 'appointment_id')::uuid;
    if picked.id is null then
      return jsonb_build_object('problem', 'appointment_not_found');
    end if;
  else
    select count(*), coalesce(jsonb_agg(appointment_json(a, s.staff_name) order by a.starts_at), '[]')
      into n, matches
    from caller_appointments(cfg, p_call, p_args) a
    join staff_members s on s.id = a.staff_member_id
    where a.status in ('scheduled', 'confirmed') and a.starts_at >= p_now
      and a.appointment_date = (p_args ->> 'date')::date
      and (not p_args ? 'time' or a.appointment_time = (p_args ->> 'time')::time);
    if n = 0 then
      -- Asked again after cancelling: the cancelled one, so that a repeat is answered kindly.
      select count(*), coalesce(jsonb_agg(appointment_json(a, s.staff_name) order by a.starts_at), '[]')
        into n, matches
      from caller_appointments(cfg, p_call, p_args) a
      join staff_members s on s.id = a.staff_member_id
      where a.status = 'cancelled' and a.starts_at >= p_now
        and a.appointment_date = (p_args ->> 'date')::date
        and (not p_args ? 'time' or a.appointment_time = (p_args ->> 'time')::time)
        and not exists (
          select 1 from appointments b
          where b.appointment_date = a.appointment_date and b.appointment_time = a.appointment_time
            and b.staff_member_id = a.staff_member_id and b.status <> 'cancelled'
        );
      if n <> 1 then
        return jsonb_build_object('problem', 'appointment_not_found');
      end if;
    elsif n > 1 then
      return jsonb_build_object('problem', 'ambiguous_appointment', 'choices', matches);
    end if;
    select a.* into picked from appointments a where a.id = (matches -> 0 ->> 'appointment_id')::uuid;
  end if;
  if p_lock then
    perform 1 from appointments a where a.id = picked.id for update;
    select a.* into picked from appointments a where a.id = picked.id;
  end if;
  return jsonb_build_object('appointment', appointment_json(picked, (
    select s.staff_name from staff_members s where s.id = picked.staff_member_id)));
end
$$;

create or replace function rx_cancel_appointment(
  p_agent_id text, p_call jsonb, p_args jsonb, p_now timestamptz, p_min_notice integer
) returns jsonb
language plpgsql
set jit = off
as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  chosen jsonb;
  cancelled appointments;
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  perform set_config('TimeZone', cfg.timezone, true);
  chosen := select_appointment(cfg, p_call, p_args, p_now, true);
  if chosen ? 'problem' then
    return chosen || jsonb_build_object('timezone', cfg.timezone);
  end if;
  if chosen -> 'appointment' ->> 'status' = 'cancelled' then
    return jsonb_build_object('cancelled', true, 'already', true, 'timezone', cfg.timezone,
                              'appointment', chosen -> 'appointment');
  end if;
  if chosen -> 'appointment' ->> 'status' in ('completed', 'no_show')
     or (chosen -> 'appointment' ->> 'start')::timestamptz < p_now then
    return jsonb_build_object('problem', 'appointment_in_past', 'timezone', cfg.timezone,
                              'appointment', chosen -> 'appointment');
  end if;
  update appointments set status = 'cancelled'
  where id = (chosen -> 'appointment' ->> 'appointment_id')::uuid
  returning * into cancelled;
  perform enqueue_appointment_notice(cfg, 'appointment.cancelled', chosen -> 'appointment', null);
  return jsonb_build_object('cancelled', true, 'already', false, 'timezone', cfg.timezone,
                            'appointment', appointment_json(cancelled,
                                                            chosen -> 'appointment' ->> 'staff_name'));
end
$$;

-- A retry of a move picked by date (and time), which finds nothing there any more: the caller's
-- upcoming appointment that was moved from that date and time to the new ones (with the staff
-- member named, if one is), as appointment_json; null when there is none.
create or replace function moved_appointment(
  cfg agent_configurations, p_call jsonb, p_args jsonb, p_now timestamptz
) returns jsonb
language sql stable as $$
  select appointment_json(a, s.staff_name)
  from caller_appointments(cfg, p_call, p_args) a
  join staff_members s on s.id = a.staff_member_id
  where a.status in ('scheduled', 'confirmed') and a.starts_at >= p_now
    and a.rescheduled_from_date = (p_args ->> 'date')::date
    and (not p_args ? 'time' or a.rescheduled_from_time = (p_args ->> 'time')::time)
    and a.appointment_date = (p_args ->> 'new_date')::date
    and a.appointment_time = (p_args ->> 'new_time')::time
    and (p_args ->> 'staff_member_id' is null
         or a.staff_member_id = (p_args ->> 'staff_member_id')::uuid)
    and (p_args ->> 'staff_name' is null or name_matches(p_args ->> 'staff_name', s.staff_name))
  order by a.starts_at
  limit 1
$$;

create or replace function rx_reschedule_appointment(
  p_agent_id text, p_call jsonb, p_args jsonb, p_now timestamptz, p_min_notice integer
) returns jsonb
language plpgsql
set jit = off set plan_cache_mode = force_generic_plan
as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  today date;
  refusal jsonb;
  chosen jsonb;
  current jsonb;
  staff jsonb;
  move_args jsonb;
  moved jsonb;
  moved_before jsonb;
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  perform set_config('TimeZone', cfg.timezone, true);
  today := (p_now at time zone cfg.timezone)::date;
  refusal := date_problem((p_args ->> 'new_date')::date, today, cfg.timezone);
  if refusal is not null then
    return refusal;
  end if;
  chosen := select_appointment(cfg, p_call, p_args, p_now, true);
  if chosen ->> 'problem' = 'appointment_not_found' and not p_args ? 'appointment_id' then
    moved_before := moved_appointment(cfg, p_call, p_args, p_now);
    if moved_before is not null then
      return jsonb_build_object('booked', true, 'replayed', true, 'appointment', moved_before,
                                'timezone', cfg.timezone, 'today', today);
    end if;
  end if;
  if chosen ? 'problem' then
    return chosen || jsonb_build_object('timezone', cfg.timezone, 'today', today);
  end if;
  current := chosen -> 'appointment';
  if current ->> 'status' = 'cancelled' then
    return jsonb_build_object('problem', 'appointment_cancelled', 'timezone', cfg.timezone,
                              'appointment', current);
  end if;
  if current ->> 'status' not in ('scheduled', 'confirmed')
     or (current ->> 'start')::timestamptz < p_now then
    return jsonb_build_object('problem', 'appointment_not_movable', 'timezone', cfg.timezone,
                              'appointment', current);
  end if;
  if p_args ? 'staff_name' or p_args ? 'staff_member_id' then
    staff := resolve_staff(cfg.id, p_args ->> 'staff_name',
                           (p_args ->> 'staff_member_id')::uuid, null);
  else
    staff := resolve_staff(cfg.id, null, (current ->> 'staff_member_id')::uuid, null);
  end if;
  if staff ? 'problem' then
    return staff || jsonb_build_object('timezone', cfg.timezone, 'today', today);
  end if;
  move_args := jsonb_build_object('date', p_args ->> 'new_date', 'time', p_args ->> 'new_time',
                                  'duration_minutes', (current ->> 'duration_minutes')::int);
  moved := book_into(cfg, staff, move_args, null, p_now, p_min_notice,
                     (current ->> 'appointment_id')::uuid);
  if moved ->> 'booked' = 'true' then
    perform enqueue_appointment_notice(cfg, 'appointment.rescheduled', moved -> 'appointment',
                                       current);
  end if;
  return moved
         || jsonb_build_object('timezone', cfg.timezone, 'today', today, 'previous', current);
end
$$;

create or replace function rx_leave_voicemail(
  p_agent_id text, p_call jsonb, p_args jsonb, p_now timestamptz, p_min_notice integer
) returns jsonb
language plpgsql
set jit = off
as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  phone text;
  call_log uuid;
  saved uuid;
  replayed boolean := false;
  priority text := coalesce(p_args ->> 'priority', 'normal');
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  if not coalesce(cfg.voicemail_enabled, true) then
    return jsonb_build_object('problem', 'voicemail_disabled');
  end if;
  phone := nullif(p_args ->> 'caller_phone', '');
  if phone is null then
    return jsonb_build_object('problem', 'no_callback_number');
  end if;
  if coalesce((p_args ->> 'urgent')::boolean, false) then
    priority := 'urgent';
  end if;
  call_log := ensure_call_log(cfg, p_call);
  insert into voicemails (
    user_id, agent_configuration_id, call_log_id, caller_name, caller_phone, caller_email,
    transcript, message_type, priority, subject, is_urgent, received_at
  ) values (
    cfg.user_id, cfg.id, call_log, p_args ->> 'caller_name', phone, p_args ->> 'caller_email',
    p_args ->> 'message', coalesce(p_args ->> 'message_type', 'voicemail'), priority,
    p_args ->> 'subject', priority = 'urgent', p_now
  )
  on conflict (call_log_id, md5(transcript)) where call_log_id is not null do nothing
  returning id into saved;
  if saved is null then
    replayed := true;
    select v.id into saved from voicemails v
    where v.call_log_id = call_log and md5(v.transcript) = md5(p_args ->> 'message');
  else
    -- 09_notifications: the recording if the call has already ended; the clinic's notices.
    perform copy_call_recording(call_log);
    perform enqueue_voicemail_notice(cfg, saved, p_call ->> 'call_id');
  end if;
  return jsonb_build_object('saved', true, 'voicemail_id', saved, 'replayed', replayed,
                            'priority', priority, 'business_name', cfg.business_name);
end
$$;

create or replace function rx_forward_call(
  p_agent_id text, p_call jsonb, p_args jsonb, p_now timestamptz, p_min_notice integer
) returns jsonb
language plpgsql
set jit = off
as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  reason text;
  call_log uuid;
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  reason := case
    when not coalesce(cfg.forward_enabled, false) then 'forwarding_disabled'
    when nullif(cfg.forward_number, '') is null then 'no_forward_number'
    when not business_open_at(cfg.business_hours, cfg.timezone, p_now) then 'outside_business_hours'
  end;
  call_log := ensure_call_log(cfg, p_call);
  if call_log is not null then
    update customer_call_logs
    set forward_requested_at = p_now,
        forward_reason = coalesce(p_args ->> 'reason', forward_reason),
        forward_number = case when reason is null then cfg.forward_number end
    where id = call_log;
  end if;
  return jsonb_build_object(
    'forward', reason is null,
    'reason', reason,
    'forward_number', case when reason is null then cfg.forward_number end,
    'voicemail_enabled', coalesce(cfg.voicemail_enabled, true),
    'business_name', cfg.business_name);
end
$$;

-- Days remembered by slot_cache were computed by the definitions above as they were when the
-- days were stored; when this file is applied again, they may no longer hold. Emptied in the
-- same transaction as the new definitions: a check waits for it, then computes by them.
truncate slot_cache.days;
