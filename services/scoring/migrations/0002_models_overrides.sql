-- Scoring models per portfolio (every version kept), analysts' overrides, the audit trail, and
-- the scoring inputs as columns so a full rescore reads no JSON documents it does not need.

CREATE TABLE models (
    portfolio  text NOT NULL,
    version    int NOT NULL,
    name       text NOT NULL,
    spec       jsonb NOT NULL,
    author     text NOT NULL,
    comment    text NOT NULL DEFAULT '',
    command_id text NOT NULL,
    set_at     timestamptz NOT NULL,
    PRIMARY KEY (portfolio, version)
);

CREATE TABLE overrides (
    project_key   text PRIMARY KEY,
    portfolio     text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('pin', 'adjust')),
    rank          int,
    delta         double precision,
    justification text NOT NULL,
    author        text NOT NULL,
    set_at        timestamptz NOT NULL
);
CREATE INDEX overrides_portfolio ON overrides (portfolio);

CREATE TABLE audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    portfolio  text NOT NULL,
    command_id text NOT NULL,
    action     text NOT NULL,
    author     text NOT NULL,
    outcome    text NOT NULL,
    detail     jsonb NOT NULL,
    comment    text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL
);
CREATE INDEX audit_portfolio ON audit (portfolio, id);

ALTER TABLE portfolios ADD COLUMN model_version int NOT NULL DEFAULT 0;
ALTER TABLE portfolios ADD COLUMN as_of_month int;

ALTER TABLE projects ADD COLUMN strategic_fit jsonb NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN value double precision;
ALTER TABLE projects ADD COLUMN cost double precision;
ALTER TABLE projects ADD COLUMN risk int;
ALTER TABLE projects ADD COLUMN deadline int;
ALTER TABLE projects ADD COLUMN wsjf double precision[];
ALTER TABLE projects ADD COLUMN effort double precision NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN published_override jsonb;
