-- Replanning is decoupled from consumption: a batch records that its portfolios need a replan,
-- and the replanner replans each due portfolio once, however many batches touched it since.
-- The request time is kept (not a flag) so the delay between request and replan is measurable.
ALTER TABLE portfolios ADD COLUMN replan_requested_at timestamptz;
CREATE INDEX portfolios_replan_due ON portfolios (replan_requested_at)
    WHERE replan_requested_at IS NOT NULL;
