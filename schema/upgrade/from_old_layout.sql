-- Run by migrate once, in one transaction with 0001_baseline.sql and the ledger's rewrite, on a
-- database that applied the old layout (schema/0001_supabase_compat.sql .. 0008_write_path_speed.sql,
-- in any of their committed versions). It drops every function, trigger and view those files
-- ever created, and the remembered availability days (a cache, whose shape changed between
-- versions); the baseline then makes the cache tables again and the definition files everything
-- else, exactly as on a fresh database. No clinic row is touched. Policies keep their names and
-- are replaced by definitions/06_row_level_security.sql; auth.uid() is left alone (it may be
-- Supabase's).

do $$
declare
  old_functions text[] := array[
    'active_script', 'agent_configurations_check', 'agent_configurations_rezone',
    'appointment_json', 'appointments_guard', 'book_into', 'business_hours_problem',
    'business_open_at', 'call_event_fields', 'call_event_json', 'call_event_text',
    'call_events_status', 'call_scripts_check', 'call_status_rank', 'caller_appointments',
    'configuration_for_agent', 'customer_call_logs_check', 'date_problem', 'ensure_call_log',
    'ensure_policy', 'epoch_ms_instant', 'free_slots', 'is_e164', 'local_instant', 'lock_staff',
    'name_matches', 'nearest_slots', 'normalize_person_name', 'normalized_name_matches',
    'owner_of_configuration', 'parse_clock', 'refusal_reason', 'reject', 'resolve_staff',
    'rx_book_appointment', 'rx_call_event', 'rx_cancel_appointment', 'rx_check_availability',
    'rx_find_appointments', 'rx_forward_call', 'rx_inbound', 'rx_leave_voicemail',
    'rx_reschedule_appointment', 'script_conditions_match', 'script_conditions_problem',
    'script_specificity', 'select_appointment', 'set_updated_at', 'slot_json',
    'staff_availability_check', 'staff_members_check', 'staff_time_off_check', 'time_of',
    'voicemails_check', 'weekday_name', 'working_windows'];
  item record;
begin
  -- Triggers first: a function can't be dropped while a trigger runs it. Every trigger of the
  -- old layout ran one of its own functions.
  for item in
    select t.tgname, t.tgrelid::regclass as on_table
    from pg_trigger t
    join pg_proc p on p.oid = t.tgfoid
    join pg_namespace n on n.oid = p.pronamespace
    where not t.tgisinternal
      and (n.nspname = 'slot_cache' or (n.nspname = 'public' and p.proname = any(old_functions)))
  loop
    execute format('drop trigger %I on %s', item.tgname, item.on_table);
  end loop;
  -- No cascade: anything else built on these functions makes the upgrade fail and say so.
  for item in
    select p.oid::regprocedure as signature
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'slot_cache' or (n.nspname = 'public' and p.proname = any(old_functions))
  loop
    execute format('drop function %s', item.signature);
  end loop;
end
$$;

drop view if exists upcoming_appointments, unread_voicemails, todays_calls;

drop table if exists slot_cache.days, slot_cache.staff_versions;
drop sequence if exists slot_cache.version_seq;
