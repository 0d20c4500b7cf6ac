-- Reporting's read model, built only from events: one row per project with what intake,
-- scoring and capacity last said about it (each part guarded by its own version), and the
-- dead letters of every service.

CREATE TABLE projects (
    project_key     text PRIMARY KEY,
    portfolio       text NOT NULL,
    source          text,
    external_id     text,
    name            text,
    stage           text,
    program         text,
    sponsor         text,
    value           double precision,
    cost            double precision,
    currency        text,
    mandatory       boolean,
    risk            int,
    withdrawn       boolean,
    revision        bigint,
    submission_id   text,
    score           double precision,
    rank            int,
    explanation     jsonb,
    ranking_version bigint,
    plan_status     text,
    start_month     text,
    end_month       text,
    deferral        jsonb,
    plan_version    bigint,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX projects_portfolio_rank ON projects (portfolio, rank NULLS LAST, project_key);

CREATE TABLE dead_letters (
    dead_letter_id   text PRIMARY KEY,
    consumer         text,
    source_topic     text,
    source_partition int,
    source_offset    bigint,
    record_key       text,
    reasons          jsonb NOT NULL,
    original_size    int,
    received_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_received ON dead_letters (received_at);
