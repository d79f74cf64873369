-- check_availability from remembered days. A day's free slots change only when something they
-- are computed from changes: the staff member's appointments, working hours, time off or
-- settings, or the clinic's zone and business hours. Callers ask about the same few days over
-- and over, so each (staff member, date, duration) is computed by free_slots once and kept until
-- one of those changes. Booking never reads this: book_into checks the live rows under the
-- staff member's lock, so the cache can at worst offer a time that is then refused, and the
-- versions below keep it from doing even that.
--
-- Staleness is ruled out by versions, not by deleting entries: every change to what a staff
-- member's slots are computed from gives the staff member a new version in the same transaction
-- (so the version and the change become visible together), and an entry counts only while it
-- carries its staff member's current version. An entry is written by one statement that reads
-- the version and computes the slots from the same snapshot, so it can never carry a version
-- newer than its data. Deleting instead would race: a day computed just before a booking commits
-- could be written back just after the booking deleted it.
--
-- The tables (slot_cache.staff_versions, slot_cache.days) are in the baseline.

-- A new version for each of these staff members. PL/pgSQL, so that its statement is planned once
-- per session (a SQL function called from a trigger is planned again on every call).
create or replace function slot_cache.touch(p_staff_ids uuid[]) returns void
language plpgsql as $$
begin
  insert into slot_cache.staff_versions as v (staff_member_id, version)
  select s.id, nextval('slot_cache.version_seq')
  from (select distinct id from unnest(p_staff_ids) u(id) where id is not null) s
  on conflict (staff_member_id) do update set version = excluded.version;
end
$$;

-- Statement-level triggers: a bulk load of appointments touches each staff member once. They run
-- as the owner (security definer, with a pinned search_path): a signed-in Supabase user who edits
-- their own staff's hours must refresh the cache, without any right to the cache itself.
create or replace function slot_cache.touch_rows() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  -- Each branch reads only the transition tables its event has.
  if tg_op = 'INSERT' then
    perform slot_cache.touch(array(select staff_member_id from new_rows));
  elsif tg_op = 'DELETE' then
    perform slot_cache.touch(array(select staff_member_id from old_rows));
  else
    perform slot_cache.touch(array(
      select staff_member_id from old_rows union all select staff_member_id from new_rows));
  end if;
  return null;
end
$$;

create or replace function slot_cache.forget_everything() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  delete from slot_cache.days;
  return null;
end
$$;

do $$
declare
  t text;
  existing record;
begin
  -- Made again from the lists below whenever this file is applied.
  for existing in
    select tgname, tgrelid::regclass as on_table from pg_trigger
    where tgfoid in ('slot_cache.touch_rows()'::regprocedure,
                     'slot_cache.forget_everything()'::regprocedure)
  loop
    execute format('drop trigger %I on %s', existing.tgname, existing.on_table);
  end loop;
  foreach t in array array['appointments', 'staff_availability', 'staff_time_off'] loop
    execute format('create trigger %I after insert on %I referencing new table as new_rows '
                   'for each statement execute function slot_cache.touch_rows()',
                   t || '_slot_cache_insert', t);
    execute format('create trigger %I after update on %I '
                   'referencing old table as old_rows new table as new_rows '
                   'for each statement execute function slot_cache.touch_rows()',
                   t || '_slot_cache_update', t);
    execute format('create trigger %I after delete on %I referencing old table as old_rows '
                   'for each statement execute function slot_cache.touch_rows()',
                   t || '_slot_cache_delete', t);
  end loop;
  foreach t in array array['appointments', 'staff_availability', 'staff_time_off',
                           'staff_members', 'agent_configurations'] loop
    execute format('create trigger %I after truncate on %I '
                   'for each statement execute function slot_cache.forget_everything()',
                   t || '_slot_cache_truncate', t);
  end loop;
end
$$;

-- A staff member's own settings (duration, buffers, bookable, active, clinic).
create or replace function slot_cache.touch_staff_members() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform slot_cache.touch(array(select id from old_rows));
  return null;
end
$$;

drop trigger if exists staff_members_slot_cache_update on staff_members;
create trigger staff_members_slot_cache_update after update on staff_members
  referencing old table as old_rows
  for each statement execute function slot_cache.touch_staff_members();
