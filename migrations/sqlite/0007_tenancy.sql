-- Tenancy: audit entries name the organization they belong to, so an
-- organization's administrators can read theirs. (PostgreSQL's migration
-- with this number also adds its role and row-level security; SQLite has
-- neither, and the store scopes every query itself.)
ALTER TABLE audit_log ADD COLUMN org_id TEXT;
CREATE INDEX audit_by_org_time ON audit_log (org_id, created_at);
