-- The history and the change counts are kept by statement triggers, not row triggers.
--
-- A batch writes its projects in one statement per kind of event, and the row triggers then
-- ran three history statements and a change check for every row: under the pipeline benchmark
-- about a fifth of Postgres's time (pg_stat_statements: 15,000 history inserts and 15,000
-- closes for 5,000 submissions). A statement trigger does the same for all of a statement's
-- rows at once, from its transition tables.
--
-- What makes a version is unchanged: every row an insert or an update writes, one version per
-- project per transaction (the transaction's last word), except the rank moves, which keep
-- their narrow rank_history rows (migration 0007). Transition tables cannot be combined with an
-- UPDATE OF column list, which is how the row trigger left rank moves out; the statement that
-- applies rank moves now says so for its transaction instead (the setting pmo.moving_ranks,
-- set on before it and off after it by the repository), and the update trigger's WHEN clause
-- reads it. Transition tables also need one trigger per event.

DROP TRIGGER projects_history ON projects;
DROP TRIGGER project_changes ON projects;
DROP FUNCTION record_project_history();
DROP FUNCTION record_project_change();

-- The keys go to the history as an array: its statements then find each project's versions
-- through their indexes whatever the statement's size (a join with the transition table, its
-- plan cached for the session from the first statement's size, could scan the history).
CREATE FUNCTION record_project_versions() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    keys text[] := ARRAY(SELECT project_key FROM written);
BEGIN
    DELETE FROM projects_history WHERE project_key = ANY (keys) AND valid_from = now();
    UPDATE projects_history SET valid_to = now()
        WHERE project_key = ANY (keys) AND valid_to IS NULL;
    INSERT INTO projects_history SELECT w.*, now(), NULL FROM written w;
    RETURN NULL;
END;
$$;

CREATE TRIGGER projects_versions_insert AFTER INSERT ON projects
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION record_project_versions();
CREATE TRIGGER projects_versions_update AFTER UPDATE ON projects
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT
    WHEN (current_setting('pmo.moving_ranks', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION record_project_versions();

-- The change counts the page caches read (migration 0004): each portfolio a statement touched,
-- rank moves included, counted once per transaction: one statement for the portfolios this
-- connection has counted before, note_project_change for one it has not. A project's portfolio
-- is part of its key and never changes, so an update's new rows name every portfolio it
-- touched (and the old rows need not be kept for the trigger: a rank move writes thousands).
CREATE FUNCTION note_project_changes(portfolios text[]) RETURNS void LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    me int := pg_backend_pid();
    tx bigint := txid_current();
    touched text;
BEGIN
    UPDATE project_changes SET txid = tx, changes = changes + 1
        WHERE writer = me AND portfolio = ANY (portfolios) AND txid <> tx;
    FOR touched IN
        SELECT p FROM unnest(portfolios) AS p
        WHERE NOT EXISTS (
            SELECT 1 FROM project_changes c WHERE c.portfolio = p AND c.writer = me
        )
    LOOP
        PERFORM note_project_change(touched);
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION note_project_changes(text[]) FROM PUBLIC;

CREATE FUNCTION record_project_changes() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM note_project_changes(ARRAY(SELECT DISTINCT portfolio FROM replaced));
    ELSE
        PERFORM note_project_changes(ARRAY(SELECT DISTINCT portfolio FROM written));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER project_changes_insert AFTER INSERT ON projects
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION record_project_changes();
CREATE TRIGGER project_changes_update AFTER UPDATE ON projects
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION record_project_changes();
CREATE TRIGGER project_changes_delete AFTER DELETE ON projects
    REFERENCING OLD TABLE AS replaced
    FOR EACH STATEMENT EXECUTE FUNCTION record_project_changes();
