-- Intake's state: the latest accepted state of each project, and a log of every submission's
-- outcome (accepted, ignored as stale or unknown, refused with reasons).

CREATE TABLE projects (
    project_key text PRIMARY KEY,
    portfolio   text NOT NULL,
    revision    bigint NOT NULL,
    withdrawn   boolean NOT NULL DEFAULT false,
    stage       text NOT NULL,
    name        text NOT NULL,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX projects_portfolio ON projects (portfolio);

CREATE TABLE submission_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    submission_id    text,
    project_key      text,
    revision         bigint,
    outcome          text NOT NULL CHECK (outcome IN ('accepted', 'ignored', 'refused')),
    code             text,
    reasons          jsonb NOT NULL DEFAULT '[]',
    source_topic     text NOT NULL,
    source_partition int NOT NULL,
    source_offset    bigint NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX submission_log_project ON submission_log (project_key);
CREATE INDEX submission_log_outcome ON submission_log (outcome, received_at);
