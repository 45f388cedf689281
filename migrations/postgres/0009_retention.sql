-- Retention: expired rows are deleted in small batches by the server. The
-- audit log stays append-only for the server's role; expiring old entries
-- goes through this owner's function, which deletes only entries older
-- than the given time, at most `batch` of them per call.
CREATE INDEX alerts_resolved ON ai_usage_alerts (status, resolved_at);
CREATE INDEX deliveries_by_age ON webhook_deliveries (created_at);

CREATE POLICY expire ON audit_log FOR DELETE TO CURRENT_USER USING (true);

DO $$
BEGIN
    EXECUTE format($function$
        CREATE FUNCTION %1$I.tollgate_expire_audit(before TIMESTAMPTZ, batch INTEGER)
        RETURNS BIGINT
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        SET tollgate.role = 'system'
        AS $body$
        DECLARE
            deleted BIGINT;
        BEGIN
            IF before IS NULL OR batch IS NULL OR batch < 1 THEN
                RAISE EXCEPTION 'a time and a positive batch size are needed';
            END IF;
            DELETE FROM %1$I.audit_log WHERE id IN (
                SELECT id FROM %1$I.audit_log WHERE created_at < before ORDER BY created_at LIMIT batch);
            GET DIAGNOSTICS deleted = ROW_COUNT;
            RETURN deleted;
        END
        $body$
    $function$, current_schema());
    EXECUTE format('REVOKE ALL ON FUNCTION %I.tollgate_expire_audit(TIMESTAMPTZ, INTEGER) FROM PUBLIC',
                   current_schema());
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.tollgate_expire_audit(TIMESTAMPTZ, INTEGER) TO tollgate_app',
                   current_schema());
END
$$;
