-- Rank moves settle: a batch publishes the projects it rescored (with their new ranks) at once,
-- and the moves of projects that were only pushed up or down the ranking are published when the
-- portfolio's settle time is due (docs/scoring.md, "Settling ranks"). The due time is the
-- portfolio's; NULL when its published ranking is the computed one.

ALTER TABLE portfolios ADD COLUMN ranks_due_at timestamptz;

CREATE INDEX portfolios_ranks_due ON portfolios (ranks_due_at) WHERE ranks_due_at IS NOT NULL;
