-- A portfolio's rows token: a random number drawn by each transaction that changes the
-- portfolio's rows, each of which writes the portfolio's own row last (the ranking). A scoring
-- replica keeps the rows it last wrote in memory with their token, and reads the portfolio
-- again only when another token has been committed since: by another replica, or by a
-- transaction of its own that did not get to keep its rows (docs/scoring.md). A token, not a
-- counter: a counter can go back (a restore, a failover that lost commits) and come again with
-- other rows.
--
-- A writer that does not draw one (a replica of an earlier release, during a rolling upgrade)
-- still changes it: an update that leaves the token as it was gets a new one.

ALTER TABLE portfolios ADD COLUMN rows_token bigint NOT NULL DEFAULT 0;

CREATE FUNCTION new_rows_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.rows_token = OLD.rows_token THEN
        NEW.rows_token := floor(random() * 9.2e18)::bigint;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER portfolios_rows_token BEFORE UPDATE ON portfolios
    FOR EACH ROW EXECUTE FUNCTION new_rows_token();
