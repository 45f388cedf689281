-- Budgets: several soft thresholds, a time zone, a rollover cap; spend per
-- 15 minutes and attribution, kept by the recorder in the same transaction
-- as the ledger rows it sums; leases through which gateway instances share
-- a budget; and the soft-threshold events, one per threshold per period.

ALTER TABLE ai_usage_budgets ADD COLUMN soft_limit_percents TEXT NOT NULL DEFAULT '[80]';
ALTER TABLE ai_usage_budgets ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
ALTER TABLE ai_usage_budgets ADD COLUMN rollover_cap_nano_usd INTEGER;

-- Every IANA time zone's offset is a whole number of quarter hours, so any
-- budget period is a whole number of these buckets. '' stands for no user
-- or no key (so that the primary key can hold them).
CREATE TABLE ai_budget_spend (
    org_id         TEXT NOT NULL,
    bucket_start   INTEGER NOT NULL,
    provider       TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    api_key_id     TEXT NOT NULL,
    requests       INTEGER NOT NULL,
    cost_nano_usd  INTEGER NOT NULL,
    PRIMARY KEY (org_id, bucket_start, provider, user_id, api_key_id)
) WITHOUT ROWID;

CREATE TABLE ai_budget_leases (
    budget_id        TEXT NOT NULL REFERENCES ai_usage_budgets (id) ON DELETE CASCADE,
    period_start     INTEGER NOT NULL,
    instance_id      TEXT NOT NULL,
    leased_nano_usd  INTEGER NOT NULL,
    held_nano_usd    INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    PRIMARY KEY (budget_id, period_start, instance_id)
);

CREATE TABLE ai_budget_events (
    budget_id          TEXT NOT NULL REFERENCES ai_usage_budgets (id) ON DELETE CASCADE,
    period_start       INTEGER NOT NULL,
    threshold_percent  INTEGER NOT NULL,
    limit_nano_usd     INTEGER NOT NULL,
    spent_nano_usd     INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (budget_id, period_start, threshold_percent)
);
