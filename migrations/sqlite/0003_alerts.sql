-- Alerts: requests and errors per minute × provider × model (kept by the
-- recorder in the ledger's transaction, for error-rate windows), what an
-- alert is about, who resolved it, and every change to an alert (its
-- history, and the source of webhook events).

CREATE TABLE ai_usage_minutes (
    minute        INTEGER NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    errors        INTEGER NOT NULL,
    quota_errors  INTEGER NOT NULL,
    PRIMARY KEY (minute, provider, model)
) WITHOUT ROWID;

ALTER TABLE ai_usage_alerts ADD COLUMN model TEXT;
ALTER TABLE ai_usage_alerts ADD COLUMN resolved_by TEXT;
-- For an alert resolved by a person while its condition held: whether the
-- condition has cleared since (until then it is not raised again at the
-- same severity).
ALTER TABLE ai_usage_alerts ADD COLUMN condition_cleared INTEGER NOT NULL DEFAULT 0;
CREATE INDEX alerts_by_dedupe_key ON ai_usage_alerts (dedupe_key, created_at);

CREATE TABLE ai_alert_events (
    id          TEXT PRIMARY KEY NOT NULL,
    alert_id    TEXT NOT NULL REFERENCES ai_usage_alerts (id) ON DELETE CASCADE,
    event       TEXT NOT NULL CHECK (event IN ('created', 'escalated', 'acknowledged', 'resolved')),
    severity    TEXT NOT NULL,
    actor       TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX alert_events_by_alert ON ai_alert_events (alert_id, created_at);
