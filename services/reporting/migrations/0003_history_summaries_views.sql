-- History of the portfolio read model (every version of every row, with its validity), plan
-- summaries (every version kept), scenario results, the compacted-topic bookkeeping, and the
-- views BI tools read through the read-only role pmo_bi.
--
-- projects_history mirrors projects column for column: a migration that adds a column to one
-- adds it to the other.

CREATE TABLE projects_history (LIKE projects);
ALTER TABLE projects_history ADD COLUMN valid_from timestamptz NOT NULL;
ALTER TABLE projects_history ADD COLUMN valid_to timestamptz;
CREATE INDEX projects_history_key ON projects_history (project_key, valid_from);
CREATE INDEX projects_history_portfolio ON projects_history (portfolio, valid_from);

-- One history row per project per transaction: the transaction's last word on it.
CREATE FUNCTION record_project_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM projects_history WHERE project_key = NEW.project_key AND valid_from = now();
    UPDATE projects_history SET valid_to = now()
        WHERE project_key = NEW.project_key AND valid_to IS NULL;
    INSERT INTO projects_history SELECT NEW.*, now(), NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER projects_history AFTER INSERT OR UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION record_project_history();

CREATE TABLE plan_summaries (
    portfolio      text NOT NULL,
    plan_version   bigint NOT NULL,
    planned_at     timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    horizon_start  text NOT NULL,
    horizon_months int NOT NULL,
    utilisation    jsonb NOT NULL,
    conflicts      jsonb NOT NULL,
    skill_gaps     jsonb NOT NULL,
    PRIMARY KEY (portfolio, plan_version)
);
CREATE INDEX plan_summaries_recorded ON plan_summaries (portfolio, recorded_at);

CREATE TABLE scenarios (
    request_id  text PRIMARY KEY,
    portfolio   text NOT NULL,
    kind        text NOT NULL,
    author      text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    computed_at timestamptz,
    result      jsonb
);
CREATE INDEX scenarios_portfolio ON scenarios (portfolio, requested_at);

-- The latest plan summary per portfolio.
CREATE VIEW current_summaries AS
    SELECT DISTINCT ON (portfolio) * FROM plan_summaries
    ORDER BY portfolio, plan_version DESC;

-- Views for BI tools ----------------------------------------------------------------------

CREATE VIEW v_portfolio AS
    SELECT portfolio, source, external_id, project_key, name, program, sponsor, stage,
           mandatory, value, cost, currency, risk, score, rank, model, model_version,
           override ->> 'kind' AS override_kind, override ->> 'justification' AS override_reason,
           plan_status, start_month, end_month,
           deferral ->> 'code' AS deferral_code, deferral ->> 'detail' AS deferral_reason,
           revision, updated_at
    FROM projects WHERE revision IS NOT NULL AND NOT withdrawn;

CREATE VIEW v_ranking AS
    SELECT portfolio, rank, external_id, source, name, score, mandatory, model, model_version,
           override ->> 'kind' AS override_kind, plan_status
    FROM projects WHERE rank IS NOT NULL AND revision IS NOT NULL AND NOT withdrawn;

CREATE VIEW v_explanations AS
    SELECT p.portfolio, p.external_id, p.source, p.rank, e.criterion, e.raw, e.normalised,
           e.weight, e.contribution
    FROM projects p,
         jsonb_to_recordset(p.explanation) AS e(criterion text, raw double precision,
             normalised double precision, weight double precision,
             contribution double precision)
    WHERE p.explanation IS NOT NULL AND NOT p.withdrawn;

CREATE VIEW v_capacity AS
    SELECT s.portfolio, c.role, c.month, c.capacity, c.demand,
           CASE WHEN c.capacity > 0 THEN c.demand / c.capacity END AS utilisation,
           s.plan_version
    FROM current_summaries s,
         jsonb_to_recordset(s.utilisation) AS c(role text, month text,
             capacity double precision, demand double precision);

CREATE VIEW v_conflicts AS
    SELECT s.portfolio, c.role, c.month, c.demand, c.capacity, c.demand - c.capacity AS shortfall,
           c.projects, c.suggestion, s.plan_version
    FROM current_summaries s,
         jsonb_to_recordset(s.conflicts) AS c(role text, month text, demand double precision,
             capacity double precision, projects jsonb, suggestion text);

CREATE VIEW v_skill_gaps AS
    SELECT s.portfolio, g.role, g.month, g.demand, g.capacity, g.gap, g.uncovered, s.plan_version
    FROM current_summaries s,
         jsonb_to_recordset(s.skill_gaps) AS g(role text, month text, demand double precision,
             capacity double precision, gap double precision, uncovered boolean);

CREATE VIEW v_deferred AS
    SELECT portfolio, external_id, source, name, rank, score, deferral ->> 'code' AS code,
           deferral ->> 'role' AS role, deferral ->> 'month' AS month,
           (deferral ->> 'shortfall_fte')::double precision AS shortfall_fte,
           deferral ->> 'detail' AS reason
    FROM projects WHERE plan_status = 'deferred' AND NOT withdrawn;

CREATE VIEW v_funnel AS
    SELECT portfolio, stage, count(*) AS projects, sum(value) AS value, sum(cost) AS cost
    FROM projects WHERE revision IS NOT NULL AND NOT withdrawn
    GROUP BY portfolio, stage;

CREATE VIEW v_programs AS
    SELECT portfolio, coalesce(program, '(none)') AS program, count(*) AS projects,
           sum(value) AS value, sum(cost) AS cost, avg(score) AS average_score,
           count(*) FILTER (WHERE plan_status IN ('planned', 'committed')) AS planned,
           count(*) FILTER (WHERE plan_status = 'deferred') AS deferred,
           min(start_month) AS first_start, max(end_month) AS last_end
    FROM projects WHERE revision IS NOT NULL AND NOT withdrawn
    GROUP BY portfolio, coalesce(program, '(none)');

CREATE VIEW v_dead_letters AS
    SELECT dead_letter_id, consumer, source_topic, source_partition, source_offset,
           split_part(record_key, '/', 1) AS portfolio, record_key, reasons, original_size,
           received_at
    FROM dead_letters;

CREATE VIEW v_scoring_audit AS
    SELECT portfolio, at, author, action, outcome, comment, detail FROM scoring_audit;

CREATE VIEW v_projects_history AS
    SELECT portfolio, source, external_id, project_key, name, stage, program, value, cost,
           score, rank, plan_status, start_month, end_month, withdrawn, valid_from, valid_to
    FROM projects_history WHERE revision IS NOT NULL AND valid_to IS DISTINCT FROM valid_from;

CREATE VIEW v_capacity_history AS
    SELECT s.portfolio, s.plan_version, s.recorded_at AS valid_from,
           lead(s.recorded_at) OVER (PARTITION BY s.portfolio ORDER BY s.plan_version) AS valid_to,
           c.role, c.month, c.capacity, c.demand
    FROM plan_summaries s,
         jsonb_to_recordset(s.utilisation) AS c(role text, month text,
             capacity double precision, demand double precision);

-- The BI role reads the views and nothing else.
GRANT USAGE ON SCHEMA reporting TO pmo_bi;
GRANT SELECT ON v_portfolio, v_ranking, v_explanations, v_capacity, v_conflicts, v_skill_gaps,
    v_deferred, v_funnel, v_programs, v_dead_letters, v_scoring_audit, v_projects_history,
    v_capacity_history TO pmo_bi;
