-- Tollgate's ledger on SQLite. Money is INTEGER nano-USD; times are INTEGER
-- microseconds since the Unix epoch (UTC); UUIDs Tollgate makes are 16-byte BLOBs (smaller
-- keys, faster inserts); other ids are TEXT;
-- JSON is TEXT. The PostgreSQL migration with the same number has the same
-- tables and columns with native types.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

INSERT INTO organizations (id, name, created_at)
VALUES ('default', 'Default organization', CAST(strftime('%s', 'now') AS INTEGER) * 1000000);

CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id),
    email       TEXT,
    name        TEXT,
    role        TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'org_admin', 'member')),
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
);
CREATE INDEX users_by_org ON users (org_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES organizations (id),
    user_id       TEXT REFERENCES users (id),
    name          TEXT,
    role          TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'org_admin', 'member')),
    key_prefix    TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_by_org ON api_keys (org_id);

-- One row per upstream attempt or ingested record. No foreign keys: the
-- ledger never refuses a record because of the state of another table.
CREATE TABLE ai_provider_usage (
    request_id               BLOB PRIMARY KEY NOT NULL,
    parent_request_id        BLOB,
    created_at               INTEGER NOT NULL,
    org_id                   TEXT NOT NULL,
    user_id                  TEXT,
    api_key_id               BLOB,
    provider                 TEXT NOT NULL CHECK (provider IN ('openai', 'openrouter', 'local')),
    model                    TEXT NOT NULL,
    task_type                TEXT NOT NULL CHECK (task_type IN ('chat', 'completion', 'embedding', 'image_generation', 'responses')),
    input_tokens             INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens            INTEGER NOT NULL CHECK (output_tokens >= 0),
    cached_input_tokens      INTEGER NOT NULL CHECK (cached_input_tokens >= 0),
    reasoning_tokens         INTEGER NOT NULL CHECK (reasoning_tokens >= 0),
    cost_nano_usd            INTEGER,
    estimated_cost_nano_usd  INTEGER,
    cost_status              TEXT NOT NULL CHECK (cost_status IN ('priced', 'unpriced', 'provider_reported', 'estimated')),
    latency_ms               INTEGER NOT NULL CHECK (latency_ms >= 0),
    time_to_first_token_ms   INTEGER,
    status_code              INTEGER,
    success                  INTEGER NOT NULL CHECK (success IN (0, 1)),
    status                   TEXT NOT NULL CHECK (status IN ('ok', 'error', 'client_disconnected')),
    error_type               TEXT,
    stream                   INTEGER NOT NULL CHECK (stream IN (0, 1)),
    provider_request_id      TEXT,
    metadata                 TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX usage_by_time ON ai_provider_usage (created_at, request_id);
CREATE INDEX usage_by_org_time ON ai_provider_usage (org_id, created_at);
CREATE INDEX usage_by_user_time ON ai_provider_usage (user_id, created_at);
CREATE INDEX usage_by_parent ON ai_provider_usage (parent_request_id) WHERE parent_request_id IS NOT NULL;

CREATE TABLE ai_provider_credits (
    provider                        TEXT PRIMARY KEY NOT NULL CHECK (provider IN ('openai', 'openrouter', 'local')),
    balance_nano_usd                INTEGER,
    total_credits_nano_usd          INTEGER,
    total_usage_nano_usd            INTEGER,
    key_limit_nano_usd              INTEGER,
    key_limit_remaining_nano_usd    INTEGER,
    key_status                      TEXT NOT NULL DEFAULT 'missing' CHECK (key_status IN ('valid', 'invalid', 'missing', 'rate_limited')),
    low_balance_threshold_nano_usd  INTEGER,
    checked_at                      INTEGER
);

CREATE TABLE ai_usage_alerts (
    id               TEXT PRIMARY KEY NOT NULL,
    alert_type       TEXT NOT NULL CHECK (alert_type IN ('high_usage', 'error_rate', 'low_balance', 'quota_exceeded', 'budget', 'custom')),
    provider         TEXT,
    org_id           TEXT,
    severity         TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    title            TEXT NOT NULL,
    message          TEXT NOT NULL,
    threshold_value  TEXT,
    current_value    TEXT,
    status           TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'acknowledged', 'resolved')),
    dedupe_key       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    acknowledged_at  INTEGER,
    acknowledged_by  TEXT,
    resolved_at      INTEGER
);
CREATE UNIQUE INDEX alerts_open_by_dedupe_key ON ai_usage_alerts (dedupe_key) WHERE status <> 'resolved';
CREATE INDEX alerts_by_status ON ai_usage_alerts (status, created_at);

CREATE TABLE ai_usage_budgets (
    id                      TEXT PRIMARY KEY NOT NULL,
    org_id                  TEXT NOT NULL REFERENCES organizations (id),
    provider                TEXT CHECK (provider IN ('openai', 'openrouter', 'local')),
    user_id                 TEXT,
    api_key_id              TEXT,
    budget_type             TEXT NOT NULL CHECK (budget_type IN ('daily', 'weekly', 'monthly')),
    budget_amount_nano_usd  INTEGER NOT NULL CHECK (budget_amount_nano_usd >= 0),
    soft_limit_percent      INTEGER NOT NULL DEFAULT 80 CHECK (soft_limit_percent BETWEEN 0 AND 100),
    hard_limit              INTEGER NOT NULL DEFAULT 0 CHECK (hard_limit IN (0, 1)),
    rollover_policy         TEXT NOT NULL DEFAULT 'none',
    reset_date              TEXT,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX budgets_by_org ON ai_usage_budgets (org_id);

-- Rollup per day (in the configured time zone) × org × provider × model ×
-- task type, updated in the same transaction as the raw rows it sums.
CREATE TABLE ai_model_performance (
    day                    TEXT NOT NULL,
    org_id                 TEXT NOT NULL,
    provider               TEXT NOT NULL,
    model                  TEXT NOT NULL,
    task_type              TEXT NOT NULL,
    requests               INTEGER NOT NULL,
    errors                 INTEGER NOT NULL,
    unpriced_requests      INTEGER NOT NULL,
    input_tokens           INTEGER NOT NULL,
    output_tokens          INTEGER NOT NULL,
    cached_input_tokens    INTEGER NOT NULL,
    reasoning_tokens       INTEGER NOT NULL,
    cost_nano_usd          INTEGER NOT NULL,
    latency_ms_sum         INTEGER NOT NULL,
    ttft_ms_sum            INTEGER NOT NULL,
    ttft_count             INTEGER NOT NULL,
    latency_histogram      TEXT NOT NULL,
    updated_at             INTEGER NOT NULL,
    PRIMARY KEY (day, org_id, provider, model, task_type)
);
CREATE INDEX performance_by_provider ON ai_model_performance (provider, day);
CREATE INDEX performance_by_model ON ai_model_performance (model, day);

CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT,
    result       TEXT NOT NULL,
    client_addr  TEXT,
    details      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_by_time ON audit_log (created_at);
