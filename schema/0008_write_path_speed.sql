-- Less PostgreSQL CPU on the write paths: book_appointment, the call webhooks and forward_call
-- (measurements in bench/NOTES.md). Same rows, same answers; every row is still written and
-- logged as before.

-- A call_ended or call_analyzed event stores Retell's call object about three times over (the
-- raw body in `events`, then `transcript` and `transcript_object` from it), 20-40 KB that
-- TOAST compresses on insert. pglz, the default, spent ~0.4 ms per call_ended on it; lz4
-- compresses the same bodies ~5x faster (and here smaller). Rows already stored keep pglz and
-- read as before. A server built without lz4 keeps pglz.
do $$
begin
  alter table customer_call_logs
    alter column events set compression lz4,
    alter column transcript set compression lz4,
    alter column transcript_object set compression lz4,
    alter column call_summary set compression lz4,
    alter column custom_analysis_data set compression lz4,
    alter column call_cost set compression lz4,
    alter column metadata set compression lz4;
exception
  when feature_not_supported then
    raise notice 'lz4 is not available on this server: call logs stay pglz-compressed';
end
$$;

-- The highest-ranked call_status among the events received and the row's current one, ties
-- (unknown statuses) broken by the greater name: as 0006's definition, whose query (unnest,
-- order by, limit) kept it from being inlined, so every webhook parsed and planned it again
-- (~0.1-0.2 ms). PL/pgSQL evaluates the same comparisons as plain expressions.
create or replace function call_events_status(events jsonb, current_status text) returns text
language plpgsql immutable as $$
declare
  best text;
  candidate text;
begin
  foreach candidate in array array[
    current_status,
    events #>> '{call_started,call,call_status}',
    events #>> '{call_ended,call,call_status}',
    events #>> '{call_analyzed,call,call_status}']
  loop
    if nullif(candidate, '') is not null
       and (best is null
            or call_status_rank(candidate) > call_status_rank(best)
            or (call_status_rank(candidate) = call_status_rank(best) and candidate > best)) then
      best := candidate;
    end if;
  end loop;
  return best;
end
$$;

-- As 0003's appointments_guard, with two of its queries made cheaper. The overlap test reads
-- the btree idx_appointments_staff_starts (the staff member's appointments that start within
-- the day before the new one) instead of the exclusion constraint's GiST index, which visited
-- ~30 pages per booking where the btree visits ~3 (~40 -> ~13 us). Nothing the exact test (&&)
-- can match is left out: this trigger holds every row to at most 1440 minutes, so an
-- appointment that started a day or more before the new one has ended by then. The exclusion
-- constraint still stands behind it for any writer.
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
    perform lock_staff(new.staff_member_id);
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

-- As 0006's rx_call_event, with the merge of a later event into the call's row (call_ended
-- after call_started: the usual order) computing the merged events once, and the call's ids
-- read by path.
create or replace function rx_call_event(p_event text, p_body jsonb) returns jsonb
language plpgsql as $$
declare
  -- Path lookups: `p_body -> 'call'` copied the whole call object (the bulk of the body) twice.
  cfg agent_configurations := configuration_for_agent(p_body #>> '{call,agent_id}');
  call_id text := nullif(p_body #>> '{call,call_id}', '');
  received jsonb := jsonb_build_object(p_event, p_body);
  log_id uuid;
  status text;
begin
  if cfg.id is null then
    return jsonb_build_object('problem', 'unknown_agent');
  end if;
  if call_id is null then
    return jsonb_build_object('problem', 'no_call_id');
  end if;
  insert into customer_call_logs as l (
    retell_call_id, agent_configuration_id, user_id, agent_id, events, call_status,
    call_type, direction, from_number, to_number, started_at, ended_at, duration_ms,
    disconnection_reason, transcript, transcript_object, recording_url, public_log_url,
    call_summary, user_sentiment, call_successful, in_voicemail, custom_analysis_data,
    call_cost, metadata
  )
  select call_id, cfg.id, cfg.user_id, cfg.agent_id, received,
         call_events_status(received, null), f.*
  from call_event_fields(received) f
  on conflict (retell_call_id) do update set
    agent_configuration_id = coalesce(l.agent_configuration_id, excluded.agent_configuration_id),
    user_id = coalesce(l.user_id, excluded.user_id),
    agent_id = coalesce(l.agent_id, excluded.agent_id),
    -- The merged events are computed once (offset 0 keeps the subquery from being flattened):
    -- written out in each of the fields call_event_fields reads, the concatenation of two
    -- call bodies ran ~57 times per update (~3 ms).
    (events, call_status,
     call_type, direction, from_number, to_number, started_at, ended_at, duration_ms,
     disconnection_reason, transcript, transcript_object, recording_url, public_log_url,
     call_summary, user_sentiment, call_successful, in_voicemail, custom_analysis_data,
     call_cost, metadata) = (
      -- A repeated event keeps the body first stored (Retell's retries are identical copies).
      select m.events, call_events_status(m.events, l.call_status),
             coalesce(f.call_type, l.call_type), coalesce(f.direction, l.direction),
             coalesce(f.from_number, l.from_number), coalesce(f.to_number, l.to_number),
             coalesce(f.started_at, l.started_at), coalesce(f.ended_at, l.ended_at),
             coalesce(f.duration_ms, l.duration_ms),
             coalesce(f.disconnection_reason, l.disconnection_reason),
             coalesce(f.transcript, l.transcript),
             coalesce(f.transcript_object, l.transcript_object),
             coalesce(f.recording_url, l.recording_url),
             coalesce(f.public_log_url, l.public_log_url),
             coalesce(f.call_summary, l.call_summary),
             coalesce(f.user_sentiment, l.user_sentiment),
             coalesce(f.call_successful, l.call_successful),
             coalesce(f.in_voicemail, l.in_voicemail),
             coalesce(f.custom_analysis_data, l.custom_analysis_data),
             coalesce(f.call_cost, l.call_cost), coalesce(f.metadata, l.metadata)
      from (select received || l.events as events offset 0) m,
           call_event_fields(m.events) f)
  -- A copy of an event already stored (Retell's retries and duplicates) changes nothing: the
  -- row is derived from the set of events, and that set already holds this one.
  where not (l.events ? p_event)
  returning l.id, l.call_status into log_id, status;
  if log_id is null then
    select l.id, l.call_status into log_id, status
    from customer_call_logs l where l.retell_call_id = call_id;
    return jsonb_build_object('call_log_id', log_id, 'call_status', status, 'duplicate', true);
  end if;
  return jsonb_build_object('call_log_id', log_id, 'call_status', status, 'duplicate', false);
end
$$;

-- As 0005's business_open_at, in PL/pgSQL: the SQL function's `exists` subquery kept it from
-- being inlined, so forward_call (and the inbound webhook) parsed and planned it on every call
-- (~0.2 ms); PL/pgSQL plans the same expression once per session.
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
