-- Retention: indexes for deleting expired resolved alerts and finished
-- webhook deliveries in small batches. (PostgreSQL's migration with this
-- number also adds the owner's function that expires audit entries.)
CREATE INDEX alerts_resolved ON ai_usage_alerts (status, resolved_at);
CREATE INDEX deliveries_by_age ON webhook_deliveries (created_at);
