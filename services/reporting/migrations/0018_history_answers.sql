-- A read of the history checks, in its own statement, that the history still answers its
-- instant (services/reporting/reach.py).
--
-- The API refuses an instant before the recorded cutoff (history_kept) by reading it first, in
-- a statement of its own. A sweep that records a later cutoff between that read and the
-- request's reads, and deletes, would leave the request reading a partial history. A sweep
-- commits its cutoff before it deletes anything, so a statement whose snapshot sees any of the
-- deletes sees the cutoff too: each read of the history calls history_answers(instant), which
-- raises PM001 (its detail the cutoff, in UTC) for an instant before it, within the read's own
-- snapshot (a STABLE function reads with its caller's). The API answers that with the same 422.

CREATE FUNCTION history_answers(at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    kept timestamptz := (SELECT kept_from FROM history_kept);
BEGIN
    IF at < kept THEN
        RAISE EXCEPTION 'the history before % has been swept', kept
            USING ERRCODE = 'PM001',
                  DETAIL = to_char(kept AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"');
    END IF;
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION history_answers(timestamptz) FROM PUBLIC;
