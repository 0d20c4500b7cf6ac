-- Rank moves settle once a portfolio has been quiet for the settle time, and at the latest by a
-- bound set when its first move went pending (docs/scoring.md, "Settling ranks"): ranks_due_at
-- is the earlier of the two, moved on by every batch of the portfolio; ranks_settle_by keeps the
-- bound, so a steady feed cannot hold the moves back for longer. Both NULL when the published
-- ranking is the computed one.

ALTER TABLE portfolios ADD COLUMN ranks_settle_by timestamptz;
