-- A withdrawal of a project intake has never seen (its earlier revisions are still on their
-- way) is kept as a tombstone at its revision, so those earlier revisions arrive stale and any
-- arrival order converges on the in-order result. A tombstone has no project document.

ALTER TABLE projects ALTER COLUMN state DROP NOT NULL;
ALTER TABLE projects ALTER COLUMN stage DROP NOT NULL;
ALTER TABLE projects ALTER COLUMN name DROP NOT NULL;
