-- Tenancy in the database itself. The server runs as `tollgate_app`, a
-- role that owns nothing and cannot bypass row-level security; every table
-- has RLS enabled and forced, and its policies read three settings the
-- store sets per transaction from the authenticated caller:
--   tollgate.role  'admin' | 'org_admin' | 'member'  ('system' for the
--                  server's own background work, set per connection)
--   tollgate.org   the caller's organization
--   tollgate.user  the caller's user
-- With none of them set, every policy is false: a query without a caller
-- returns nothing. The settings are read through scalar subqueries, so each
-- is evaluated once per statement, not once per row.

DO $$
BEGIN
    CREATE ROLE tollgate_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION
    -- Another database on this server (or a concurrent migration) made it.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'tollgate_app', 'MEMBER') THEN
        EXECUTE format('GRANT tollgate_app TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO tollgate_app', current_schema());
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO tollgate_app', current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO tollgate_app', current_schema());
END
$$;

REVOKE ALL ON _sqlx_migrations FROM tollgate_app;

-- The audit log is append-only for the server.
ALTER TABLE audit_log ADD COLUMN org_id TEXT;
CREATE INDEX audit_by_org_time ON audit_log (org_id, created_at);
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM tollgate_app;

-- Every table: enabled and forced (the owner is bound too).
DO $$
DECLARE
    name TEXT;
BEGIN
    FOR name IN
        SELECT tablename FROM pg_tables
        WHERE schemaname = current_schema() AND tablename <> '_sqlx_migrations'
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', name);
    END LOOP;
END
$$;

-- Usage and its per-user rollups: administrators see all, organization
-- administrators their organization, members their own rows.
DO $$
DECLARE
    name TEXT;
BEGIN
    FOREACH name IN ARRAY ARRAY['ai_provider_usage', 'ai_usage_daily', 'ai_usage_hourly',
                                'ai_usage_daily_tags', 'ai_budget_spend', 'api_keys']
    LOOP
        EXECUTE format($policy$
            CREATE POLICY tenant ON %I USING (
                (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
                OR (org_id = (SELECT current_setting('tollgate.org', true))
                    AND ((SELECT current_setting('tollgate.role', true) = 'org_admin')
                         OR user_id = (SELECT nullif(current_setting('tollgate.user', true), '')))))
        $policy$, name);
    END LOOP;
END
$$;

-- Per-organization rollup with no user dimension: no members.
CREATE POLICY tenant ON ai_model_performance USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR (org_id = (SELECT current_setting('tollgate.org', true))
        AND (SELECT current_setting('tollgate.role', true) = 'org_admin')));

-- Alerts and budgets: members read their organization's (budgets: the
-- organization-wide ones and their own, not those on another user or on a
-- key); organization administrators change them.
CREATE POLICY read ON ai_usage_alerts FOR SELECT USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR org_id = (SELECT current_setting('tollgate.org', true)));
CREATE POLICY manage ON ai_usage_alerts USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR (org_id = (SELECT current_setting('tollgate.org', true))
        AND (SELECT current_setting('tollgate.role', true) = 'org_admin')));

CREATE POLICY read ON ai_usage_budgets FOR SELECT USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR (org_id = (SELECT current_setting('tollgate.org', true))
        AND ((SELECT current_setting('tollgate.role', true) = 'org_admin')
             OR (user_id IS NULL AND api_key_id IS NULL)
             OR user_id = (SELECT nullif(current_setting('tollgate.user', true), '')))));
CREATE POLICY manage ON ai_usage_budgets USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR (org_id = (SELECT current_setting('tollgate.org', true))
        AND (SELECT current_setting('tollgate.role', true) = 'org_admin')));

-- Organizations and users: everyone reads their own; organization
-- administrators manage their organization's users; only administrators
-- make organizations.
CREATE POLICY read ON organizations FOR SELECT USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR id = (SELECT current_setting('tollgate.org', true)));
CREATE POLICY manage ON organizations USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin')));

CREATE POLICY read ON users FOR SELECT USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR (org_id = (SELECT current_setting('tollgate.org', true))
        AND ((SELECT current_setting('tollgate.role', true) = 'org_admin')
             OR id = (SELECT nullif(current_setting('tollgate.user', true), '')))));
CREATE POLICY manage ON users USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR (org_id = (SELECT current_setting('tollgate.org', true))
        AND (SELECT current_setting('tollgate.role', true) = 'org_admin')));

-- The audit log: organization administrators read their organization's;
-- every caller's changes are written (as themselves).
CREATE POLICY read ON audit_log FOR SELECT USING (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR (org_id = (SELECT current_setting('tollgate.org', true))
        AND (SELECT current_setting('tollgate.role', true) = 'org_admin')));
CREATE POLICY append ON audit_log FOR INSERT WITH CHECK (
    (SELECT current_setting('tollgate.role', true) IN ('system', 'admin'))
    OR org_id = (SELECT current_setting('tollgate.org', true)));

-- Everything else is the server's and administrators' alone: provider
-- credits, webhooks and their deliveries, budget leases and events, alert
-- events, the per-minute error aggregate, scheduled reports.
DO $$
DECLARE
    name TEXT;
BEGIN
    FOREACH name IN ARRAY ARRAY['ai_provider_credits', 'webhooks', 'webhook_deliveries',
                                'webhook_attempts', 'ai_budget_leases', 'ai_budget_events',
                                'ai_alert_events', 'ai_usage_minutes', 'scheduled_reports']
    LOOP
        EXECUTE format($policy$
            CREATE POLICY server ON %I USING (
                (SELECT current_setting('tollgate.role', true) IN ('system', 'admin')))
        $policy$, name);
    END LOOP;
END
$$;
