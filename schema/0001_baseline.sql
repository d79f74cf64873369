-- The baseline: every table, column, index, constraint and extension the service needs, as the
-- first migrations (0001-0008 before this layout) left them. Functions, triggers, views, row
-- level security and grants are in definitions/, applied after this file.
--
-- Every statement here creates only what is absent, for two reasons: on Supabase some of these
-- objects already exist and are not ours to replace, and migrate runs this file once more on a
-- database of the old layout (after upgrade/from_old_layout.sql), where the tables exist.

-- Supabase already has auth.users and the `anon` and `authenticated` roles; plain PostgreSQL (and
-- the embedded server) gets minimal stand-ins with the same names (auth.uid() is in
-- definitions/01_supabase_compat.sql). Objects that exist are only referenced, never altered: on
-- Supabase the migrating role does not own `auth`.

create extension if not exists btree_gist;

do $$
begin
  if not exists (select 1 from pg_namespace where nspname = 'auth') then
    create schema auth;
  end if;

  if to_regclass('auth.users') is null then
    create table auth.users (
      id uuid primary key default gen_random_uuid(),
      email text,
      created_at timestamptz not null default now()
    );
  end if;

  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
end
$$;

-- Every table of the design document, with its columns, defaults and indexes as designed, plus
-- the three tables a Supabase project already has (where they exist, only the missing columns
-- and indexes are added, nothing is dropped or retyped).

create table if not exists agent_configurations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users(id) on delete cascade,
  agent_id varchar not null,
  agent_name varchar not null,

  business_name varchar not null,
  business_address text,
  business_phone varchar,
  business_email varchar,
  business_website varchar,
  business_type varchar,

  contact_person_name varchar,
  contact_person_role varchar,
  contact_person_phone varchar,
  contact_person_email varchar,

  greeting_message text,
  call_script text,
  voice_settings jsonb,
  language varchar default 'en-US',

  forward_number varchar,
  forward_enabled boolean default false,
  voicemail_enabled boolean default true,
  voicemail_greeting text,

  business_hours jsonb,
  timezone varchar default 'UTC',

  is_active boolean default true,
  created_at timestamp with time zone default now(),
  updated_at timestamp with time zone default now()
);

create index if not exists idx_agent_configurations_user_id on agent_configurations(user_id);
create index if not exists idx_agent_configurations_agent_id on agent_configurations(agent_id);
create unique index if not exists idx_agent_configurations_unique on agent_configurations(user_id, agent_id);
-- A Retell agent id names exactly one clinic while active: the tenant key of every request.
create unique index if not exists idx_agent_configurations_active_agent
  on agent_configurations(agent_id) where is_active;

create table if not exists staff_members (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users(id) on delete cascade,
  agent_configuration_id uuid not null references agent_configurations(id) on delete cascade,

  staff_name varchar not null,
  staff_role varchar,
  staff_email varchar,
  staff_phone varchar,

  is_bookable boolean default true,
  default_appointment_duration integer default 30,
  buffer_time_before integer default 0,
  buffer_time_after integer default 0,

  is_active boolean default true,
  created_at timestamp with time zone default now(),
  updated_at timestamp with time zone default now()
);

create index if not exists idx_staff_members_user_id on staff_members(user_id);
create index if not exists idx_staff_members_agent_config on staff_members(agent_configuration_id);

create table if not exists staff_availability (
  id uuid primary key default gen_random_uuid(),
  staff_member_id uuid not null references staff_members(id) on delete cascade,

  day_of_week integer not null,
  start_time time not null,
  end_time time not null,

  break_start_time time,
  break_end_time time,

  is_active boolean default true,
  created_at timestamp with time zone default now(),
  -- Not in the design's column list, but its "triggers for automatic timestamps" need it.
  updated_at timestamp with time zone default now()
);

create index if not exists idx_staff_availability_staff_member on staff_availability(staff_member_id);
create index if not exists idx_staff_availability_day on staff_availability(day_of_week);

