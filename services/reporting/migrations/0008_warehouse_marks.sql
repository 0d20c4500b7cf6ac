-- Warehouse marks get a due time and a number.
--
-- Due time: a project whose own data changed (project, score, plan) is due at once; one that
-- was only moved along its portfolio's ranking by other projects is due after
-- PMO_REPORTING_WAREHOUSE_RANK_DELAY_MS, so a busy portfolio's rank moves go out a few times a
-- minute per project, not every time the ranking settles. A later mark keeps the earlier due.
--
-- Number: every mark of a project draws a new one. The publisher builds its records outside the
-- transaction that clears the marks and clears only the marks it read (same number), so a batch
-- that marks a project meanwhile neither waits for the publisher nor loses its change: the
-- project stays marked and goes out again with it.

CREATE SEQUENCE warehouse_mark;

ALTER TABLE warehouse_pending
    ADD COLUMN mark bigint NOT NULL DEFAULT nextval('warehouse_mark'),
    ADD COLUMN due_at timestamptz NOT NULL DEFAULT now();

UPDATE warehouse_pending SET due_at = since;

DROP INDEX warehouse_pending_since;
CREATE INDEX warehouse_pending_due ON warehouse_pending (due_at);
