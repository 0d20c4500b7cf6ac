-- A notice when a transaction writes versions of projects, for the API's requests that wait for
-- a project's revision (the project endpoint's min_revision and wait; services/reporting/waits.py).
--
-- Each statement that writes versions (the project lane's upserts, scores, plans: every insert
-- or update of projects but the rank moves, as for the history in migration 0010) notifies the
-- channel reporting_projects, without a payload. Postgres delivers a transaction's notices when
-- it commits, once however many statements sent the same one, and only to sessions listening:
-- an API process listens while requests wait, and reads then the projects they wait for.
CREATE FUNCTION notify_project_versions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('reporting_projects', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER projects_notice_insert AFTER INSERT ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION notify_project_versions();
CREATE TRIGGER projects_notice_update AFTER UPDATE ON projects
    FOR EACH STATEMENT
    WHEN (current_setting('pmo.moving_ranks', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION notify_project_versions();
