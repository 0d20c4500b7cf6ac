-- Each new project moves the ranks of the projects below it; rank and version are not indexed,
-- so with room left on each page a move is a HOT update (no index entries written).
ALTER TABLE ranks SET (fillfactor = 50);
