-- A version notice names the projects its statement wrote (services/reporting/waits.py).
--
-- The notices of migration 0013 carried no payload, so an API process with any request waiting
-- read every waited-for project on every notice: on each commit of the project lane, and of
-- scores and plans, whichever projects they wrote. On the benchmark's freshness path those reads
-- took the API's backend 0.14 ms of Postgres's CPU a submission, against 0.17 for the project
-- lane's own statements (docs/performance.md). A notice now says which projects it is about,
-- and the watcher reads only the waited-for projects it names.
--
-- The payload is the keys written, one a line, when they fit within the notice's 8,000 bytes;
-- else the portfolios written, each ending in '/' (every project of it), when those fit; else
-- empty, which means any project. A statement that wrote no row notifies nothing: an
-- INSERT ... ON CONFLICT DO UPDATE fires both the insert's and the update's statement trigger
-- (migration 0015). Postgres still delivers a transaction's notices when it commits, one for
-- each distinct payload.
CREATE OR REPLACE FUNCTION notify_project_versions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := (SELECT string_agg(project_key, E'\n') FROM written);
BEGIN
    IF payload IS NULL THEN
        RETURN NULL;
    END IF;
    IF octet_length(payload) > 7900 THEN
        payload := (SELECT string_agg(DISTINCT portfolio || '/', E'\n') FROM written);
        IF octet_length(payload) > 7900 THEN
            payload := '';
        END IF;
    END IF;
    PERFORM pg_notify('reporting_projects', payload);
    RETURN NULL;
END;
$$;

DROP TRIGGER projects_notice_insert ON projects;
DROP TRIGGER projects_notice_update ON projects;
CREATE TRIGGER projects_notice_insert AFTER INSERT ON projects
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION notify_project_versions();
CREATE TRIGGER projects_notice_update AFTER UPDATE ON projects
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT
    WHEN (current_setting('pmo.moving_ranks', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION notify_project_versions();
