-- Each portfolio's change count. A batch counts up every portfolio it has submissions for, in
-- its transaction, and holds the row until it commits: a process that saw a portfolio at the
-- count before keeps its names and dependencies in memory instead of reading the portfolio
-- again; any other count means another process changed it, and the portfolio is read.

CREATE TABLE portfolio_versions (
    portfolio text PRIMARY KEY,
    version   bigint NOT NULL
);

INSERT INTO portfolio_versions (portfolio, version) SELECT DISTINCT portfolio, 1 FROM projects;
