-- Notifications (CONTRACT section 7): each clinic's channels, and the outbox the worker
-- (`python -m service worker`) delivers from. Rows of the outbox are written by the rx_
-- functions in the same transaction as the voicemail or appointment they are about; the
-- functions, policies and grants are in definitions/09_notifications.sql.

-- A clinic's channels: off until a row is added. `events` null means every event.
create table notification_endpoints (
  id uuid primary key default gen_random_uuid(),
  agent_configuration_id uuid not null references agent_configurations(id) on delete cascade,
  kind text not null,
  target text not null,
  secret text,
  events text[],
  is_active boolean not null default true,
  -- Message text, notes and email addresses go out only where the clinic asks for them.
  include_details boolean not null default false,
  -- An urgent message still unread is sent again every remind_after_minutes, remind_times
  -- times at most (null: never). A second contact is an endpoint of its own whose events are
  -- only '{voicemail.unread_reminder}'.
  remind_after_minutes integer,
  remind_times integer not null default 2,
  description text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint notification_endpoints_kind check (kind in ('webhook', 'email', 'sms')),
  -- https, or plain http on loopback for local testing (the worker sends to it only with
  -- NOTIFICATIONS_ALLOW_LOOPBACK_HTTP=true).
  constraint notification_endpoints_webhook_target check (
    kind <> 'webhook'
    or target ~* '^https://[^/?#@\s]+([/?#]\S*)?$'
    or target ~* '^http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]+)?([/?#]\S*)?$'),
  constraint notification_endpoints_email_target check (
    kind <> 'email' or target ~ '^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$'),
  constraint notification_endpoints_sms_target check (
    kind <> 'sms' or target ~ '^\+[1-9][0-9]{6,14}$'),
  -- The Standard Webhooks secret: whsec_ and the base64 of 24 to 64 random bytes.
  constraint notification_endpoints_webhook_secret check (
    kind <> 'webhook' or coalesce(secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$', false)),
  constraint notification_endpoints_events check (
    events <@ array['voicemail.created', 'voicemail.unread_reminder', 'appointment.booked',
                    'appointment.rescheduled', 'appointment.cancelled']::text[]),
  constraint notification_endpoints_reminders check (
    (remind_after_minutes is null or remind_after_minutes between 1 and 1440)
    and remind_times between 1 and 10)
);

create index idx_notification_endpoints_configuration
  on notification_endpoints (agent_configuration_id) where is_active;

-- The outbox: one row per event and endpoint, so each channel is retried on its own. The id
-- is the notification's stable id (the webhook-id header) across every attempt. `due_at` is
-- also the lease: a worker that claims a row moves it past the lease, so a crashed worker's
-- row comes due again by itself.
create table notifications (
  id uuid primary key default gen_random_uuid(),
  -- The endpoint's clinic, for reading by clinic; no foreign key of its own (the endpoint's
  -- cascades), which spares each queued row one more check in the booking's transaction.
  agent_configuration_id uuid not null,
  -- Not a foreign key either: a key would lock the endpoint's row (for key share) in every
  -- booking's transaction, all of a clinic's bookings on the same rows. The worker skips the
  -- rows of an endpoint that was deleted.
  endpoint_id uuid not null,
  event text not null,
  -- What it is about. Not foreign keys: the outbox is a record of what was sent, and a key
  -- would stop `truncate appointments` (or voicemails) and cost each queued row a check. Rows
  -- about a deleted message or appointment are found by these ids (indexed).
  voicemail_id uuid,
  appointment_id uuid,
  -- The webhook body's `data`, as it was when the event happened.
  data jsonb not null,
  -- 1, 2, ... for the reminders of an unread urgent message; null otherwise.
  reminder integer,
  status text not null default 'pending',
  attempts integer not null default 0,
  due_at timestamptz not null default now(),
  last_attempt_at timestamptz,
  -- Why the last attempt failed, in a few words (a status code, "timeout"); never a secret.
  last_error text,
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint notifications_status check (status in ('pending', 'delivered', 'failed', 'skipped'))
);

create index idx_notifications_due on notifications (due_at) where status = 'pending';
create index idx_notifications_failed on notifications (updated_at) where status = 'failed';
create index idx_notifications_configuration on notifications (agent_configuration_id);
create index idx_notifications_voicemail on notifications (voicemail_id)
  where voicemail_id is not null;
create index idx_notifications_appointment on notifications (appointment_id)
  where appointment_id is not null;
