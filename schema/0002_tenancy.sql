-- Tenancy on a hosted Supabase project (CONTRACT.md section 6): the tables' part. The rules
-- that use these (who may write agent_configs, which rows may reference which) live with the
-- definitions.

-- Retell's ids are a few dozen characters; a bound keeps a hostile body from making a key of
-- megabytes (every call id and agent id is in a unique index).
alter table customer_call_logs
  add constraint customer_call_logs_retell_call_id_length
    check (char_length(retell_call_id) <= 128),
  add constraint customer_call_logs_agent_id_length check (char_length(agent_id) <= 128);
alter table agent_configurations
  add constraint agent_configurations_agent_id_length check (char_length(agent_id) <= 128);
alter table agent_configs
  add constraint agent_configs_agent_id_length check (char_length(agent_id) <= 128);

-- The operator's mapping gives an agent id to one user: the clinic its calls are routed to.
create unique index if not exists idx_agent_configs_agent_id_unique on agent_configs(agent_id);
