-- Rank moves are kept as narrow rows, not as whole versions of the project row.
--
-- A new project moves the rank of every project below it. Each move had made a full version in
-- projects_history (the row's every column, its explanation and plan included, plus closing
-- the previous version), and that was most of what a steady feed of submissions cost
-- Postgres. A move now writes one row here (project, version, rank, when), in the statement
-- that applies it; projects_history keeps a version for every other change, the rank as it
-- then was included.
--
-- The rank of a project at an instant T is that of its version valid at T, unless a newer
-- ranking moved it by T: then the move of the newest ranking recorded by T (projects_as_of
-- below). Newest by ranking version, not by time: a move is dated by the start of the
-- transaction that applied it, and two writers' transactions may commit in another order than
-- they started; the row itself only ever takes the higher version.

CREATE TABLE rank_history (
    project_key     text NOT NULL,
    portfolio       text NOT NULL,
    ranking_version bigint NOT NULL,
    rank            int NOT NULL,
    valid_from      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rank_history_key ON rank_history (project_key, ranking_version);

-- The history trigger now fires only for updates that set a column other than rank,
-- ranking_version and updated_at, which is what a rank move sets. A migration that adds a
-- column to projects adds it to projects_history, to this list and to projects_as_of's select
-- list too (tests compare the trigger's list and projects_history's columns with projects').
DROP TRIGGER projects_history ON projects;
CREATE TRIGGER projects_history AFTER INSERT OR UPDATE OF
    project_key, portfolio, source, external_id, name, stage, program, sponsor, value, cost,
    currency, mandatory, risk, withdrawn, revision, submission_id, score, explanation,
    plan_status, start_month, end_month, deferral, plan_version, model, model_version,
    score_cause, override, possible_duplicates
    ON projects FOR EACH ROW EXECUTE FUNCTION record_project_history();

-- The project rows as they were at ``at``: each project's version valid then, with the rank
-- of the newest ranking's move recorded by then when that ranking is newer than the version's.
-- A plain
-- SQL function, so the planner inlines it and a caller's filter (a portfolio) reaches the
-- tables' indexes.
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
           h.valid_from, h.valid_to
    FROM projects_history h
    LEFT JOIN LATERAL (
        SELECT r.rank, r.ranking_version FROM rank_history r
        WHERE r.project_key = h.project_key AND r.valid_from <= at
        ORDER BY r.ranking_version DESC LIMIT 1
    ) m ON true
    WHERE h.valid_from <= at AND (h.valid_to IS NULL OR h.valid_to > at)
$$;

-- For reporting's own reads (the API's as_of); no other role calls it.
REVOKE EXECUTE ON FUNCTION projects_as_of(timestamptz) FROM PUBLIC;

-- For BI: every rank a project has been moved to, with when. A project's rank at an instant
-- is that of its v_projects_history version valid then, unless this view has a move recorded
-- by then with a higher ranking_version: then the highest such move's (docs/reporting.md).
CREATE VIEW v_rank_history AS
    SELECT portfolio, project_key, rank, ranking_version, valid_from FROM rank_history;
GRANT SELECT ON v_rank_history TO pmo_bi;
-- The version's ranking version, to compare with the moves'.
CREATE OR REPLACE VIEW v_projects_history AS
    SELECT portfolio, source, external_id, project_key, name, stage, program, value, cost,
           score, rank, plan_status, start_month, end_month, withdrawn, valid_from, valid_to,
           ranking_version
    FROM projects_history WHERE revision IS NOT NULL AND valid_to IS DISTINCT FROM valid_from;
