-- A batch's stored projects are read through the primary key, whatever the table held when the
-- session planned the read.
--
-- A session plans a prepared statement for its first five runs, then keeps a generic plan for
-- as long as it lives (until the table's statistics or definition change). The read by a
-- batch's keys, planned while the table held a few rows, kept a sequential scan, the cheaper
-- plan then, and every later batch of the session read the whole table to find a few
-- projects: in a database filling at hundreds of submissions a second, as the benchmark's does
-- from empty, intake's largest statement (docs/performance.md). A few keys are always best
-- found through the key, so the read is a function that plans with sequential scans off; its
-- plan, cached for the session like the statement's was, is the index from the first batch.
-- (Planning every run afresh, plan_cache_mode = force_custom_plan, cost intake more than the
-- scans did: it plans every statement.)
CREATE FUNCTION stored_projects(keys text[])
RETURNS TABLE (
    project_key text, portfolio text, external_id text, revision bigint, withdrawn boolean,
    state jsonb
)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET search_path FROM CURRENT AS $$
BEGIN
    RETURN QUERY
        SELECT p.project_key, p.portfolio, p.external_id, p.revision, p.withdrawn, p.state
        FROM projects p WHERE p.project_key = ANY (keys);
END;
$$;
