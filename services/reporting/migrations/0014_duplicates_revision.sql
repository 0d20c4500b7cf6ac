-- A project's possible duplicates arrive on their own topic (pmo.intake.duplicates.v1), after
-- the change that opened it and on another consumer than the project's changes: they carry
-- the revision they were found at, kept beside them in the row (duplicates_revision), so that
-- they replace only those of an older revision and are shown only while the project is at
-- theirs (none yet: those written before, from the project's change, go with its next one).
-- In the row, not in a table of their own: the two consumers' writes of a project meet on its
-- row lock, and each reads the other's committed columns when it gets the lock.
ALTER TABLE projects ADD COLUMN duplicates_revision bigint;

-- The history holds every column of projects, in the same order up to possible_duplicates; a
-- column added since follows valid_from and valid_to (a table's columns cannot be reordered),
-- so the history trigger names the columns it copies.
ALTER TABLE projects_history ADD COLUMN duplicates_revision bigint;

CREATE OR REPLACE FUNCTION record_project_versions() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
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
    INSERT INTO projects_history (
        project_key, portfolio, source, external_id, name, stage, program, sponsor, value, cost,
        currency, mandatory, risk, withdrawn, revision, submission_id, score, rank, explanation,
        ranking_version, plan_status, start_month, end_month, deferral, plan_version,
        updated_at, model, model_version, score_cause, override, possible_duplicates,
        duplicates_revision, valid_from, valid_to)
        SELECT w.project_key, w.portfolio, w.source, w.external_id, w.name, w.stage, w.program,
               w.sponsor, w.value, w.cost, w.currency, w.mandatory, w.risk, w.withdrawn,
               w.revision, w.submission_id, w.score, w.rank, w.explanation, w.ranking_version,
               w.plan_status, w.start_month, w.end_month, w.deferral, w.plan_version,
               w.updated_at, w.model, w.model_version, w.score_cause, w.override,
               w.possible_duplicates, w.duplicates_revision, coalesce(own.since, at), NULL
        FROM written w
        LEFT JOIN unnest(own_keys, own_since) AS own (project_key, since)
            ON own.project_key = w.project_key;
    RETURN NULL;
END;
$$;

-- Returns history rows: their columns in the history's order.
CREATE OR REPLACE FUNCTION projects_as_of(at timestamptz) RETURNS SETOF projects_history
LANGUAGE sql STABLE AS $$
    SELECT h.project_key, h.portfolio, h.source, h.external_id, h.name, h.stage, h.program,
           h.sponsor, h.value, h.cost, h.currency, h.mandatory, h.risk, h.withdrawn,
           h.revision, h.submission_id, h.score,
           CASE WHEN m.ranking_version > h.ranking_version THEN m.rank ELSE h.rank END,
           h.explanation,
           greatest(h.ranking_version, m.ranking_version),
           h.plan_status, h.start_month, h.end_month, h.deferral, h.plan_version, h.updated_at,
           h.model, h.model_version, h.score_cause, h.override, h.possible_duplicates,
           h.valid_from, h.valid_to, h.duplicates_revision
    FROM projects_history h
    LEFT JOIN LATERAL (
        SELECT r.rank, r.ranking_version FROM rank_history r
        WHERE r.project_key = h.project_key AND r.valid_from <= at
        ORDER BY r.ranking_version DESC LIMIT 1
    ) m ON true
    WHERE h.valid_from <= at AND (h.valid_to IS NULL OR h.valid_to > at)
$$;
