-- Explanations are no longer stored: a rescore rewrote each project's explanation with its
-- score, and the explanation was most of the row's bytes (a 100,000-project rescore's UPDATE
-- took 1.0 s with them, 0.4 s without; docs/performance.md). The scoring rules make an
-- explanation again from the project's inputs whenever one is published without a rescore (an
-- override changed; docs/scoring.md). Dropping the column is a catalogue change: the rows
-- written before keep its bytes until they are next rewritten.
--
-- Stop every scoring replica of the release before this migration runs
-- (docs/operations.md, "Upgrading"): their statements name the column.

ALTER TABLE projects DROP COLUMN explanation;
