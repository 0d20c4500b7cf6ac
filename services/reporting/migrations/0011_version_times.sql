-- A project's versions are dated when they are written, not when their transaction began.
--
-- A version was dated now(): its transaction's start. Reporting's batches run concurrently
-- (replicas, and since this release the project lane beside the consumer of scores and plans,
-- docs/reporting.md), so a batch that began first but wrote a project after another batch had
-- committed a version of it closed that version before the version began: an interval ending
-- before its start, and two versions of the project valid at once for projects_as_of. Writers
-- of one project take its row lock in turn and write its versions under it, so the clock read
-- then (clock_timestamp()) orders each project's versions as their writers did.
--
-- One version per project per transaction, as before: an open version this transaction made
-- (its xmin is this transaction's id) is replaced, and its replacement keeps its valid_from,
-- where the version before it ends. (A version written in a subtransaction carries the
-- subtransaction's id; reporting writes none there: rank moves, applied in a savepoint, make
-- no versions.)
CREATE OR REPLACE FUNCTION record_project_versions() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    keys text[] := ARRAY(SELECT project_key FROM written);
    at timestamptz := clock_timestamp();
    own_keys text[];
    own_since timestamptz[];
BEGIN
    WITH replaced AS (
        DELETE FROM projects_history
        WHERE project_key = ANY (keys) AND valid_to IS NULL
          AND xmin = pg_current_xact_id()::xid
        RETURNING project_key, valid_from
    )
    SELECT array_agg(project_key), array_agg(valid_from) INTO own_keys, own_since FROM replaced;
    UPDATE projects_history SET valid_to = at WHERE project_key = ANY (keys) AND valid_to IS NULL;
    INSERT INTO projects_history
        SELECT w.*, coalesce(own.since, at), NULL
        FROM written w
        LEFT JOIN unnest(own_keys, own_since) AS own (project_key, since)
            ON own.project_key = w.project_key;
    RETURN NULL;
END;
$$;
