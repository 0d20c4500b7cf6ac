-- Scoring's state: each project's inputs, score and rank, and a ranking version per portfolio.

CREATE TABLE projects (
    project_key     text PRIMARY KEY,
    portfolio       text NOT NULL,
    revision        bigint NOT NULL,
    withdrawn       boolean NOT NULL,
    mandatory       boolean NOT NULL,
    ranked          boolean NOT NULL,
    state           jsonb NOT NULL,
    score           double precision NOT NULL,
    explanation     jsonb NOT NULL,
    rank            int,
    published_score double precision,
    published_rank  int,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX projects_portfolio ON projects (portfolio);

CREATE TABLE portfolios (
    portfolio       text PRIMARY KEY,
    ranking_version bigint NOT NULL DEFAULT 0
);
