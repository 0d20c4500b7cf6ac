-- A project's version is written once: the history no longer closes the version before.
--
-- Each version carried its end (valid_to), set by the next change of the project: an update of
-- the whole earlier version, a kilobyte and more with its explanation and plan, non-HOT since
-- the unique partial index of open versions reads valid_to (migration 0006), so each change of
-- a project wrote its row twice over and left a dead one behind. Under the benchmark's steady
-- feed the closing updates and the own-version deletes they went with were a sixth of
-- reporting's statement time (docs/performance.md). A version's end is the next version's
-- start, so it is now read, not stored: v_projects_history takes it from the next version
-- (lead), projects_as_of keeps the versions with no later one by then.
--
-- A statement trigger also runs for every statement of its event, whether the statement wrote
-- rows or not, and an INSERT ... ON CONFLICT DO UPDATE fires both the insert's and the update's:
-- every upsert of projects ran the history's statements and the change count's twice, once
-- for rows it had not written. They now return at once when the statement wrote nothing.

DROP VIEW v_projects_history;
DROP FUNCTION projects_as_of(timestamptz);
DROP INDEX projects_history_open;
ALTER TABLE projects_history DROP COLUMN valid_to;

-- One version per project per transaction, its last word, dated when the transaction first
-- wrote the project (migration 0011): a transaction's own version of a project is found among
-- the project's versions since the transaction began, through (project_key, valid_from).
CREATE OR REPLACE FUNCTION record_project_versions() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
DECLARE
    keys text[] := ARRAY(SELECT project_key FROM written);
    at timestamptz;
    own_keys text[];
    own_since timestamptz[];
BEGIN
    IF cardinality(keys) = 0 THEN
        RETURN NULL;
    END IF;
    at := clock_timestamp();
    WITH replaced AS (
        DELETE FROM projects_history
        WHERE project_key = ANY (keys) AND valid_from >= now()
          AND xmin = pg_current_xact_id()::xid
        RETURNING project_key, valid_from
    )
    SELECT array_agg(project_key), array_agg(valid_from) INTO own_keys, own_since FROM replaced;
    INSERT INTO projects_history (
        project_key, portfolio, source, external_id, name, stage, program, sponsor, value, cost,
        currency, mandatory, risk, withdrawn, revision, submission_id, score, rank, explanation,
        ranking_version, plan_status, start_month, end_month, deferral, plan_version,
        updated_at, model, model_version, score_cause, override, possible_duplicates,
        duplicates_revision, valid_from)
        SELECT w.project_key, w.portfolio, w.source, w.external_id, w.name, w.stage, w.program,
               w.sponsor, w.value, w.cost, w.currency, w.mandatory, w.risk, w.withdrawn,
               w.revision, w.submission_id, w.score, w.rank, w.explanation, w.ranking_version,
               w.plan_status, w.start_month, w.end_month, w.deferral, w.plan_version,
               w.updated_at, w.model, w.model_version, w.score_cause, w.override,
               w.possible_duplicates, w.duplicates_revision, coalesce(own.since, at)
        FROM written w
        LEFT JOIN unnest(own_keys, own_since) AS own (project_key, since)
            ON own.project_key = w.project_key;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION record_project_changes() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    portfolios text[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        portfolios := ARRAY(SELECT DISTINCT portfolio FROM replaced);
    ELSE
        portfolios := ARRAY(SELECT DISTINCT portfolio FROM written);
    END IF;
    IF cardinality(portfolios) > 0 THEN
        PERFORM note_project_changes(portfolios);
    END IF;
    RETURN NULL;
END;
$$;

-- The rows as they were at an instant: each project's last version by then, with the ranks
-- moved since it (migration 0007). Returns history rows: their columns in the history's order.
CREATE FUNCTION projects_as_of(at timestamptz) RETURNS SETOF projects_history
LANGUAGE sql STABLE AS $$
    SELECT h.project_key, h.portfolio, h.source, h.external_id, h.name, h.stage, h.program,
           h.sponsor, h.value, h.cost, h.currency, h.mandatory, h.risk, h.withdrawn,
           h.revision, h.submission_id, h.score,
           CASE WHEN m.ranking_version > h.ranking_version THEN m.rank ELSE h.rank END,
           h.explanation,
           greatest(h.ranking_version, m.ranking_version),
           h.plan_status, h.start_month, h.end_month, h.deferral, h.plan_version, h.updated_at,
           h.model, h.model_version, h.score_cause, h.override, h.possible_duplicates,
           h.valid_from, h.duplicates_revision
    FROM projects_history h
    LEFT JOIN LATERAL (
        SELECT r.rank, r.ranking_version FROM rank_history r
        WHERE r.project_key = h.project_key AND r.valid_from <= at
        ORDER BY r.ranking_version DESC LIMIT 1
    ) m ON true
    WHERE h.valid_from <= at
      AND NOT EXISTS (
          SELECT FROM projects_history n
          WHERE n.project_key = h.project_key AND n.valid_from > h.valid_from
            AND n.valid_from <= at
      )
$$;
REVOKE EXECUTE ON FUNCTION projects_as_of(timestamptz) FROM PUBLIC;

-- For BI, as before: a version's valid_to is the next version's valid_from (empty while it is
-- the project's last). Partitioned by portfolio and project, so that a filter on either is
-- applied before the versions are read.
CREATE VIEW v_projects_history AS
    SELECT portfolio, source, external_id, project_key, name, stage, program, value, cost,
           score, rank, plan_status, start_month, end_month, withdrawn, valid_from, valid_to,
           ranking_version
    FROM (
        SELECT h.*, lead(h.valid_from) OVER (
            PARTITION BY h.portfolio, h.project_key ORDER BY h.valid_from
        ) AS valid_to
        FROM projects_history h
    ) v
    WHERE revision IS NOT NULL AND valid_to IS DISTINCT FROM valid_from;
GRANT SELECT ON v_projects_history TO pmo_bi;
