-- Capacity's state: projects (demand), their ranks from scoring, resources (capacity), each
-- project's current placement, and a plan version per portfolio.

CREATE TABLE projects (
    project_key text PRIMARY KEY,
    portfolio   text NOT NULL,
    revision    bigint NOT NULL,
    withdrawn   boolean NOT NULL,
    state       jsonb NOT NULL
);
CREATE INDEX projects_portfolio ON projects (portfolio);

CREATE TABLE ranks (
    project_key     text PRIMARY KEY,
    portfolio       text NOT NULL,
    ranking_version bigint NOT NULL,
    rank            int,
    score           double precision NOT NULL
);
CREATE INDEX ranks_portfolio ON ranks (portfolio);

CREATE TABLE resources (
    portfolio   text NOT NULL,
    resource_id text NOT NULL,
    revision    bigint NOT NULL,
    withdrawn   boolean NOT NULL,
    name        text NOT NULL,
    role        text,
    fte         double precision NOT NULL,
    from_month  text,
    until_month text,
    exceptions  jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (portfolio, resource_id)
);

CREATE TABLE placements (
    project_key text PRIMARY KEY,
    portfolio   text NOT NULL,
    status      text NOT NULL,
    start_month text,
    end_month   text,
    deferral    jsonb
);
CREATE INDEX placements_portfolio ON placements (portfolio);

CREATE TABLE portfolios (
    portfolio    text PRIMARY KEY,
    plan_version bigint NOT NULL DEFAULT 0
);
