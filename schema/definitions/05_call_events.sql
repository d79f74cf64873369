-- Call webhooks and the inbound-call webhook as database functions, one round trip each.
-- CONTRACT.md section 5.

-- How far a call has got. Statuses only move up this order, so a late or repeated event never
-- reopens a call; the terminal ones are ordered too, so that any arrival order of events that
-- disagree settles on the same status. Unknown statuses (Retell adds values) rank lowest.
create or replace function call_status_rank(status text) returns integer
language sql immutable as $$
  select case status
    when 'registered' then 1
    when 'ongoing' then 2
    when 'not_connected' then 3
    when 'ended' then 4
    when 'error' then 5
    else 0
  end
$$;

-- A field of the call as the most advanced event received tells it: call_analyzed over
-- call_ended over call_started, skipping events where it is absent, null or empty. `events` is
-- customer_call_logs.events, the raw bodies keyed by event type. Because every field is derived
-- from the set of events alone, the row does not depend on the order they arrived in. One path
-- lookup each: `->` would copy each (possibly megabytes long) event body on the way down.
create or replace function call_event_json(events jsonb, path text[]) returns jsonb
language sql immutable as $$
  select coalesce(
    nullif(events #> ('{call_analyzed,call}'::text[] || path), 'null'::jsonb),
    nullif(events #> ('{call_ended,call}'::text[] || path), 'null'::jsonb),
    nullif(events #> ('{call_started,call}'::text[] || path), 'null'::jsonb))
$$;

create or replace function call_event_text(events jsonb, path text[]) returns text
language sql immutable as $$
  select coalesce(
    nullif(events #>> ('{call_analyzed,call}'::text[] || path), ''),
    nullif(events #>> ('{call_ended,call}'::text[] || path), ''),
    nullif(events #>> ('{call_started,call}'::text[] || path), ''))
$$;

-- Milliseconds since the epoch (Retell's timestamps) as an instant.
create or replace function epoch_ms_instant(ms text) returns timestamptz
language sql immutable as $$ select to_timestamp(ms::numeric / 1000) $$;

-- The highest-ranked call_status among the events received and the row's current one, ties
-- (unknown statuses) broken by the greater name. PL/pgSQL: as an SQL query (unnest, order by,
-- limit) it could not be inlined, so every webhook parsed and planned it again (~0.1-0.2 ms);
-- PL/pgSQL evaluates the same comparisons as plain expressions.
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

-- The customer_call_logs columns a set of events gives (call_status aside), in column order.
create or replace function call_event_fields(events jsonb) returns table (
  call_type varchar, direction varchar, from_number varchar, to_number varchar,
  started_at timestamptz, ended_at timestamptz, duration_ms bigint, disconnection_reason text,
  transcript text, transcript_object jsonb, recording_url text, public_log_url text,
  call_summary text, user_sentiment varchar, call_successful boolean, in_voicemail boolean,
  custom_analysis_data jsonb, call_cost jsonb, metadata jsonb
)
language sql immutable as $$
  select call_event_text(events, '{call_type}'), call_event_text(events, '{direction}'),
         phone_number_or_null(call_event_text(events, '{from_number}')),
         phone_number_or_null(call_event_text(events, '{to_number}')),
         epoch_ms_instant(call_event_text(events, '{start_timestamp}')),
         epoch_ms_instant(call_event_text(events, '{end_timestamp}')),
         call_event_text(events, '{duration_ms}')::numeric::bigint,
         call_event_text(events, '{disconnection_reason}'),
         call_event_text(events, '{transcript}'),
         call_event_json(events, '{transcript_object}'),
         call_event_text(events, '{recording_url}'),
         call_event_text(events, '{public_log_url}'),
         call_event_text(events, '{call_analysis,call_summary}'),
         call_event_text(events, '{call_analysis,user_sentiment}'),
         call_event_text(events, '{call_analysis,call_successful}')::boolean,
         call_event_text(events, '{call_analysis,in_voicemail}')::boolean,
         call_event_json(events, '{call_analysis,custom_analysis_data}'),
         call_event_json(events, '{call_cost}'),
         call_event_json(events, '{metadata}')
$$;

-- A field name that marks its value as a credential: Retell's access_token (a web call's key
-- to its room), and names ending in token, secret, password or api_key.
create or replace function is_secret_name(name text) returns boolean
language sql immutable as $$ select name ~* '(^|_)(token|secret|password|api_?key)$' $$;

-- A call event's body without credentials: the secret-named fields of the call object and of
-- its dynamic variables go; everything else (transcript, analysis, costs, metadata) is kept.
create or replace function without_secrets(p_body jsonb) returns jsonb
language plpgsql immutable as $$
declare
  cleaned jsonb := p_body;
  path text[];
  secrets text[];
begin
  for path, secrets in
    select o.path, array_agg(k.key)
    from (values ('{call}'::text[]), ('{call,retell_llm_dynamic_variables}'),
                 ('{call,collected_dynamic_variables}')) o(path),
         jsonb_object_keys(case when jsonb_typeof(p_body #> o.path) = 'object'
                                then p_body #> o.path else '{}'::jsonb end) k(key)
    where is_secret_name(k.key)
    group by o.path
  loop
    cleaned := jsonb_set(cleaned, path, (cleaned #> path) - secrets);
  end loop;
  return cleaned;
end
$$;

-- Store one call event (call_started, call_ended or call_analyzed) in the call's row, creating
-- it or merging into it: the row a custom function made mid-call (ensure_call_log), or one that
-- earlier events of the call filled. One statement, so concurrent copies of the same or other
-- events serialise on the row and each merges into what the previous one committed. Returns
-- {"call_log_id", "call_status"}, or {"problem": "unknown_agent"} when no active configuration
-- has the call's agent_id (nothing is stored then), or {"problem": "no_call_id"}, or
-- {"problem": "call_of_another_clinic"} when the call's row belongs to another configuration
-- (nothing is merged into it). The stored body is without_secrets'.
create or replace function rx_call_event(p_event text, p_body jsonb) returns jsonb
language plpgsql as $$
declare
  -- Path lookups: `p_body -> 'call'` copied the whole call object (the bulk of the body) twice.
  cfg agent_configurations := configuration_for_agent(p_body #>> '{call,agent_id}');
  call_id text := nullif(p_body #>> '{call,call_id}', '');
  received jsonb := jsonb_build_object(p_event, without_secrets(p_body));
  log_id uuid;
  status text;
  holder uuid;
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
    -- Only a row of this configuration is updated (the where below): its configuration stays.
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
  where not (l.events ? p_event) and l.agent_configuration_id = cfg.id
  returning l.id, l.call_status into log_id, status;
  if log_id is null then
    select l.id, l.call_status, l.agent_configuration_id into log_id, status, holder
    from customer_call_logs l where l.retell_call_id = call_id;
    if holder is distinct from cfg.id then
      return jsonb_build_object('problem', 'call_of_another_clinic');
    end if;
    return jsonb_build_object('call_log_id', log_id, 'call_status', status, 'duplicate', true);
  end if;
  -- 09_notifications: the call's recording onto the messages left during it.
  perform copy_call_recording(log_id);
  return jsonb_build_object('call_log_id', log_id, 'call_status', status, 'duplicate', false);
end
$$;

-- Whether a call_scripts.conditions (see script_conditions_problem in 02_rules) holds at a local
-- weekday and time, given whether the business is open then. Null conditions hold always.
create or replace function script_conditions_match(
  conditions jsonb, p_weekday text, p_time interval, p_open boolean
) returns boolean
language sql immutable as $$
  select conditions is null or jsonb_typeof(conditions) = 'null' or (
    (not conditions ? 'weekdays' or conditions -> 'weekdays' ? p_weekday)
    and (not conditions ? 'open' or (conditions ->> 'open')::boolean = p_open)
    and case
      when conditions ? 'after' and conditions ? 'before'
           and parse_clock(conditions ->> 'after') > parse_clock(conditions ->> 'before')
        -- The window wraps past midnight, e.g. 18:00 to 08:00.
        then p_time >= parse_clock(conditions ->> 'after')
             or p_time < parse_clock(conditions ->> 'before')
      else (not conditions ? 'after' or p_time >= parse_clock(conditions ->> 'after'))
           and (not conditions ? 'before' or p_time < parse_clock(conditions ->> 'before'))
    end)
$$;

-- How many things a script's conditions pin down: a script for "Saturday mornings" is more
-- specific than one for "Saturdays", and both more than one without conditions.
create or replace function script_specificity(conditions jsonb) returns integer
language sql immutable as $$
  select case when jsonb_typeof(conditions) = 'object' then
    (select count(*)::integer from jsonb_object_keys(conditions) k
     where k in ('weekdays', 'after', 'before', 'open'))
  else 0 end
$$;

-- The clinic's active script for now among the given types: the most specific one whose
-- conditions match, then the default; a default whose conditions don't match is the last
-- resort. Scripts of the configuration come before the owner's scripts for all their clinics
-- (agent_configuration_id null).
create or replace function active_script(
  cfg agent_configurations, p_greeting boolean, p_weekday text, p_time interval, p_open boolean
) returns text
language sql stable as $$
  select s.script_content
  from call_scripts s
  cross join lateral (
    select script_conditions_match(s.conditions, p_weekday, p_time, p_open) as matches
  ) m
  where coalesce(s.is_active, true)
    and (s.agent_configuration_id = cfg.id
         or (s.agent_configuration_id is null and s.user_id = cfg.user_id))
    and (s.script_type = 'greeting') = p_greeting
    and (m.matches or coalesce(s.is_default, false))
  order by m.matches desc, script_specificity(s.conditions) desc,
           coalesce(s.is_default, false) desc, s.agent_configuration_id is not null desc,
           s.created_at, s.id
  limit 1
$$;

-- What the inbound-call webhook tells the agent before it answers: the clinic, whether it is
-- open, today's hours, the scripts for now, and the caller's next appointment when the calling
-- number has one. Times are local to the clinic. Returns null for an unknown agent.
create or replace function rx_inbound(p_agent_id text, p_from text, p_now timestamptz) returns jsonb
language plpgsql stable as $$
declare
  cfg agent_configurations := configuration_for_agent(p_agent_id);
  local_now timestamp;
  weekday text;
  open_now boolean;
  next_appointment jsonb;
begin
  if cfg.id is null then
    return null;
  end if;
  local_now := p_now at time zone cfg.timezone;
  weekday := weekday_name(local_now::date);
  open_now := business_open_at(cfg.business_hours, cfg.timezone, p_now);
  if nullif(p_from, '') is not null then
    select jsonb_build_object(
             'patient_name', a.patient_name, 'date', a.appointment_date,
             'time', to_char(a.appointment_time, 'HH24:MI'), 'staff_name', s.staff_name)
      into next_appointment
    from appointments a
    join staff_members s on s.id = a.staff_member_id
    where s.agent_configuration_id = cfg.id
      and a.patient_phone = p_from
      and a.status in ('scheduled', 'confirmed')
      and a.starts_at >= p_now
    order by a.starts_at
    limit 1;
  end if;
  return jsonb_build_object(
    'business_name', cfg.business_name,
    'business_phone', cfg.business_phone,
    'business_address', cfg.business_address,
    'timezone', cfg.timezone,
    'is_open_now', open_now,
    -- null: no business_hours at all (always open); [] closed today.
    'today_hours', case
      when cfg.business_hours is null or jsonb_typeof(cfg.business_hours) = 'null' then null
      else coalesce((
        select jsonb_agg(i order by parse_clock(i ->> 'open'))
        from jsonb_array_elements(
          case when jsonb_typeof(cfg.business_hours -> weekday) = 'array'
               then cfg.business_hours -> weekday else '[]'::jsonb end) i), '[]'::jsonb)
    end,
    'greeting', coalesce(
      active_script(cfg, true, weekday, time_of(local_now::time), open_now),
      cfg.greeting_message),
    'call_script', coalesce(
      active_script(cfg, false, weekday, time_of(local_now::time), open_now),
      cfg.call_script),
    'forward_enabled', coalesce(cfg.forward_enabled, false)
                       and nullif(cfg.forward_number, '') is not null,
    'voicemail_enabled', coalesce(cfg.voicemail_enabled, true),
    'voicemail_greeting', cfg.voicemail_greeting,
    'staff_names', coalesce((
      select jsonb_agg(s.staff_name order by s.staff_name)
      from staff_members s
      where s.agent_configuration_id = cfg.id
        and coalesce(s.is_active, true) and coalesce(s.is_bookable, true)), '[]'::jsonb),
    'next_appointment', next_appointment);
end
$$;
