-- A rescore rewrites every project's score, explanation and rank, none of them indexed: with
-- room left on each page the new row versions stay on their page (HOT updates), so a
-- 100,000-project rescore writes no index entries and does not bloat the two indexes.
ALTER TABLE projects SET (fillfactor = 50);
