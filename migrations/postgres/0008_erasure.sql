-- Erasure (GDPR). The audit log stays append-only for the server with one
-- exception, owned by the tables' owner: replacing an erased person's id
-- with an anonymous token in the entries about them (`user.*` actions in
-- their organization). The server may call this function and can do
-- nothing else to the log.
CREATE INDEX audit_by_target ON audit_log (target);

CREATE POLICY erase ON audit_log FOR UPDATE TO CURRENT_USER USING (true);

DO $$
BEGIN
    EXECUTE format($function$
        CREATE FUNCTION %1$I.tollgate_erase_audit_subject(subject TEXT, replacement TEXT, org TEXT)
        RETURNS BIGINT
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        -- The owner is bound by the forced policies too: it reads as the
        -- server, for this call only.
        SET tollgate.role = 'system'
        AS $body$
        DECLARE
            changed BIGINT;
        BEGIN
            IF coalesce(subject, '') = '' OR coalesce(replacement, '') = '' OR coalesce(org, '') = '' THEN
                RAISE EXCEPTION 'subject, replacement and organization must not be empty';
            END IF;
            UPDATE %1$I.audit_log SET target = replacement
            WHERE target = subject AND org_id = org AND action LIKE 'user.%%';
            GET DIAGNOSTICS changed = ROW_COUNT;
            RETURN changed;
        END
        $body$
    $function$, current_schema());
    EXECUTE format('REVOKE ALL ON FUNCTION %I.tollgate_erase_audit_subject(TEXT, TEXT, TEXT) FROM PUBLIC',
                   current_schema());
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.tollgate_erase_audit_subject(TEXT, TEXT, TEXT) TO tollgate_app',
                   current_schema());
END
$$;
