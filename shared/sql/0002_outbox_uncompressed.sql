-- Outbox values are stored as written, never compressed: a record of many projects' scores
-- (hundreds of KiB) would otherwise be compressed as it is written, at a cost of about a
-- second of a rescore's commit, for rows that are read once, sent and purged within the hour.
-- Large values are still kept out of line (TOAST), just uncompressed.
ALTER TABLE outbox ALTER COLUMN value SET STORAGE EXTERNAL;
