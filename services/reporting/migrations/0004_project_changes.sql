-- Which transactions changed each portfolio's projects, so that a reporting replica can tell in
-- one indexed read whether a page it rendered earlier is still current, whichever replica (or
-- any other writer) made the change. Written by a trigger, in the writing transaction.
--
-- One row per portfolio and writing backend, counting the transactions of that backend that
-- changed the portfolio. The API's validator is the sum of the counts over the portfolio's rows:
-- every committed change raises it, and nothing lowers it. A single counter row per portfolio
-- would do the same, but every writer would queue on its lock until commit, and two replicas
-- writing two portfolios in opposite orders would deadlock; a backend's own row is never
-- contended. A max(updated_at) or a sequence would not do: a transaction that commits after a
-- later-started one would leave either unchanged.
--
-- When a backend first writes a portfolio, the rows of backends that have gone are folded into
-- its own (their counts moved there in the same transaction, so the sum is unchanged; rows
-- another transaction is folding are skipped, not waited for), so the table stays about as
-- large as the number of live writers per portfolio.

CREATE TABLE project_changes (
    portfolio text NOT NULL,
    writer    int NOT NULL,      -- pg_backend_pid() of the writer
    txid      bigint NOT NULL,   -- its latest transaction to change the portfolio
    changes   numeric NOT NULL,  -- transactions counted in this row
    PRIMARY KEY (portfolio, writer)
);

-- The functions that touch tables carry the migration's search_path: TRUNCATE may come from a
-- connection whose search_path does not name reporting (an administrator's).
CREATE FUNCTION note_project_change(changed text) RETURNS void LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    me int := pg_backend_pid();
    tx bigint := txid_current();
BEGIN
    UPDATE project_changes SET txid = tx, changes = changes + 1
        WHERE portfolio = changed AND writer = me AND txid <> tx;
    IF NOT FOUND AND NOT EXISTS (
        SELECT 1 FROM project_changes WHERE portfolio = changed AND writer = me
    ) THEN
        WITH gone AS (
            DELETE FROM project_changes WHERE (portfolio, writer) IN (
                SELECT portfolio, writer FROM project_changes
                WHERE portfolio = changed
                  AND writer NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
                FOR UPDATE SKIP LOCKED
            )
            RETURNING changes
        )
        INSERT INTO project_changes (portfolio, writer, txid, changes)
            SELECT changed, me, tx, 1 + coalesce(sum(changes), 0) FROM gone;
    END IF;
    -- Until the transaction ends (or its savepoint is rolled back): a run of rows of one
    -- portfolio is noted once, not once a row (about 30 microseconds a row otherwise).
    PERFORM set_config('pmo.project_change_noted', 'p:' || changed, true);
END;
$$;
-- Called by the triggers below as the writer; nobody calls it directly (not the BI role).
REVOKE EXECUTE ON FUNCTION note_project_change(text) FROM PUBLIC;

CREATE FUNCTION record_project_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE'
       AND current_setting('pmo.project_change_noted', true)
           IS DISTINCT FROM 'p:' || NEW.portfolio THEN
        PERFORM note_project_change(NEW.portfolio);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.portfolio <> NEW.portfolio) THEN
        PERFORM note_project_change(OLD.portfolio);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER project_changes AFTER INSERT OR UPDATE OR DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION record_project_change();

-- A rebuild empties projects with TRUNCATE, which row triggers do not see.
CREATE FUNCTION record_projects_truncated() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM note_project_change(portfolio) FROM (SELECT DISTINCT portfolio FROM projects) p;
    RETURN NULL;
END;
$$;
CREATE TRIGGER project_changes_truncate BEFORE TRUNCATE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION record_projects_truncated();