drop trigger if exists staff_members_slot_cache_delete on staff_members;
create trigger staff_members_slot_cache_delete after delete on staff_members
  referencing old table as old_rows
  for each statement execute function slot_cache.touch_staff_members();

-- The clinic's zone and business hours shape every staff member's days.
create or replace function slot_cache.touch_clinic() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform slot_cache.touch(array(
    select s.id from public.staff_members s where s.agent_configuration_id = new.id));
  return null;
end
$$;

drop trigger if exists agent_configurations_slot_cache on agent_configurations;
create trigger agent_configurations_slot_cache after update of timezone, business_hours
  on agent_configurations
  for each row
  when (old.timezone is distinct from new.timezone
        or old.business_hours is distinct from new.business_hours)
  execute function slot_cache.touch_clinic();

-- Computes and keeps the days of the range for those of these staff members whose days there
-- are missing or out of date (after a booking, only its staff member's). The insert is one
-- statement: the versions it stores are read from the snapshot the slots are computed from.
-- Days before p_today are dropped on the way (nobody can book them).
create or replace function slot_cache.fill(
  p_configuration_id uuid, p_staff_ids uuid[], p_from date, p_to date, p_duration integer,
  p_today date
) returns void
language plpgsql
-- Every statement here reads slot_cache by its primary key. The tables start empty, and a plan
-- made while they were (a session keeps its plans) would otherwise scan them whole, once per
-- row of the other side: 12 s per call at 10,000 stored days, measured.
set enable_seqscan = off
as $$
declare
  stale uuid[];
begin
  select array_agg(s.id) into stale
  from unnest(p_staff_ids) s(id)
  where (select count(*) from slot_cache.days d
         where d.staff_member_id = s.id and d.duration_key = coalesce(p_duration, 0)
           and d.local_date between p_from and p_to
           and d.version = coalesce((select v.version from slot_cache.staff_versions v
                                     where v.staff_member_id = s.id), 0))
        < p_to - p_from + 1;
  if stale is null then
    return;
  end if;

  -- Past days of these staff members go (nobody can book them); rows another check is writing
  -- are left for later, since waiting on them could deadlock.
  delete from slot_cache.days d
  where d.ctid = any(array(
    select o.ctid from slot_cache.days o
    where o.staff_member_id = any(stale) and o.local_date < p_today
    for update skip locked));

  insert into slot_cache.days as d (
    staff_member_id, duration_key, local_date, version, staff_name, local_times, starts, answers
  )
  select p.staff_member_id, coalesce(p_duration, 0), p.local_date, p.version, p.staff_name,
         coalesce(array_agg(f.local_time order by f.starts_at)
                    filter (where f.starts_at is not null), '{}'),
         coalesce(array_agg(f.starts_at order by f.starts_at)
                    filter (where f.starts_at is not null), '{}'),
         coalesce(array_agg(slot_json(f.staff_member_id, f.staff_name, f.local_date,
                                      f.local_time, f.starts_at) order by f.starts_at)
                    filter (where f.starts_at is not null), '{}')
  from (
    select s.id as staff_member_id, s.staff_name::text as staff_name, g.day::date as local_date,
           coalesce((select v.version from slot_cache.staff_versions v
                     where v.staff_member_id = s.id), 0) as version
    from staff_members s, generate_series(p_from, p_to, interval '1 day') g(day)
    where s.id = any(stale)
  ) p
  left join free_slots(p_configuration_id, stale, p_from, p_to, p_duration, '-infinity') f
    on f.staff_member_id = p.staff_member_id and f.local_date = p.local_date
  group by p.staff_member_id, p.staff_name, p.local_date, p.version
  -- Two checks filling the same days lock them in the same order (dates ascend from chunk to
  -- chunk as well), so one waits for the other instead of deadlocking.
  order by p.local_date, p.staff_member_id
  on conflict (staff_member_id, duration_key, local_date) do update
    set version = excluded.version, staff_name = excluded.staff_name,
        local_times = excluded.local_times, starts = excluded.starts, answers = excluded.answers
    -- A slower check that read an older version never overwrites a newer day.
    where d.version <= excluded.version;
end
$$;

create or replace function rx_check_availability(
  p_agent_id text, p_call jsonb, p_args jsonb, p_now timestamptz, p_min_notice integer
) returns jsonb
language plpgsql
-- enable_seqscan: see slot_cache.fill; the read below and resolve_staff, free_slots and the
-- configuration lookup all have an index for what they read.
set jit = off set plan_cache_mode = force_generic_plan set enable_seqscan = off
as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  today date;
  refusal jsonb;
  first_day date := (p_args ->> 'date')::date;
  days integer := coalesce((p_args ->> 'days')::int, 1);
  preference text := coalesce(p_args ->> 'time_preference', 'any');
  wanted integer := coalesce((p_args ->> 'max_slots')::int, 12);
  duration integer := (p_args ->> 'duration_minutes')::int;
  not_before timestamptz := p_now + make_interval(mins => p_min_notice);
  staff jsonb;
  staff_ids uuid[];
  slots jsonb := '[]'::jsonb;
  found jsonb;
  kept integer;
  filled boolean;
  chunk_from date := first_day;
  chunk_to date;
  chunk integer := 1;
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  perform set_config('TimeZone', cfg.timezone, true);
  today := (p_now at time zone cfg.timezone)::date;
  refusal := date_problem(first_day, today, cfg.timezone);
  if refusal is not null then
    return refusal;
  end if;
  staff := resolve_staff(cfg.id, p_args ->> 'staff_name', (p_args ->> 'staff_member_id')::uuid,
                         p_args ->> 'staff_role');
  if staff ? 'problem' then
    return staff || jsonb_build_object('timezone', cfg.timezone);
  end if;
  staff_ids := array(select jsonb_array_elements_text(staff -> 'ids')::uuid);
  -- Every slot of a date starts before any slot of the next, so the earliest slots of the
  -- window are found by searching its first day, then the next two, four, ... and stopping
  -- once there are enough: a month's window costs about what its first days cost.
  while chunk_from <= first_day + days - 1 and jsonb_array_length(slots) < wanted loop
    chunk_to := least(chunk_from + chunk - 1, first_day + days - 1);
    filled := false;
    loop
      -- The chunk's remembered days that are still current, and the earliest wanted slots
      -- among them; when a day is missing or out of date, fill the chunk and read again.
      with current_days as (
        select d.staff_name, d.local_times, d.starts, d.answers
        from slot_cache.days d
        left join slot_cache.staff_versions v
          on v.staff_member_id = d.staff_member_id and v.staff_member_id = any(staff_ids)
        where d.staff_member_id = any(staff_ids) and d.duration_key = coalesce(duration, 0)
          and d.local_date between chunk_from and chunk_to
          -- Right after filling, the rows just written (or newer ones): a booking that
          -- committed in between must not make a staff member's day vanish from the answer.
          and (filled or d.version = coalesce(v.version, 0))
      )
      select (select count(*) from current_days),
             (select coalesce(jsonb_agg(f.answer order by f.starts_at, f.staff_name), '[]'::jsonb)
              from (
                select d.staff_name, t.starts_at, t.answer
                from current_days d,
                     unnest(d.local_times, d.starts, d.answers) t(local_time, starts_at, answer)
                where t.starts_at >= not_before
                  and (preference = 'any'
                       or (preference = 'morning' and t.local_time < time '12:00')
                       or (preference = 'afternoon' and t.local_time >= time '12:00'
                           and t.local_time < time '17:00')
                       or (preference = 'evening' and t.local_time >= time '17:00'))
                order by t.starts_at, d.staff_name
                limit wanted - jsonb_array_length(slots)
              ) f)
        into kept, found;
      exit when filled or kept = cardinality(staff_ids) * (chunk_to - chunk_from + 1);
      perform slot_cache.fill(cfg.id, staff_ids, chunk_from, chunk_to, duration, today);
      filled := true;
    end loop;
    slots := slots || found;
    chunk_from := chunk_to + 1;
    chunk := chunk * 2;
  end loop;
  return jsonb_build_object('timezone', cfg.timezone, 'today', today, 'slots', slots,
                            'staff_names', staff -> 'names');
end
$$;