create table if not exists staff_time_off (
  id uuid primary key default gen_random_uuid(),
  staff_member_id uuid not null references staff_members(id) on delete cascade,

  start_date date not null,
  end_date date not null,
  start_time time,
  end_time time,
  is_full_day boolean default true,

  reason varchar,
  notes text,

  is_active boolean default true,
  created_at timestamp with time zone default now(),
  updated_at timestamp with time zone default now()
);

create index if not exists idx_staff_time_off_staff_member on staff_time_off(staff_member_id);
create index if not exists idx_staff_time_off_dates on staff_time_off(start_date, end_date);

-- customer_call_logs exists on a Supabase project of this product; shape it without replacing it.
create table if not exists customer_call_logs (
  id uuid primary key default gen_random_uuid()
);
alter table customer_call_logs
  add column if not exists user_id uuid references auth.users(id) on delete cascade,
  add column if not exists agent_configuration_id uuid
    references agent_configurations(id) on delete set null,
  add column if not exists retell_call_id varchar,
  add column if not exists agent_id varchar,
  add column if not exists call_type varchar,
  add column if not exists direction varchar,
  add column if not exists from_number varchar,
  add column if not exists to_number varchar,
  add column if not exists call_status varchar,
  add column if not exists started_at timestamp with time zone,
  add column if not exists ended_at timestamp with time zone,
  add column if not exists duration_ms bigint,
  add column if not exists disconnection_reason text,
  add column if not exists transcript text,
  add column if not exists transcript_object jsonb,
  add column if not exists recording_url text,
  add column if not exists public_log_url text,
  add column if not exists call_summary text,
  add column if not exists user_sentiment varchar,
  add column if not exists call_successful boolean,
  add column if not exists in_voicemail boolean,
  add column if not exists custom_analysis_data jsonb,
  add column if not exists call_cost jsonb,
  add column if not exists metadata jsonb,
  -- The raw body of each event type received, keyed by event name.
  add column if not exists events jsonb not null default '{}'::jsonb,
  add column if not exists forward_requested_at timestamp with time zone,
  add column if not exists forward_reason text,
  add column if not exists forward_number varchar,
  add column if not exists created_at timestamp with time zone default now(),
  add column if not exists updated_at timestamp with time zone default now();

create unique index if not exists idx_customer_call_logs_retell_call_id
  on customer_call_logs(retell_call_id);
create index if not exists idx_customer_call_logs_user_id on customer_call_logs(user_id);
create index if not exists idx_customer_call_logs_agent_config_started
  on customer_call_logs(agent_configuration_id, started_at);

create table if not exists profiles (
  id uuid primary key references auth.users(id) on delete cascade
);
alter table profiles
  add column if not exists full_name text,
  add column if not exists role varchar,
  add column if not exists created_at timestamp with time zone default now(),
  add column if not exists updated_at timestamp with time zone default now();

create table if not exists agent_configs (
  id uuid primary key default gen_random_uuid()
);
alter table agent_configs
  add column if not exists user_id uuid references auth.users(id) on delete cascade,
  add column if not exists agent_id varchar,
  add column if not exists created_at timestamp with time zone default now();
create index if not exists idx_agent_configs_user_id on agent_configs(user_id);
create index if not exists idx_agent_configs_agent_id on agent_configs(agent_id);

create table if not exists appointments (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users(id),
  staff_member_id uuid not null references staff_members(id),
  call_log_id uuid references customer_call_logs(id),

  patient_name varchar not null,
  patient_phone varchar not null,
  patient_email varchar,

  appointment_date date not null,
  appointment_time time not null,
  duration_minutes integer not null default 30,
  appointment_type varchar,

  status varchar not null default 'scheduled',
  notes text,
  special_requests text,

  confirmation_sent boolean default false,
  reminder_sent boolean default false,

  -- The appointment as instants, derived by trigger from date, time, duration and the clinic's
  -- zone: what overlap is decided on ("durations are real minutes").
  starts_at timestamp with time zone not null,
  ends_at timestamp with time zone not null,

  created_at timestamp with time zone default now(),
  updated_at timestamp with time zone default now(),

  -- The last line of defence against double booking, whoever writes the row. The booking path
  -- serialises per staff member first (see appointments_guard), so this never waits on a
  -- concurrent insert; it also holds for writers at REPEATABLE READ, whose snapshot a trigger's
  -- check could not trust.
  constraint appointments_no_overlap exclude using gist (
    staff_member_id with =,
    tstzrange(starts_at, ends_at) with &&
  ) where (status <> 'cancelled')
);

