-- The warehouse publisher claims the marks it is about to publish.
--
-- A batch used to rewrite a project's mark (a new number, the earlier due time) every time it
-- marked the project again: under a steady feed a moved project is marked by most batches while
-- it waits out the rank delay, ten mark rewrites per submission, the costliest statement in
-- reporting (pg_stat_statements: 1.9 s of 20 s at 264 submissions/s).
--
-- Now the publisher claims due marks (one short statement, skipping rows a batch holds) before
-- it reads their projects. A batch rewrites a mark only when the publisher has claimed it (the
-- record being built may miss this batch's change, so a new number keeps the project marked)
-- or when the new mark is due earlier. An unclaimed mark is left as it is: its project's record
-- is read after the claim, so it will carry this batch's change.

ALTER TABLE warehouse_pending ADD COLUMN claimed boolean NOT NULL DEFAULT false;
