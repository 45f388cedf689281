-- Erasure (GDPR): an erased person's id is replaced in the audit entries
-- that name them (on PostgreSQL through an owner's function; the server's
-- role cannot otherwise change the log).
CREATE INDEX audit_by_target ON audit_log (target);