create index if not exists idx_appointments_user_id on appointments(user_id);
create index if not exists idx_appointments_staff_member on appointments(staff_member_id);
create index if not exists idx_appointments_date_time on appointments(appointment_date, appointment_time);
create index if not exists idx_appointments_status on appointments(status);
create index if not exists idx_appointments_call_log on appointments(call_log_id);
create index if not exists idx_appointments_patient_phone on appointments(patient_phone, starts_at);
create index if not exists idx_appointments_staff_starts on appointments(staff_member_id, starts_at)
  where status <> 'cancelled';

create table if not exists voicemails (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users(id),
  agent_configuration_id uuid not null references agent_configurations(id),
  call_log_id uuid references customer_call_logs(id),

  caller_name varchar,
  caller_phone varchar not null,
  caller_email varchar,

  recording_url varchar,
  transcript text,
  duration_seconds integer,

  message_type varchar default 'voicemail',
  priority varchar default 'normal',
  subject varchar,

  status varchar default 'unread',
  is_urgent boolean default false,

  received_at timestamp with time zone default now(),
  read_at timestamp with time zone,
  created_at timestamp with time zone default now()
);

create index if not exists idx_voicemails_user_id on voicemails(user_id);
create index if not exists idx_voicemails_agent_config on voicemails(agent_configuration_id);
create index if not exists idx_voicemails_status on voicemails(status);
create index if not exists idx_voicemails_received_at on voicemails(received_at);
create index if not exists idx_voicemails_call_log on voicemails(call_log_id);
-- A retried leave_voicemail from one call with the same words stores one row.
create unique index if not exists idx_voicemails_call_message
  on voicemails(call_log_id, md5(transcript)) where call_log_id is not null;

create table if not exists call_scripts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users(id),
  agent_configuration_id uuid references agent_configurations(id),

  script_name varchar not null,
  script_type varchar not null,
  script_content text not null,

  conditions jsonb,

  is_active boolean default true,
  is_default boolean default false,

  created_at timestamp with time zone default now(),
  updated_at timestamp with time zone default now()
);

create index if not exists idx_call_scripts_user_id on call_scripts(user_id);
create index if not exists idx_call_scripts_agent_config on call_scripts(agent_configuration_id);
create index if not exists idx_call_scripts_type on call_scripts(script_type);

-- The remembered availability days: what they hold and how they are kept current is in
-- definitions/04_availability_cache.sql.
--
-- Both tables are unlogged: writing them costs no WAL flush (a check that fills the cache
-- commits without waiting for the disk), and after a crash PostgreSQL empties both together,
-- which only means the days are computed again. Versions come from a sequence, which a crash
-- or a truncate does not rewind, so a version is never reused.

create schema if not exists slot_cache;

create sequence if not exists slot_cache.version_seq;

create unlogged table if not exists slot_cache.staff_versions (
  staff_member_id uuid primary key,
  version bigint not null
);

create unlogged table if not exists slot_cache.days (
  staff_member_id uuid not null,
  -- The duration asked for; 0 for the staff member's own default.
  duration_key integer not null,
  local_date date not null,
  -- The staff member's version the slots were computed at (0: never changed since migration).
  version bigint not null,
  -- For the order of slots at the same instant (a rename is a new version).
  staff_name text not null,
  -- Every free start of the day in order, whatever the notice (rule 7 depends on the time of the
  -- question, so it is applied when the day is read), with each slot's answer
  -- already built.
  local_times time[] not null,
  starts timestamptz[] not null,
  answers jsonb[] not null,
  primary key (staff_member_id, duration_key, local_date)
)
-- A day's row (a few KB) is kept whole and uncompressed: it is read far more often than written,
-- and decompressing it on every read would cost more than the space saves.
with (toast_tuple_target = 8160);

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
