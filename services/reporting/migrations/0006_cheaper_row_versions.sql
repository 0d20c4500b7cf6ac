-- A new project moves the ranks of the projects below it, so rank moves are most of the
-- updates to this table. With rank in an index, every move wrote a new entry in both indexes;
-- without it, and with room left on each page, the new row version stays on its page and no
-- index is written (a HOT update). Pages are rendered once per change of their portfolio
-- (docs/reporting.md), so sorting a portfolio's rows by rank is not on every request's path.
DROP INDEX projects_portfolio_rank;
CREATE INDEX projects_portfolio ON projects (portfolio);
ALTER TABLE projects SET (fillfactor = 70);

-- The history trigger closes a project's open version on each change. Found through
-- (project_key, valid_from), that read every version the project ever had (rank moves give a
-- project a version per move), so each change cost more than the one before. At most one
-- version of a project is open at a time: this index finds it directly, and holds that rule.
CREATE UNIQUE INDEX projects_history_open ON projects_history (project_key)
    WHERE valid_to IS NULL;
