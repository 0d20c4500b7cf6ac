-- A portfolio's generation counts the transactions that changed its projects' rows: each of
-- them writes the portfolio's own row last (the ranking), and raises it. A scoring replica
-- keeps the rows it last wrote in memory with their generation, and reads the portfolio again
-- only when another generation has been committed since: by another replica, or by a
-- transaction of its own that did not get to keep its rows (docs/performance.md).

ALTER TABLE portfolios ADD COLUMN generation bigint NOT NULL DEFAULT 0;
