-- When each portfolio was last replanned: a portfolio is replanned again only once the
-- replanner's spacing has passed since (PMO_CAPACITY_REPLAN_SPACING_MS), so a steady feed of
-- changes is planned a few times a second, not once per batch (docs/planning.md).

ALTER TABLE portfolios ADD COLUMN replanned_at timestamptz;
