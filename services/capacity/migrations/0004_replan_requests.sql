-- Replan requests are counted, so that a batch need not wait for a replan in progress: the
-- replanner reads the count before its inputs and clears the request only if it is unchanged.
ALTER TABLE portfolios ADD COLUMN replan_requests bigint NOT NULL DEFAULT 0;
